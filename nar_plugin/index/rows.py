"""Entries <-> rows of the ``entries`` table: the one write path (add, upsert and restore all go
through :func:`write_item`) and the one way a row becomes an :class:`IndexEntry`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nar_plugin.errors import InvalidQueryError, KeyExistsError
from nar_plugin.index.entries import META_COLUMNS, IndexEntry, Item, now
from nar_plugin.index.readonly import connect_read_only
from nar_plugin.index.schema import Txn, claim_encoder, corruption_mapped

__all__ = [
    "VEC_DTYPE",
    "SELECT",
    "READ_BLOCK",
    "WRITE_MODES",
    "write_item",
    "remove_key",
    "entry_from_row",
    "vectors_from_blobs",
    "iter_entries",
]

#: How vectors are stored: little-endian float32 blobs.
VEC_DTYPE = np.dtype("<f4")
#: The columns :func:`entry_from_row` reads, in its order.
SELECT = (
    "id, key, vector, source_kind, uri, graph_hash, encoder_version, params_count, family_guess, "
    "created_at, updated_at, metadata"
)
#: Rows read from SQLite per block when scanning (bounded memory).
READ_BLOCK = 8_192
#: ``add``: a new key only; ``upsert``: new or replace; ``restore``: new key, keep the item's id.
WRITE_MODES = ("add", "upsert", "restore")

_SETS = ", ".join(f"{c}=?" for c in META_COLUMNS)
_COLS = ", ".join(META_COLUMNS)
_MARKS = ", ".join("?" for _ in META_COLUMNS)


def write_item(txn: Txn, item: Item, mode: str, where: str) -> int:
    """Insert or update one validated item inside a write transaction; returns its id.

    Args:
        txn: The transaction (its generation stamps the row).
        item: From :func:`~nar_plugin.index.entries.make_item`.
        mode: One of :data:`WRITE_MODES`.
        where: How errors name the index.

    Raises:
        KeyExistsError: The key exists and ``mode`` is not ``upsert``.
        EncoderVersionMismatchError: The item's encoder version differs from the index's.
        InvalidQueryError: A restored item repeats the id of another.
    """
    conn = txn.conn
    meta = dict(item.meta)
    recorded = claim_encoder(txn, meta["encoder_version"], where)
    if meta["encoder_version"] is None:
        meta["encoder_version"] = recorded
    blob = item.vector.astype(VEC_DTYPE).tobytes()
    stamp = now()
    values = [meta[c] for c in META_COLUMNS]
    metadata = json.dumps(item.metadata, sort_keys=True)
    row = conn.execute("SELECT id FROM entries WHERE key=?", (item.key,)).fetchone()
    txn.changed = True
    if row is not None:
        if mode != "upsert":
            raise KeyExistsError(item.key, int(row[0]))
        conn.execute(
            f"UPDATE entries SET vector=?, {_SETS}, metadata=?, updated_at=?, rev=? WHERE id=?",
            (blob, *values, metadata, stamp, txn.gen, row[0]),
        )
        return int(row[0])
    explicit_id = item.id if mode == "restore" else None
    try:
        cur = conn.execute(
            f"INSERT INTO entries (id, key, vector, {_COLS}, created_at, updated_at, metadata, rev) "
            f"VALUES (?, ?, ?, {_MARKS}, ?, ?, ?, ?)",
            (explicit_id, item.key, blob, *values, item.created_at or stamp, stamp, metadata, txn.gen),
        )
    except sqlite3.IntegrityError:
        raise InvalidQueryError(f"entry {item.key!r} repeats id {explicit_id} of another entry") from None
    return int(cur.lastrowid)


def remove_key(txn: Txn, key: str) -> bool:
    """Delete the entry of ``key`` and leave a tombstone of its id; False if there is none."""
    row = txn.conn.execute("SELECT id FROM entries WHERE key=?", (key,)).fetchone()
    if row is None:
        return False
    txn.conn.execute("DELETE FROM entries WHERE id=?", (row[0],))
    txn.conn.execute("INSERT OR REPLACE INTO tombstones(id, rev) VALUES (?, ?)", (row[0], txn.gen))
    txn.changed = True
    return True


def entry_from_row(row: Sequence[Any]) -> IndexEntry:
    """An :class:`IndexEntry` from a row of ``SELECT {SELECT} FROM entries``."""
    vec = np.frombuffer(row[2], dtype=VEC_DTYPE).astype(np.float32, copy=False)
    return IndexEntry(
        id=int(row[0]), key=row[1], vector=vec, source_kind=row[3], uri=row[4], graph_hash=row[5],
        encoder_version=row[6], params_count=row[7], family_guess=row[8], created_at=row[9],
        updated_at=row[10], metadata=json.loads(row[11]) if row[11] else {},
    )


def vectors_from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stack stored vector blobs into an ``(n, dim)`` float32 array."""
    return np.frombuffer(b"".join(blobs), dtype=VEC_DTYPE).reshape(len(blobs), dim)


def iter_entries(db_path: Path) -> Iterator[IndexEntry]:
    """All entries in id order from one snapshot, read in blocks over a separate read-only
    connection (bounded memory; concurrent writers are neither blocked nor seen half-way)."""
    with corruption_mapped(db_path):
        conn = connect_read_only(db_path)  # also in a folder this process may not write
    try:
        with corruption_mapped(db_path):
            conn.execute("BEGIN")
            cur = conn.execute(f"SELECT {SELECT} FROM entries ORDER BY id")
            while rows := cur.fetchmany(READ_BLOCK):
                for row in rows:
                    yield entry_from_row(row)
            conn.execute("COMMIT")
    finally:
        conn.close()
