"""The one output helper of the ``nar`` commands: JSON with ``--json``, human text otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["console", "emit"]


def console(*, wide: bool = False) -> Any:
    """A rich console on stdout; ``wide`` keeps tables readable when stdout is a log file."""
    from rich.console import Console

    return Console(width=180) if wide and not sys.stdout.isatty() else Console()


def emit(as_json: bool, data: Any, human: Callable[[], None], *, indent: int | None = 2) -> None:
    """Print ``data`` as JSON when ``as_json`` (the ``--json`` flag), else call ``human``."""
    if as_json:
        click.echo(json.dumps(data, indent=indent, default=str))
    else:
        human()
