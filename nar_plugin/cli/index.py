"""``nar index ...``: fill, inspect, export and rebuild the shared embedding index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nar_plugin.cli.bulk import index_bulk
from nar_plugin.cli.hf import index_hf
from nar_plugin.cli.options import index_option, json_option, tracking_uri_option
from nar_plugin.cli.output import console, emit, note
from nar_plugin.cli.render import empty_index_hint, stats_text, sync_text

__all__ = ["index"]


def _open_index(path: str | None) -> Any:
    from nar_plugin.search.api import open_index

    return open_index(path)


@click.group(name="index")
@index_option
@click.pass_context
def index(ctx: click.Context, index: str | None) -> None:
    """manage the shared embedding index"""
    ctx.obj = index  # the subcommands' index directory (None: the default one)


def _parse_meta(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    if bad := [kv for kv in value if "=" not in kv]:
        raise click.BadParameter(f"expected K=V, found {bad[0]!r}", ctx=ctx, param=param)
    return dict(kv.split("=", 1) for kv in value)


@index.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...",
                help="anything `nar graph` accepts, one or more")
@click.option("--key", default=None, help="index key (one source only; default: derived from the source)")
@click.option("--meta", multiple=True, metavar="K=V", callback=_parse_meta,
              help="metadata entry stored with every source (repeatable)")
@click.option("--replace", is_flag=True,
              help="overwrite a key that holds another architecture (without it, that is an error)")
@json_option
@click.pass_obj
def add(path: str | None, sources: tuple[str, ...], key: str | None, meta: dict[str, str], replace: bool,
        as_json: bool) -> None:
    """extract, embed and index models

    Adding the same model again is harmless; a key that already holds another architecture is
    refused unless --replace is given.
    """
    from nar_plugin.search.api import index_model
    from nar_plugin.utils.progress import Progress

    if key and len(sources) != 1:
        raise ValueError("--key names one entry; give exactly one source with it")
    keys = []
    with Progress("indexing", total=len(sources), enabled=None if len(sources) > 1 and not as_json else False) as bar:
        for src in sources:
            keys.append(index_model(src, key=key, metadata=meta, index=path, replace=replace))
            bar.advance()
    emit(as_json, keys, lambda: [console().print(f"indexed [bold]{k}[/bold]") for k in keys])


@index.command()
@json_option
@click.pass_obj
def stats(path: str | None, as_json: bool) -> None:
    """entries, encoder version, index type, size"""
    data = _open_index(path).stats()
    emit(as_json, data, lambda: console().print(stats_text(data)))
    note(empty_index_hint(data["count"], data["path"]))


@index.command()
@click.argument("out", metavar="F.jsonl", help="JSONL file to write")
@click.pass_obj
def export(path: str | None, out: str) -> None:
    """write every entry as JSONL"""
    n = _open_index(path).export(out)
    console().print(f"wrote {n} entries to {out}")


@index.command()
@click.option("--from-export", metavar="F.jsonl", default=None,
              help="JSONL written by `nar index export` (replaces everything)")
@click.option("--from-tracking", is_flag=True, help="re-read every nar-tagged model from MLflow")
@tracking_uri_option
@json_option
@click.pass_obj
def rebuild(path: str | None, from_export: str | None, from_tracking: bool, tracking_uri: str | None,
            as_json: bool) -> None:
    """rebuild the index (vector cache, an export, or MLflow tags)

    Without options, re-derives the vector cache from SQLite; when meta.sqlite is corrupt, it
    restores the newest export found beside the index (in the index folder or the one above),
    else re-reads the nar tags of MLFLOW_TRACKING_URI (or --tracking-uri), else says which
    flag to pass. --from-export and --from-tracking never open a corrupt database: they build
    a new one and move the old files aside (*.corrupt-<time>).
    """
    from nar_plugin.config import nar_home
    from nar_plugin.index import EmbeddingIndex

    where = Path(path) if path else nar_home() / "index"
    if not from_export and not from_tracking:
        from nar_plugin.cli.recover import choose_source

        from_export, from_tracking = choose_source(where, tracking_uri)
    if from_export:
        from nar_plugin.index import import_jsonl

        idx = EmbeddingIndex.restore(import_jsonl(from_export), where)
        msg = f"restored {len(idx)} entries from {from_export}"
    elif from_tracking:
        from nar_plugin.model.inference import encoder_version
        from nar_plugin.integrations.mlflow.sync import sync_from_tracking

        idx = EmbeddingIndex.restore([], where, encoder_version=encoder_version())
        rep = sync_from_tracking(tracking_uri, index=idx, full=True)
        msg = f"rebuilt {len(idx)} entries from the nar tags at {rep.tracking_uri}"
    else:
        idx = EmbeddingIndex(where)
        idx.rebuild()
        msg = f"rebuilt the vector cache of {len(idx)} entries (SQLite is intact)"
    emit(as_json, {"entries": len(idx), "message": msg}, lambda: console().print(msg))


@index.command()
@tracking_uri_option
@click.option("--full", is_flag=True, help="ignore the last sync time and re-read everything")
@json_option
@click.pass_obj
def sync(path: str | None, tracking_uri: str | None, full: bool, as_json: bool) -> None:
    """pull nar-tagged models and versions from an MLflow tracking server"""
    from dataclasses import asdict

    from nar_plugin.integrations.mlflow.sync import sync_from_tracking

    # the index is opened (and the encoder loaded) after the server answered: an unreachable
    # server is reported without waiting for torch to import
    rep = sync_from_tracking(tracking_uri, index=path, full=full)
    emit(as_json, asdict(rep), lambda: console().print(sync_text(rep)))


index.add_command(index_hf)
index.add_command(index_bulk)
