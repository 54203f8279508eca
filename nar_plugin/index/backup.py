"""Export, import and restore of an index.

An export is JSONL: a header line (``{"format": "nar-index-export", ...}``), then one
:meth:`IndexEntry.to_json` per line, vectors in the ``nar1:`` codec (float16: a round trip changes
each component by at most ~1e-3). A restore builds a new database in a temp file from entries
and only then swaps it in under the write lock, moving the previous files aside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.index.codec import EMBEDDING_DIM, decode_embedding
from nar_plugin.index.database import Database
from nar_plugin.index.entries import IndexEntry, coerce_item, now
from nar_plugin.index.faiss_cache import FAISS_NAME, SIDECAR_NAME
from nar_plugin.index.rows import write_item
from nar_plugin.index.schema import (
    DB_NAME,
    FORMAT_VERSION,
    Txn,
    database_readable,
    new_database,
    publish_file,
    temp_name,
)
from nar_plugin.utils.io import atomic_writer

__all__ = ["EXPORT_FORMAT", "export_entries", "import_jsonl", "replace_database"]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "nar-index-export"
#: Every file of an index that a restore moves aside (the lock files stay).
_INDEX_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", FAISS_NAME, SIDECAR_NAME)


def export_entries(entries: Iterable[IndexEntry], out: str | os.PathLike[str], *, dim: int, encoder_version: str | None) -> int:
    """Write a header and ``entries`` to the JSONL file ``out`` (atomically); returns the count."""
    count = 0
    with atomic_writer(out, "w") as fh:
        header = {
            "format": EXPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "dim": dim,
            "encoder_version": encoder_version,
            "exported_at": now(),
        }
        fh.write(json.dumps(header) + "\n")
        for entry in entries:
            fh.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
            count += 1
    return count


def _entry_from_json(obj: dict[str, Any], src: Path, lineno: int, dim: int) -> IndexEntry:
    if "key" not in obj or "vector" not in obj:
        raise CorruptArtifactError(f"{src}:{lineno}: an entry needs 'key' and 'vector'", path=str(src))
    try:
        vec = decode_embedding(obj["vector"], dim=dim)
    except ValueError as exc:
        raise type(exc)(f"{src}:{lineno}: {exc}") from None
    return IndexEntry(
        id=int(obj["id"]) if obj.get("id") is not None else 0,
        key=str(obj["key"]),
        vector=vec,
        source_kind=obj.get("source_kind"),
        uri=obj.get("uri"),
        graph_hash=obj.get("graph_hash"),
        encoder_version=obj.get("encoder_version"),
        params_count=obj.get("params_count"),
        family_guess=obj.get("family_guess"),
        created_at=obj.get("created_at"),
        updated_at=obj.get("updated_at"),
        metadata=dict(obj.get("metadata") or {}),
    )


def import_jsonl(path: str | os.PathLike[str], *, dim: int = EMBEDDING_DIM) -> Iterator[IndexEntry]:
    """Read entries back from a file written by :meth:`EmbeddingIndex.export`.

    Args:
        path: The JSONL file.
        dim: Expected embedding dimension.

    Returns:
        An iterator of :class:`IndexEntry` (lazy; pass it to :meth:`EmbeddingIndex.restore`).

    Raises:
        CorruptArtifactError: A line is not JSON, lacks ``key``/``vector``, or the header's
            dimension differs from ``dim`` (message names the line).
        EmbeddingCodecError: A vector does not decode (message names the line).
    """
    src = Path(path)
    with open(src, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptArtifactError(f"{src}:{lineno}: not valid JSON ({exc})", path=str(src)) from None
            if not isinstance(obj, dict):
                raise CorruptArtifactError(f"{src}:{lineno}: expected a JSON object", path=str(src))
            if obj.get("format") == EXPORT_FORMAT:
                if int(obj.get("dim", dim)) != dim:
                    raise CorruptArtifactError(f"{src}: export holds dim={obj.get('dim')} vectors, expected dim={dim}", path=str(src))
                continue
            yield _entry_from_json(obj, src, lineno, dim)


def _fill(tmp: Path, entries: Iterable[Any], dim: int, where: str) -> int:
    """Write ``entries`` into the new database ``tmp`` in one transaction (generation 1)."""
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        txn = Txn(conn, 1)
        count = 0
        for item in entries:
            write_item(txn, coerce_item(item, dim), "restore", where)
            count += 1
        conn.execute("UPDATE info SET value='1' WHERE name='generation'")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _move_aside(directory: Path, status: str) -> tuple[str, list[str]]:
    """Rename the index files to ``<name>.<status>-<timestamp>``; returns (stamp, moved names)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    moved = []
    for name in _INDEX_FILES:
        src = directory / name
        if src.exists():
            os.replace(src, directory / f"{name}.{status}-{stamp}")
            moved.append(name)
    return stamp, moved


def replace_database(db: Database, entries: Iterable[Any], encoder_version: str | None) -> None:
    """Recreate the database of ``db`` from ``entries`` (works when the current one is corrupt).

    ``db`` is closed (under the write lock) just before the swap and left closed; the caller
    reconnects. On bad ``entries`` nothing on disk changes and ``db`` stays open.

    Raises:
        IndexLockedError: The write lock timed out.
        KeyExistsError, InvalidVectorError, InvalidQueryError, EncoderVersionMismatchError:
            Bad ``entries``.
    """
    target = db.db_path
    tmp = new_database(temp_name(target, "new"), db.dim, encoder_version)
    try:
        count = _fill(tmp, entries, db.dim, db.where)
        with db.write_lock.held():
            db.close()
            status = "bak" if database_readable(target) else "corrupt"
            stamp, moved = _move_aside(db.path, status)
            publish_file(tmp, target)
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{tmp}{suffix}").unlink()
    if moved:
        logger.warning(
            "index %s: recreated from %d entries; previous files moved aside as <name>.%s-%s", db.path, count, status, stamp
        )
    else:
        logger.info("index %s: created from %d entries", db.path, count)
