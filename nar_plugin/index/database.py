"""The live SQLite connection of an index handle: (re)connecting, write transactions, reads.

One :class:`Database` per :class:`~nar_plugin.index.store.EmbeddingIndex`; its parts (the FAISS
cache, the search, the backup) all go through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nar_plugin.errors import (
    EncoderVersionMismatchError,
    IndexCorruptError,
    IndexLockedError,
    IndexWriteError,
    InvalidQueryError,
)
from nar_plugin.index.locks import LOCK_NAME, IndexLock, lock_timeout
from nar_plugin.index.readonly import cannot_open_read_write, connect_read_only, not_writable_error
from nar_plugin.index.schema import (
    DB_NAME,
    Txn,
    claim_encoder,
    corrupt_from,
    corruption_mapped,
    generation,
    new_database,
    publish_file,
    stored_encoder,
    temp_name,
    validate,
)

__all__ = ["Database", "write_error_from"]

logger = logging.getLogger(__name__)

#: SQLite result codes (``sqlite3.Error.sqlite_errorname``, primary part) of a failed write that
#: leaves the database intact: out of space, read-only file or directory, I/O or open failure
_WRITE_FAILURES = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def write_error_from(exc: BaseException, db: Path) -> Exception | None:
    """Map an ``sqlite3`` error raised while writing ``db`` to a typed error (None: not one).

    ``IndexCorruptError`` for a corrupt file, ``IndexLockedError`` when SQLite's own busy timeout
    ran out, :class:`IndexWriteError` (an ``OSError``) for a disk full, a read-only or failing
    file system: the write transaction was rolled back and the index is unchanged.
    """
    if not isinstance(exc, sqlite3.Error):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if primary in _BUSY:
        return IndexLockedError(f"index database {db} stayed locked by another connection ({exc}); wait and retry, "
                                "or raise NAR_LOCK_TIMEOUT")
    if primary in _WRITE_FAILURES or (not name and isinstance(exc, sqlite3.OperationalError)
                                      and any(w in str(exc).lower() for w in ("disk is full", "readonly", "read-only"))):
        return IndexWriteError(f"could not write index database {db} ({name or type(exc).__name__}: {exc}); "
                               "the change was rolled back, the index is unchanged. Free disk space or fix the "
                               "permissions, then retry", path=str(db))
    return corrupt_from(exc, db)


class Database:
    """The SQLite connection of one index directory, shared by the parts of an index handle.

    Reconnects by itself when ``meta.sqlite`` was replaced (a restore in another process);
    :attr:`epoch` counts connections so that derived state (the FAISS cache) knows to reset.
    All use of the connection happens under :attr:`mutex`.

    Args:
        path: Index directory (exists).
        dim: Embedding dimension.
        verify: Run ``PRAGMA quick_check`` on connect.
        encoder_version: Encoder version required of the database (recorded if it has none).
        read_only: Check ``encoder_version`` but never record it.
        writable: False when the folder cannot be written: the database is opened read-only
            (``mode=ro``, else ``immutable``), never created, and no lock file is taken.
            Also set when opening it read-write fails for lack of permission.
    """

    def __init__(self, path: Path, dim: int, *, verify: bool, encoder_version: str | None, read_only: bool,
                 writable: bool = True) -> None:
        self.path = path
        self.writable = writable
        self.dim = dim
        self.where = f"index at {path}"
        self.verify = verify
        self.requested_encoder = encoder_version
        self.read_only = read_only or not writable
        self.mutex = threading.RLock()
        self.write_lock = IndexLock(
            path, LOCK_NAME, f"index {path}", ": another process is writing (wait and retry, or raise NAR_LOCK_TIMEOUT)"
        )
        self.conn: sqlite3.Connection | None = None
        self.uid = ""
        self.encoder_version: str | None = None
        self.epoch = 0
        self._ino: tuple[int, int] | None = None

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def connect(self) -> None:
        """Open (creating it if missing) and validate the database, then check the encoder."""
        db = self.db_path
        if not db.exists():
            if not self.writable:
                raise not_writable_error(self.path, "create")
            with self.write_lock.held():
                if not db.exists():
                    recorded = None if self.read_only else self.requested_encoder
                    try:
                        publish_file(new_database(temp_name(db, "tmp"), self.dim, recorded), db)
                    except sqlite3.Error as exc:
                        raise write_error_from(exc, db) or exc from None
                    logger.info("created embedding index %s", self.path)
        st = os.stat(db)  # before connecting: if the file is swapped meanwhile, we reconnect later
        conn, info = self._open(db)
        self.conn = conn
        self._ino = (st.st_dev, st.st_ino)
        self.uid = str(info.get("uid") or "")
        self.encoder_version = info.get("encoder_version") or None
        self.epoch += 1
        try:
            self.require_encoder(self.requested_encoder)
        except EncoderVersionMismatchError:
            self.close()
            raise

    def _open(self, db: Path) -> tuple[sqlite3.Connection, dict[str, str]]:
        """Connect to and validate ``db``: read-write, or read-only when the folder (or file)
        cannot be written; a read-write open refused for lack of permission falls back."""
        try:
            with corruption_mapped(db):
                if self.writable:
                    conn = sqlite3.connect(str(db), timeout=lock_timeout(), isolation_level=None,
                                           check_same_thread=False)
                else:
                    conn = connect_read_only(db, lock_timeout())
        except sqlite3.OperationalError as exc:
            if not (self.writable and cannot_open_read_write(exc)):
                raise
            self._lose_write_access(exc)
            return self._open(db)
        try:
            return conn, validate(conn, db, self.dim, verify=self.verify, where=self.where, read_only=not self.writable)
        except sqlite3.OperationalError as exc:
            conn.close()
            if not (self.writable and cannot_open_read_write(exc)):
                raise
            self._lose_write_access(exc)
            return self._open(db)
        except BaseException:
            conn.close()
            raise

    def _lose_write_access(self, exc: sqlite3.Error) -> None:
        logger.info("index %s: cannot open it read-write (%s); opening it read-only", self.path, exc)
        self.writable = False
        self.read_only = True

    def require_encoder(self, version: str | None) -> None:
        """Check that the database holds ``version`` embeddings; record it if it records none.

        Raises:
            EncoderVersionMismatchError: It records another version.
        """
        if version is None:
            return
        with self.mutex:
            with corruption_mapped(self.db_path):
                self.encoder_version = stored_encoder(self.refresh())
            if self.encoder_version == version:
                return
            if self.encoder_version is not None:
                raise EncoderVersionMismatchError(expected=version, found=self.encoder_version, where=self.where)
            if not self.read_only:
                with self.transaction() as txn:
                    claim_encoder(txn, version, self.where)

    def refresh(self) -> sqlite3.Connection:
        """The connection, reopened first if ``meta.sqlite`` was replaced since it was opened.

        Raises:
            InvalidQueryError: The handle is closed.
            IndexCorruptError: The database disappeared.
        """
        if self.conn is None:
            raise InvalidQueryError(f"index {self.path} is closed; open a new EmbeddingIndex")
        try:
            st = os.stat(self.db_path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            # a restore in another process may be swapping files: wait for its lock, look again
            if self.writable:
                with self.write_lock.held():
                    pass
            if not self.db_path.exists():
                raise IndexCorruptError(f"index database {self.db_path} disappeared", path=str(self.db_path)) from None
            current = None
        if current != self._ino:
            logger.info("index database %s was replaced; reopening", self.db_path)
            self.close()
            self.connect()
        assert self.conn is not None  # for type checkers; connect sets it or raises
        return self.conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Txn]:
        """Write transaction: process lock + ``BEGIN IMMEDIATE``; bumps the generation on change."""
        with self.mutex:
            conn = self.refresh()
            with self.write_lock.held():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    txn = Txn(conn, generation(conn) + 1)
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise write_error_from(exc, self.db_path) or exc from None
                try:
                    yield txn
                    if txn.changed:
                        conn.execute("UPDATE info SET value=? WHERE name='generation'", (str(txn.gen),))
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:  # disk full mid-batch and the like: typed, rolled back
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise write_error_from(exc, self.db_path) or exc from None
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        self.encoder_version = stored_encoder(conn)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement (autocommit: it sees everything committed before it)."""
        with self.mutex:
            conn = self.refresh()
            with corruption_mapped(self.db_path):
                return conn.execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads from one consistent snapshot (a read transaction)."""
        with self.mutex:
            conn = self.refresh()
            with corruption_mapped(self.db_path):
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (harmless when closed)."""
        with self.mutex:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self._ino = None
