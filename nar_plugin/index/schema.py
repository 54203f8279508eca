"""The SQLite file format of an index: schema, creation, validation on open, corruption
mapping, the write generation and the recorded encoder version (the live connection is
:class:`nar_plugin.index.database.Database`).

``meta.sqlite`` (WAL mode) is the source of truth. Every write transaction bumps
``info.generation`` and stamps what it writes with it (``entries.rev``, ``tombstones.rev``), which
is how other handles catch up (see :mod:`nar_plugin.index.faiss_cache`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from nar_plugin.errors import (
    EncoderVersionMismatchError,
    IndexCorruptError,
    InvalidVectorError,
)
from nar_plugin.index.entries import now
from nar_plugin.index.weights import WEIGHTS_SCHEMA
from nar_plugin.utils.io import fsync_dir

__all__ = [
    "FORMAT_VERSION",
    "DB_NAME",
    "SCHEMA",
    "REQUIRED_TABLES",
    "Txn",
    "corrupt_from",
    "corruption_mapped",
    "generation",
    "stored_encoder",
    "claim_encoder",
    "new_database",
    "temp_name",
    "publish_file",
    "database_readable",
]

#: On-disk format of the SQLite schema; bumped on incompatible changes and checked on open.
FORMAT_VERSION = 1
DB_NAME = "meta.sqlite"

SCHEMA = """
CREATE TABLE info (
    name  TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT NOT NULL UNIQUE,
    vector          BLOB NOT NULL,
    source_kind     TEXT,
    uri             TEXT,
    graph_hash      TEXT,
    encoder_version TEXT,
    params_count    INTEGER,
    family_guess    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    rev             INTEGER NOT NULL
);
CREATE INDEX entries_rev ON entries(rev);
CREATE INDEX entries_source_kind ON entries(source_kind);
CREATE INDEX entries_graph_hash ON entries(graph_hash);
CREATE TABLE tombstones (
    id  INTEGER PRIMARY KEY,
    rev INTEGER NOT NULL
);
CREATE INDEX tombstones_rev ON tombstones(rev);
"""
REQUIRED_TABLES = frozenset({"info", "entries", "tombstones"})


def corrupt_from(exc: BaseException, db: Path) -> IndexCorruptError | None:
    """Map an sqlite3 error raised while reading ``db`` to IndexCorruptError (None: not corruption)."""
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc).lower()
        if "malformed" not in msg and "not a database" not in msg and "disk i/o" not in msg:
            return None
    if isinstance(exc, sqlite3.DatabaseError):
        return IndexCorruptError(f"index database {db} is corrupt ({exc})", path=str(db))
    return None


@contextlib.contextmanager
def corruption_mapped(db: Path) -> Iterator[None]:
    """Re-raise an sqlite3 error that means "corrupt database" as :class:`IndexCorruptError`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise corrupt_from(exc, db) or exc from None


class Txn:
    """State of one write transaction: its connection, its generation, whether it wrote."""

    __slots__ = ("conn", "gen", "changed")

    def __init__(self, conn: sqlite3.Connection, gen: int) -> None:
        self.conn = conn
        self.gen = gen
        self.changed = False


def generation(conn: sqlite3.Connection) -> int:
    """The last committed write generation."""
    return int(conn.execute("SELECT value FROM info WHERE name='generation'").fetchone()[0])


def stored_encoder(conn: sqlite3.Connection) -> str | None:
    """The encoder version the database records (None: none yet)."""
    row = conn.execute("SELECT value FROM info WHERE name='encoder_version'").fetchone()
    return row[0] if row and row[0] else None


def claim_encoder(txn: Txn, version: str | None, where: str) -> str | None:
    """Check ``version`` against the recorded encoder version; record it if there is none yet.

    Returns the index's encoder version after the check. Runs inside a write transaction, so
    two processes racing to record different versions cannot both succeed.

    Raises:
        EncoderVersionMismatchError: Another version is recorded.
    """
    stored = stored_encoder(txn.conn)
    if version is None or stored == version:
        return stored
    if stored is None:
        txn.conn.execute("INSERT OR REPLACE INTO info(name, value) VALUES ('encoder_version', ?)", (version,))
        txn.changed = True
        return version
    raise EncoderVersionMismatchError(expected=version, found=stored, where=where)


def publish_file(tmp: Path, dest: Path) -> None:
    """Durably move a finished file (a database built at a temp path) to ``dest``.

    The file was written by SQLite, not through :func:`nar_plugin.utils.io.atomic_writer`; this is
    the same rule applied to it: ``fsync`` the file, ``os.replace``, ``fsync`` the folder.
    """
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def new_database(tmp: Path, dim: int, encoder_version: str | None) -> Path:
    """Create an empty index database at the (temporary) path ``tmp``; returns ``tmp``."""
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.executescript(WEIGHTS_SCHEMA)  # additive tables (an older index gets them on first write)
        conn.execute("BEGIN")
        info = {
            "format_version": str(FORMAT_VERSION),
            "dim": str(dim),
            "encoder_version": encoder_version,
            "generation": "0",
            "uid": uuid.uuid4().hex,
            "created_at": now(),
        }
        conn.executemany("INSERT INTO info(name, value) VALUES (?, ?)", list(info.items()))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return tmp


def temp_name(path: Path, tag: str) -> Path:
    """A unique sibling of ``path`` named ``<name>.<tag>-<pid>-<random>``."""
    return path.with_name(f"{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def database_readable(db: Path) -> bool:
    """True if ``db`` is missing or passes ``quick_check`` and has the schema."""
    if not db.exists():
        return True
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            return ok and REQUIRED_TABLES <= tables
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _read_info(conn: sqlite3.Connection, db: Path, verify: bool) -> tuple[dict[str, str], str]:
    """Pragmas, integrity check and the info table; returns (info, journal mode)."""
    if db.stat().st_size == 0:
        raise IndexCorruptError(f"index database {db} is empty (0 bytes)", path=str(db))
    conn.execute("PRAGMA synchronous=NORMAL")
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if verify:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            raise IndexCorruptError(f"index database {db} failed its integrity check ({detail})", path=str(db))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = REQUIRED_TABLES - tables
    if missing:
        raise IndexCorruptError(f"index database {db} lacks table(s) {', '.join(sorted(missing))}", path=str(db))
    return {str(k): v for k, v in conn.execute("SELECT name, value FROM info")}, mode


def validate(conn: sqlite3.Connection, db: Path, dim: int, *, verify: bool, where: str,
             read_only: bool = False) -> dict[str, str]:
    """Check an opened database (schema, format version, dimension); switch it to WAL unless
    ``read_only`` (a connection that may not write).

    Returns:
        The ``info`` table.

    Raises:
        IndexCorruptError: Not a valid index database, or a newer format.
        InvalidVectorError: It holds vectors of another dimension.
    """
    with corruption_mapped(db):
        info, mode = _read_info(conn, db, verify)
    try:
        fmt = int(info.get("format_version", ""))
        stored_dim = int(info.get("dim", ""))
        int(info.get("generation", ""))
    except ValueError:
        raise IndexCorruptError(f"index database {db} has an invalid info table ({info})", path=str(db)) from None
    if fmt > FORMAT_VERSION:
        raise IndexCorruptError(
            f"index database {db} has format version {fmt}, newer than the supported {FORMAT_VERSION} "
            "(upgrade nar-plugin)",
            path=str(db),
        )
    if stored_dim != dim:
        raise InvalidVectorError(f"{where} holds dim={stored_dim} vectors, but was opened with dim={dim}")
    if mode.lower() != "wal" and not read_only:
        conn.execute("PRAGMA journal_mode=WAL")
    return info
