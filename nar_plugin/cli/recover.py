"""What plain ``nar index rebuild`` rebuilds a corrupt index from.

A healthy index only needs its vector cache re-derived. A corrupt ``meta.sqlite`` needs a
source: the newest export (``nar index export``) found beside the index (in the index folder or
the folder above it, i.e. ``$NAR_HOME``), else the nar tags of the MLflow tracking server when
one is named (``--tracking-uri`` or ``MLFLOW_TRACKING_URI``). With neither, the error says which
flag to pass, instead of repeating the advice to run ``nar index rebuild``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from nar_plugin.cli.output import note
from nar_plugin.errors import IndexCorruptError

__all__ = ["choose_source", "find_export"]

#: how a rebuild source is named on the command line (for the error that lists them)
FLAGS_HINT = ("Pass --from-export F.jsonl (a file written by `nar index export`), or --from-tracking to re-read the "
              "nar tags of MLflow (with --tracking-uri URI or MLFLOW_TRACKING_URI)")


def _is_export(path: Path) -> bool:
    from nar_plugin.index.backup import EXPORT_FORMAT

    try:
        with open(path, encoding="utf-8") as fh:
            head = json.loads(fh.readline() or "null")
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == EXPORT_FORMAT


def find_export(where: Path) -> Path | None:
    """The newest index export (``*.jsonl`` with the export header) in ``where`` or its parent."""
    found = [p for d in (where, where.parent) if d.is_dir() for p in d.glob("*.jsonl") if p.is_file() and _is_export(p)]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def _newer_format(db: Path) -> bool:
    """True if ``db`` is a readable index of a newer format (an upgrade is the fix, not a restore)."""
    from nar_plugin.index.schema import FORMAT_VERSION

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM info WHERE name='format_version'").fetchone()
        finally:
            conn.close()
        return row is not None and int(row[0]) > FORMAT_VERSION
    except (sqlite3.Error, ValueError, TypeError):
        return False


def choose_source(where: Path, tracking_uri: str | None) -> tuple[str | None, bool]:
    """What to rebuild the index in ``where`` from when no flag says so.

    Returns:
        ``(None, False)``: the database is intact (re-derive the vector cache);
        ``(export_path, False)``: restore that export; ``(None, True)``: re-read MLflow's tags.

    Raises:
        IndexCorruptError: the database is corrupt and there is nothing to rebuild it from
            (the message lists the flags), or it is of a newer format (upgrade nar-plugin).
    """
    from nar_plugin.index import EmbeddingIndex

    try:
        EmbeddingIndex(where).close()
        return None, False
    except IndexCorruptError as exc:
        if exc.path and _newer_format(Path(exc.path)):
            raise
        problem = exc
    export = find_export(where)
    if export is not None:
        when = datetime.fromtimestamp(export.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        note(f"{problem.detail}; restoring it from the export {export} (written {when}): entries added after "
             "it are not in it (`nar index rebuild --from-tracking` re-reads MLflow's)")
        return str(export), False
    if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        note(f"{problem.detail}; rebuilding it from the nar tags at {tracking_uri or os.environ['MLFLOW_TRACKING_URI']}")
        return None, True
    raise IndexCorruptError(
        f"{problem.detail}; no source to rebuild it from: no export (*.jsonl from `nar index export`) in {where} "
        "or the folder above it, and no tracking server (MLFLOW_TRACKING_URI is not set)",
        path=problem.path, hint=FLAGS_HINT,
    ) from problem
