"""The one output helper of the ``nar`` commands: JSON with ``--json``, human text otherwise.

Tables are never shortened when stdout is not a terminal (piped to ``grep``, redirected to a
file): keys and ids must come out whole so that they can be copied. On a terminal, ``--wide``
does the same; without it rich fits tables to the terminal width.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["console", "emit", "note", "UNBOUNDED_WIDTH"]

#: the console width used when nothing may be shortened (rich sizes tables to their content)
UNBOUNDED_WIDTH = 100_000


def _wide_requested() -> bool:
    from nar_plugin.cli.options import WIDE_KEY

    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(WIDE_KEY))


def console(*, wide: bool = False) -> Any:
    """A rich console on stdout: fitted to the terminal, or never shortening anything when stdout
    is not a terminal or ``--wide`` was given.

    Args:
        wide: kept for callers that asked for wide tables in log files; output that is not a
            terminal is now always unbounded, so it changes nothing.
    """
    from rich.console import Console

    del wide
    if _wide_requested() or not sys.stdout.isatty():
        return Console(width=UNBOUNDED_WIDTH)
    return Console()


def emit(as_json: bool, data: Any, human: Callable[[], None], *, indent: int | None = 2) -> None:
    """Print ``data`` as JSON when ``as_json`` (the ``--json`` flag), else call ``human``."""
    if as_json:
        click.echo(json.dumps(data, indent=indent, default=str))
    else:
        human()


def note(text: str | None) -> None:
    """Print a hint for the user on stderr (so that ``--json`` output on stdout stays clean)."""
    if text:
        click.echo(text, err=True)
