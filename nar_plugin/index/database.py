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
    InvalidQueryError,
)
from nar_plugin.index.locks import LOCK_NAME, IndexLock, lock_timeout
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

__all__ = ["Database"]

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, path: Path, dim: int, *, verify: bool, encoder_version: str | None, read_only: bool) -> None:
        self.path = path
        self.dim = dim
        self.where = f"index at {path}"
        self.verify = verify
        self.requested_encoder = encoder_version
        self.read_only = read_only
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
            with self.write_lock.held():
                if not db.exists():
                    recorded = None if self.read_only else self.requested_encoder
                    publish_file(new_database(temp_name(db, "tmp"), self.dim, recorded), db)
                    logger.info("created embedding index %s", self.path)
        st = os.stat(db)  # before connecting: if the file is swapped meanwhile, we reconnect later
        with corruption_mapped(db):
            conn = sqlite3.connect(str(db), timeout=lock_timeout(), isolation_level=None, check_same_thread=False)
        try:
            info = validate(conn, db, self.dim, verify=self.verify, where=self.where)
        except BaseException:
            conn.close()
            raise
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
                except sqlite3.DatabaseError as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise corrupt_from(exc, self.db_path) or exc from None
                try:
                    yield txn
                    if txn.changed:
                        conn.execute("UPDATE info SET value=? WHERE name='generation'", (str(txn.gen),))
                    conn.execute("COMMIT")
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
