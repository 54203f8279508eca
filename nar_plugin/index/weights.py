"""Weight fingerprints stored beside the embeddings: opaque blobs, content-addressed.

Two tables in ``meta.sqlite`` (added to an existing index the first time a handle that may write
opens it; an index opened read-only that lacks them simply has no fingerprints)::

    fingerprints   weights_hash -> digest, blob  (one row per distinct set of weights)
    entry_weights  key -> weights_hash           (many keys may share weights: a version and
                                                  its LoggedModel, an exact copy)

A trigger drops an entry's link when the entry is removed. The index knows nothing of what a
blob holds (``nar_plugin.lineage`` does); it answers "which keys have these weights" and "which
keys of this architecture have weights" with indexed lookups. The format version of the index is
unchanged: a release that predates these tables ignores them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nar_plugin.index.entries import now

__all__ = [
    "WEIGHTS_SCHEMA",
    "ensure_weights_tables",
    "keys_with_weights",
    "put_weights",
    "weighted_keys_for_graph",
    "weights_blob",
    "weights_of",
]

WEIGHTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    weights_hash TEXT PRIMARY KEY,
    digest       TEXT NOT NULL,
    blob         BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entry_weights (
    key          TEXT PRIMARY KEY,
    weights_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entry_weights_hash ON entry_weights(weights_hash);
CREATE TRIGGER IF NOT EXISTS entries_drop_weights AFTER DELETE ON entries
BEGIN
    DELETE FROM entry_weights WHERE key = OLD.key;
END;
"""


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='entry_weights'").fetchone() is not None


def ensure_weights_tables(conn: sqlite3.Connection) -> None:
    """Create the tables (and trigger) if missing; inside a write transaction or autocommit."""
    if not _has_tables(conn):
        for stmt in _statements(WEIGHTS_SCHEMA):
            conn.execute(stmt)


def _statements(script: str) -> list[str]:
    """Split the schema script into statements (the trigger body holds a ``;``)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out


def put_weights(index: Any, key: str, weights_hash: str | None, digest: str | None = None,
                blob: bytes | None = None) -> None:
    """Link ``key`` to ``weights_hash`` and store the blob (once per hash; a blob with another
    digest replaces the stored one). ``weights_hash=None`` removes the key's link.

    Args:
        index: an ``EmbeddingIndex`` (writable).
        key: the entry's key (the entry need not exist yet).
        weights_hash: the whole-model weights hash.
        digest: identifies ``blob`` (e.g. ``sha256:<hex>``).
        blob: the serialized fingerprint; ``None`` links the key to a hash whose blob may come later.
    """
    index._check_writable()
    with index._db.transaction() as txn:
        conn = txn.conn
        ensure_weights_tables(conn)
        if weights_hash is None:
            conn.execute("DELETE FROM entry_weights WHERE key=?", (key,))
            return
        if blob is not None:
            row = conn.execute("SELECT digest FROM fingerprints WHERE weights_hash=?", (weights_hash,)).fetchone()
            if row is None or row[0] != digest:
                conn.execute("INSERT OR REPLACE INTO fingerprints(weights_hash, digest, blob, created_at) "
                             "VALUES (?, ?, ?, ?)", (weights_hash, digest or "", sqlite3.Binary(blob), now()))
        conn.execute("INSERT OR REPLACE INTO entry_weights(key, weights_hash) VALUES (?, ?)", (key, weights_hash))


def _read(index: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    try:
        return index._db.query(sql, params)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []  # an index made before fingerprints, opened read-only
        raise


def weights_of(index: Any, key: str) -> tuple[str, str | None] | None:
    """``(weights_hash, digest or None)`` of ``key``'s weights, ``None`` when it has none linked."""
    rows = _read(index, "SELECT w.weights_hash, f.digest FROM entry_weights w LEFT JOIN fingerprints f "
                        "ON f.weights_hash = w.weights_hash WHERE w.key=?", (key,))
    return (rows[0][0], rows[0][1]) if rows else None


def weights_blob(index: Any, weights_hash: str) -> tuple[str, bytes] | None:
    """``(digest, blob)`` stored for ``weights_hash``, or ``None``."""
    rows = _read(index, "SELECT digest, blob FROM fingerprints WHERE weights_hash=?", (weights_hash,))
    return (rows[0][0], bytes(rows[0][1])) if rows else None


def keys_with_weights(index: Any, weights_hash: str) -> list[str]:
    """Keys of indexed entries linked to ``weights_hash``, in id order."""
    rows = _read(index, "SELECT e.key FROM entry_weights w JOIN entries e ON e.key = w.key "
                        "WHERE w.weights_hash=? ORDER BY e.id", (weights_hash,))
    return [r[0] for r in rows]


def weighted_keys_for_graph(index: Any, graph_hash: str, limit: int = 2000) -> list[tuple[str, str]]:
    """``(key, weights_hash)`` of the indexed entries of architecture ``graph_hash`` that have a
    stored fingerprint, newest first, at most ``limit``."""
    rows = _read(index, "SELECT e.key, w.weights_hash FROM entries e JOIN entry_weights w ON w.key = e.key "
                        "JOIN fingerprints f ON f.weights_hash = w.weights_hash "
                        "WHERE e.graph_hash=? ORDER BY e.id DESC LIMIT ?", (graph_hash, int(limit)))
    return [(r[0], r[1]) for r in rows]
