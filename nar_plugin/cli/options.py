"""Options and arguments that several ``nar`` commands share: each is defined once here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["json_option", "index_option", "tracking_uri_option", "source_argument"]

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


def source_argument(f: F) -> F:
    """``SOURCE``: anything :func:`nar_plugin.extract_graph` accepts (passed as ``source``)."""
    return click.argument("source", help="timm name, HF model type / config.json, .onnx, .pt2, MLflow model "
                                         "dir or ArchGraph JSON")(f)
