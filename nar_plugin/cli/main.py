"""The ``nar`` command line.

Every command prints a human table by default and JSON with ``--json``. Errors become one line on
stderr and a non-zero exit code (2: bad input, 3: not found, 4: blocked duplicate, 1: other);
``NAR_DEBUG=true`` prints the full traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nar_plugin import errors

# exception type -> (exit code, prefix); first match wins
_ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (errors.DuplicateModelError, 4, "duplicate"),
    (errors.KeyNotFoundError, 3, "not found"),
    (errors.MissingDependencyError, 2, "missing dependency"),
    (errors.ConfigError, 2, "configuration"),
    (errors.ExampleInputsError, 2, "inputs"),
    (errors.UnsupportedModelError, 2, "unsupported"),
    (errors.CorruptArtifactError, 2, "corrupt"),
    (errors.IndexCorruptError, 2, "index corrupt"),
    (errors.EncoderVersionMismatchError, 2, "encoder mismatch"),
    (errors.GraphExtractionError, 1, "extraction failed"),
    (errors.NarError, 1, "error"),
    (FileNotFoundError, 3, "not found"),
    (ValueError, 2, "invalid input"),
]

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def register_command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None],
                     handler: Handler) -> None:
    """Register ``nar <name>``: ``add_args`` declares its arguments, ``handler`` runs it and
    returns the exit code."""
    _COMMANDS[name] = (add_args, handler, help)


def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else call ``human``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        human()


def console() -> Any:
    from rich.console import Console

    return Console()


# ------------------------------------------------------------------ nar graph
def _graph_handler(args: argparse.Namespace) -> int:
    from nar_plugin.extract import extract_graph

    g = extract_graph(args.source, tracer=args.tracer)
    summary = g.summary()
    if args.out:
        with open(args.out, "w") as f:
            f.write(g.to_json())

    def human() -> None:
        from rich.table import Table

        c = console()
        c.print(f"[bold]{args.source}[/bold]  nodes={g.num_nodes} edges={g.num_edges} "
                f"hash={g.graph_hash} tracer={g.metadata.get('tracer', '?')}")
        t = Table("op", "count")
        for op, n in summary["ops"].items():
            t.add_row(op, str(n))
        c.print(t)

    emit(args, summary, human)
    return 0


def _graph_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="timm name, HF model type / config.json, .onnx, .pt2, MLflow model dir")
    p.add_argument("--tracer", default="auto", choices=["auto", "fx", "export"])
    p.add_argument("--out", help="write the ArchGraph JSON here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


register_command("graph", "extract a model's architecture graph and print a summary", _graph_args, _graph_handler)


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from nar_plugin import __version__

    parser = argparse.ArgumentParser(prog="nar", description="Neural Architecture Retrieval for MLflow and the HF Hub")
    parser.add_argument("--version", action="version", version=f"nar-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _load_commands()
    for name, (add_args, handler, help_text) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_handler=handler)
    return parser


def _load_commands() -> None:
    """Import the modules that register further commands (kept apart to stay small)."""
    import importlib

    for mod in ("nar_plugin.cli.commands", "nar_plugin.cli.hf", "nar_plugin.cli.index"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nar`` console script."""
    import warnings

    from nar_plugin.config import NAR_DEBUG

    # torch_geometric still calls torch.jit.script at import; the deprecation is not the user's
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 2
    try:
        return int(args._handler(args) or 0)
    except KeyboardInterrupt:
        print("nar: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's error boundary
        debug = False
        try:
            debug = NAR_DEBUG.get()
        except errors.ConfigError:
            pass
        if debug:
            raise
        for etype, code, prefix in _ERROR_TABLE:
            if isinstance(e, etype):
                print(f"nar: {prefix}: {e}", file=sys.stderr)
                return code
        print(f"nar: unexpected {type(e).__name__}: {e} (set NAR_DEBUG=true for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
