"""Index folders that cannot be written: detect them, open their database read-only, and say
clearly why a write is refused.

A shared, read-only ``NAR_HOME`` (a mounted volume, a CI cache, a folder owned by another user)
must still answer queries. SQLite cannot open a WAL database in a folder it may not write
(it needs its ``-shm`` file): ``mode=ro`` works when that file exists or can be created, and
``immutable=1`` (no locking, no ``-shm``) otherwise; nobody can write such a folder, so nothing
changes under the reader. Writes to such an index raise :class:`IndexReadOnlyError` naming the
folder and ``NAR_HOME``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from nar_plugin.config import NAR_HOME
from nar_plugin.errors import IndexReadOnlyError, InvalidQueryError

__all__ = ["folder_writable", "connect_read_only", "not_writable_error", "cannot_open_read_write"]

logger = logging.getLogger(__name__)


def folder_writable(path: Path, db_name: str) -> bool:
    """Can this process create and write the index files in ``path``?

    A missing folder is writable when its nearest existing parent is. The database file, when
    it exists, must be writable too (SQLite would otherwise open it read-only silently).

    Raises:
        InvalidQueryError: ``path`` or a folder above it is a file.
    """
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    if not p.is_dir():
        raise InvalidQueryError(f"index path {path} is not a folder ({p} is a file); point it at a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        return False
    db = path / db_name
    return not db.exists() or os.access(db, os.W_OK)


def not_writable_error(path: Path, action: str = "write to") -> IndexReadOnlyError:
    """The error for a write to the index in the unwritable folder ``path`` (names ``NAR_HOME``)."""
    raw = NAR_HOME.get()
    home = f"{NAR_HOME.name}={raw}" if raw else f"{NAR_HOME.name} is not set: the default folder"
    fix = f"set {NAR_HOME.name} to a writable folder or use another index directory (--index DIR, index=...)"
    if action == "create":
        msg = f"there is no index at {path} and this process may not create one there ({home}); {fix}"
    else:
        msg = (f"cannot {action} the index at {path}: this process may not write that folder ({home}). Queries "
               f"still work (the index is opened read-only); to add, remove or rebuild entries, {fix}")
    return IndexReadOnlyError(msg, path=str(path))


def cannot_open_read_write(exc: sqlite3.Error) -> bool:
    """Does this error, raised while opening a database read-write, mean "the folder or file
    is not writable" (so that opening it read-only may work)?"""
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("unable to open" in msg or "readonly" in msg)


def connect_read_only(db: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """Open ``db`` for reading without writing anything next to it.

    ``mode=ro`` first (sees a live ``-wal``); ``immutable=1`` when SQLite cannot open the ``-shm``
    file of a WAL database in an unwritable folder. The first read happens here, so an error
    of the ``mode=ro`` attempt cannot surface later.

    Raises:
        sqlite3.DatabaseError: the file is not a readable database (callers map it).
    """
    uri = f"file:{quote(str(db))}"
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc).lower():
            raise
    wal = Path(f"{db}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        logger.warning("index database %s: opened immutable in a read-only folder; changes still in %s "
                       "(not checkpointed by its last writer) are not visible", db, wal.name)
    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return conn
