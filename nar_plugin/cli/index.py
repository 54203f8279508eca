"""``nar index ...``, ``nar similar``, ``nar dedup``, ``nar embed``, ``nar serve``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from nar_plugin.cli.main import console, emit, register_command

#: ``nar index <sub>`` subcommands: name -> (help, add_args, handler). Other modules (the HF
#: integration) add theirs with :func:`register_index_command`.
INDEX_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register_index_command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None],
                           handler: Callable[[argparse.Namespace], int]) -> None:
    """Register ``nar index <name>``."""
    INDEX_COMMANDS[name] = (help, add_args, handler)


def _open_index(args: argparse.Namespace) -> Any:
    from nar_plugin.search.api import open_index

    return open_index(getattr(args, "index", None))


# ------------------------------------------------------------------ nar index add
def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", help="anything `nar graph` accepts")
    p.add_argument("--key", help="index key (one source only)")
    p.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata entries")
    p.add_argument("--json", action="store_true")


def _add(args: argparse.Namespace) -> int:
    from nar_plugin.search.api import index_model

    if args.key and len(args.sources) != 1:
        raise ValueError("--key names one entry; give exactly one source with it")
    meta = dict(kv.split("=", 1) for kv in args.meta)
    keys = [index_model(src, key=args.key, metadata=meta, index=getattr(args, "index", None)) for src in args.sources]
    emit(args, keys, lambda: [console().print(f"indexed [bold]{k}[/bold]") for k in keys])
    return 0


def _stats(args: argparse.Namespace) -> int:
    stats = _open_index(args).stats()

    def human() -> None:
        for k, v in stats.items():
            console().print(f"{k:>18}: {v}")

    emit(args, stats, human)
    return 0


def _rebuild_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-export", help="JSONL written by `nar index export` (replaces everything)")
    p.add_argument("--from-tracking", action="store_true", help="re-read every nar-tagged model from MLflow")
    p.add_argument("--tracking-uri")
    p.add_argument("--json", action="store_true")


def _rebuild(args: argparse.Namespace) -> int:
    """Rebuild the vector cache, or the whole index from an export or from MLflow tags.

    A corrupt ``meta.sqlite`` cannot be opened, so the restoring paths never open it: they build
    a new database and move the old files aside (``*.corrupt-<time>``).
    """
    from nar_plugin.config import nar_home
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.index import EmbeddingIndex, import_jsonl

    path = getattr(args, "index", None) or (nar_home() / "index")
    if args.from_export:
        idx = EmbeddingIndex.restore(import_jsonl(args.from_export), path)
        msg = f"restored {len(idx)} entries from {args.from_export}"
    elif args.from_tracking:
        from nar_plugin.integrations.mlflow.sync import sync_from_tracking

        idx = EmbeddingIndex.restore([], path, encoder_version=encoder_version())
        rep = sync_from_tracking(args.tracking_uri, index=idx, full=True)
        msg = f"rebuilt {len(idx)} entries from the nar tags at {rep.tracking_uri}"
    else:
        idx = EmbeddingIndex(path)
        idx.rebuild()
        msg = f"rebuilt the vector cache of {len(idx)} entries (SQLite is intact)"
    emit(args, {"entries": len(idx), "message": msg}, lambda: console().print(msg))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="JSONL file to write")


def _export(args: argparse.Namespace) -> int:
    n = _open_index(args).export(args.out)
    console().print(f"wrote {n} entries to {args.out}")
    return 0


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI")
    p.add_argument("--full", action="store_true", help="ignore the last sync time")
    p.add_argument("--json", action="store_true")


def _sync(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nar_plugin.integrations.mlflow.sync import sync_from_tracking

    rep = sync_from_tracking(args.tracking_uri, index=_open_index(args), full=args.full)
    emit(args, asdict(rep), lambda: console().print(
        f"synced {rep.tracking_uri}: {rep.models_added} logged models, {rep.versions_added} model versions "
        f"({'incremental' if rep.incremental else 'full'}; {rep.skipped_untagged} untagged, "
        f"{rep.skipped_other_encoder} from another encoder skipped)"))
    return 0


register_index_command("add", "extract, embed and index models", _add_args, _add)
register_index_command("stats", "entries, encoder version, index type, size", lambda p: p.add_argument("--json", action="store_true"), _stats)
register_index_command("rebuild", "rebuild the index (vector cache, an export, or MLflow tags)", _rebuild_args, _rebuild)
register_index_command("export", "write every entry as JSONL", _export_args, _export)
register_index_command("sync", "pull nar-tagged models and versions from an MLflow tracking server", _sync_args, _sync)


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="index directory (default: $NAR_HOME/index)")
    sub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)
    for name, (help_text, add_args, handler) in sorted(INDEX_COMMANDS.items()):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
        sp.set_defaults(_sub=handler)


register_command("index", "manage the shared embedding index", _index_args, lambda a: a._sub(a))


# ------------------------------------------------------------------ nar similar
def _similar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="index key, MLflow run id / model id / models:/ URI, or a model source")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--relation", choices=["identical", "near-duplicate", "related", "unrelated"])
    p.add_argument("--index", help="index directory")
    p.add_argument("--explain", action="store_true", help="show why each match is close")
    p.add_argument("--json", action="store_true")


def _similar(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nar_plugin.search.api import find_similar

    matches = find_similar(args.query, k=args.k, relation=args.relation, index=args.index)

    def human() -> None:
        t = Table("rank", "key", "score", "relation", *(["why"] if args.explain else []), title=f"similar to {args.query}")
        for i, m in enumerate(matches, 1):
            t.add_row(str(i), m.key, f"{m.score:.3f}", m.relation, *([str(m.explain())] if args.explain else []))
        console().print(t)

    emit(args, [m.to_dict() for m in matches], human)
    return 0


register_command("similar", "find indexed models with similar architectures", _similar_args, _similar)


# ------------------------------------------------------------------ nar embed
def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("--json", action="store_true", help="print the vector as a JSON list")


def _embed(args: argparse.Namespace) -> int:
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import embed, encoder_version

    v = embed(args.source)
    if args.json:
        print(json.dumps({"encoder": encoder_version(), "embedding": [round(float(x), 6) for x in v]}))
    else:
        print(encode_embedding(v))
    return 0


register_command("embed", "print a model's embedding (tag format, or --json)", _embed_args, _embed)


# ------------------------------------------------------------------ nar dedup
def _dedup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", action="store_true", help="registered model versions (the default and only scope)")
    p.add_argument("--tracking-uri")
    p.add_argument("--no-sync", action="store_true", help="use the local index as it is")
    p.add_argument("--json", action="store_true")


def _dedup(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nar_plugin.integrations.mlflow.registry import dedup_report

    clusters = dedup_report(tracking_uri=args.tracking_uri, sync=not args.no_sync)

    def human() -> None:
        if not clusters:
            console().print("no duplicate registered versions")
        for c in clusters:
            console().print(f"[bold]{c.relation}[/bold] (min cosine {c.min_score:.3f}): " + ", ".join(c.members))

    emit(args, [asdict(c) for c in clusters], human)
    return 0


register_command("dedup", "clusters of identical / near-duplicate registered model versions", _dedup_args, _dedup)


# ------------------------------------------------------------------ nar serve
def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["mlflow-webhook", "hf-webhook"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from nar_plugin.config import NAR_WEBHOOK_SECRET

    if args.what == "mlflow-webhook":
        from nar_plugin.integrations.mlflow.webhook import make_app

        app = make_app(NAR_WEBHOOK_SECRET.get())
    else:
        from nar_plugin.integrations.hf import make_webhook_app

        app = make_webhook_app(NAR_WEBHOOK_SECRET.get())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


register_command("serve", "run a webhook receiver (secret from NAR_WEBHOOK_SECRET)", _serve_args, _serve)
