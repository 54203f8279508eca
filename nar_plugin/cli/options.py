"""Options and arguments that several ``nar`` commands share: each is defined once here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["json_option", "index_option", "tracking_uri_option", "source_argument", "wide_option", "WIDE_KEY"]

#: ``click.Context.meta`` key set by ``--wide`` (the meta dict is shared by a whole invocation)
WIDE_KEY = "nar.wide"

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    """``--json``: print the result as JSON (passed to the command as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="print the result as JSON (for scripts) instead of text")(f)


def index_option(f: F) -> F:
    """``--index DIR``: the index directory (passed as ``index``; ``None`` = the default index)."""
    return click.option("--index", metavar="DIR", default=None,
                        help="index directory (default: $NAR_HOME/index)")(f)


def tracking_uri_option(f: F) -> F:
    """``--tracking-uri URI``: the MLflow tracking server (passed as ``tracking_uri``)."""
    return click.option("--tracking-uri", metavar="URI", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")(f)


def _set_wide(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[WIDE_KEY] = True


def wide_option(f: F) -> F:
    """``--wide``: never shorten table cells to the terminal width (read by
    :func:`nar_plugin.cli.output.console`; not passed to the command). Output that is not a
    terminal (a pipe, a file) is never shortened anyway."""
    return click.option("--wide", is_flag=True, expose_value=False, callback=_set_wide, is_eager=True,
                        help="show full keys and names even if lines get longer than the terminal "
                             "(always so when the output is piped)")(f)


def source_argument(f: F) -> F:
    """``SOURCE``: anything :func:`nar_plugin.extract_graph` accepts (passed as ``source``)."""
    return click.argument("source", help="timm name, HF model type / config.json, .onnx, .pt2, MLflow model "
                                         "dir or ArchGraph JSON")(f)
