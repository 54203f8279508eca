""":class:`EmbeddingIndex`: the public face of an index directory. It validates arguments and
delegates: SQLite to :mod:`.database` and :mod:`.rows`, the FAISS cache to :mod:`.faiss_cache`,
search strategy to :mod:`.query`, export and restore to :mod:`.backup`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nar_plugin.config import nar_home
from nar_plugin.errors import IndexReadOnlyError, InvalidQueryError
from nar_plugin.index.backup import export_entries, replace_database
from nar_plugin.index.codec import EMBEDDING_DIM
from nar_plugin.index.database import Database
from nar_plugin.index.entries import (
    IndexEntry,
    Item,
    SearchHit,
    as_unit,
    coerce_item,
    make_item,
)
from nar_plugin.index.faiss_cache import FAISS_NAME, SIDECAR_NAME, FaissCache
from nar_plugin.index.filters import Filter, compile_filter
from nar_plugin.index.query import Query, run_query
from nar_plugin.index.readonly import folder_writable, not_writable_error
from nar_plugin.index.rows import (
    SELECT,
    entry_from_row,
    iter_entries,
    remove_key,
    write_item,
)
from nar_plugin.index.schema import DB_NAME, FORMAT_VERSION

__all__ = ["EmbeddingIndex", "index_path"]

logger = logging.getLogger(__name__)


def index_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The index directory for ``path`` (``None``: ``nar_home() / "index"``, read now)."""
    return Path(path).expanduser() if path is not None else nar_home() / "index"


class EmbeddingIndex:
    """A persistent, multi-process-safe index of unit embeddings with metadata.

    SQLite (``meta.sqlite``) stores keys, ids, vectors and metadata and is the source of truth;
    FAISS (``vectors.faiss``) is a cache rebuilt from it whenever it is missing, stale or
    corrupt. Search scores are inner products of unit vectors (cosine): larger is closer.
    To share one open handle per process, use :func:`nar_plugin.index.open_index`.

    Args:
        path: Index directory; default ``nar_plugin.config.nar_home() / "index"``. Created if
            missing.
        encoder_version: Version of the encoder whose embeddings this index holds. If the index
            already records another version, opening fails. If the index records none yet,
            this one is recorded; if ``None``, the first added entry's version is recorded.
        dim: Embedding dimension.
        verify: Run SQLite's ``PRAGMA quick_check`` on open (reads the whole database once).
        read_only: Refuse writes of entries (``add``, ``upsert``, ``add_many``, ``remove``,
            ``rebuild(entries)``) and never record ``encoder_version`` (it is still checked).
            A missing index is still created, empty. An index in a folder this process may not
            write is always opened read-only (SQLite ``mode=ro``, else ``immutable``; no lock
            or cache file is written): queries work, writes raise :class:`IndexReadOnlyError`.

    Raises:
        IndexCorruptError: ``meta.sqlite`` is not a valid database, fails the quick check, lacks
            the schema, or has a newer format version. Restore with :meth:`restore` from an
            export (``nar index rebuild``).
        EncoderVersionMismatchError: ``encoder_version`` differs from the recorded one.
        InvalidVectorError: ``dim`` differs from the dimension the index was created with.
        IndexLockedError: The index had to be created or updated and the lock timed out.
        IndexReadOnlyError: No index exists in a folder this process may not write.
        InvalidQueryError: ``path`` (or a folder above it) is a file.

    Example:
        >>> idx = EmbeddingIndex(tmp_path, encoder_version="nar-enc-1")
        >>> idx.add("hf:org/model@main", vec, source_kind="hf", graph_hash="ab12")
        1
        >>> [h.key for h in idx.search(vec, k=1)]
        ['hf:org/model@main']
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        encoder_version: str | None = None,
        dim: int = EMBEDDING_DIM,
        *,
        verify: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = index_path(path)
        self.dim = int(dim)
        self._read_only = bool(read_only)
        writable = folder_writable(self.path, DB_NAME)
        if writable:
            self.path.mkdir(parents=True, exist_ok=True)
        self._db = Database(self.path, self.dim, verify=verify, encoder_version=encoder_version,
                            read_only=self._read_only, writable=writable)
        self._cache = FaissCache(self._db)
        self._open()

    def _open(self) -> None:
        with self._db.mutex:
            self._db.connect()
            self._cache.current()

    @property
    def read_only(self) -> bool:
        """True when writes of entries are refused (``read_only=True``, or an unwritable folder)."""
        return self._read_only or not self._db.writable

    @property
    def db_path(self) -> Path:
        """Path of the SQLite database (the source of truth)."""
        return self._db.db_path

    @property
    def encoder_version(self) -> str | None:
        """Encoder version recorded by the index (``None`` while it has none)."""
        return self._db.encoder_version

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._db.conn is None

    def _require_encoder(self, version: str | None) -> None:
        """Check (and, if none is recorded and the handle may write, record) an encoder version."""
        self._db.require_encoder(version)

    def close(self) -> None:
        """Refresh and save the FAISS cache if that is cheap (<= 64 MiB), then close the database.

        Saving is best effort (the cache is re-derivable): errors while saving are logged, not
        raised. The index must not be used after closing; calling ``close`` twice is harmless.
        """
        with self._db.mutex:
            if self._db.conn is None:
                return
            self._cache.close()
            self._db.close()

    def __enter__(self) -> EmbeddingIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingIndex(path={str(self.path)!r}, dim={self.dim}, encoder_version={self.encoder_version!r})"

    # ------------------------------------------------------------------ writes

    def _check_writable(self) -> None:
        if not self._db.writable:
            raise not_writable_error(self.path)
        if self._read_only:
            raise IndexReadOnlyError(f"index {self.path} was opened read-only; open it with read_only=False to write",
                                     path=str(self.path))

    def _write(self, items: Iterable[Item], mode: str) -> list[int]:
        """The one write path: ``items`` (validated lazily) in one transaction."""
        self._check_writable()
        with self._db.transaction() as txn:
            return [write_item(txn, item, mode, self._db.where) for item in items]

    # add() and upsert() spell out the same keywords on purpose (help(), IDEs, docs); the
    # shared logic is _write().
    def add(
        self, key: str, vector: np.ndarray, *, source_kind: str | None = None, uri: str | None = None,
        graph_hash: str | None = None, encoder_version: str | None = None, params_count: int | None = None,
        family_guess: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Add a new entry (the vector is stored normalised to unit norm).

        Args:
            key: Unique key, e.g. ``"mlflow:model:<id>"``.
            vector: Float vector of shape ``(dim,)``.
            source_kind: Source kind; default: the part of ``key`` before the first ``:``.
            uri: Where the model lives.
            graph_hash: WL hash of the architecture graph.
            encoder_version: Encoder that made ``vector``; default: the index's version.
            params_count: Number of model parameters.
            family_guess: Predicted family.
            metadata: Extra JSON-serialisable metadata.

        Returns:
            The new entry's stable id.

        Raises:
            KeyExistsError: ``key`` is already indexed (a ``ValueError``).
            InvalidVectorError: Wrong shape, non-float dtype, non-finite values or zero vector.
            EncoderVersionMismatchError: ``encoder_version`` differs from the index's.
            IndexLockedError: Another process held the write lock past ``NAR_LOCK_TIMEOUT``.
            InvalidQueryError: The index was opened read-only.
        """
        meta = dict(source_kind=source_kind, uri=uri, graph_hash=graph_hash, encoder_version=encoder_version,
                    params_count=params_count, family_guess=family_guess, metadata=metadata)
        return self._write([make_item(key, vector, meta, self.dim)], "add")[0]

    def upsert(
        self, key: str, vector: np.ndarray, *, source_kind: str | None = None, uri: str | None = None,
        graph_hash: str | None = None, encoder_version: str | None = None, params_count: int | None = None,
        family_guess: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Add an entry or replace the vector and all metadata of an existing key.

        The id of an existing key is kept, and so is its ``created_at``. Arguments and errors
        (except ``KeyExistsError``) as in :meth:`add`.

        Returns:
            The entry's stable id.
        """
        meta = dict(source_kind=source_kind, uri=uri, graph_hash=graph_hash, encoder_version=encoder_version,
                    params_count=params_count, family_guess=family_guess, metadata=metadata)
        return self._write([make_item(key, vector, meta, self.dim)], "upsert")[0]

    def add_many(self, items: Iterable[Any], *, upsert: bool = False) -> list[int]:
        """Add (or upsert) many entries in one transaction: all of them land, or none.

        Args:
            items: :class:`IndexEntry` objects, mappings with ``key``, ``vector`` and optional
                metadata fields, or ``(key, vector)`` / ``(key, vector, meta_dict)`` tuples.
                Consumed lazily while the write lock is held.
            upsert: Replace existing keys instead of failing.

        Returns:
            The ids, in the order of ``items``.

        Raises:
            KeyExistsError: A key already exists (or repeats in ``items``) and ``upsert`` is
                false; nothing is written.
            InvalidVectorError, InvalidQueryError: A malformed item; nothing is written.
            EncoderVersionMismatchError: An item's encoder version differs from the index's.
            IndexLockedError: Another process held the write lock past ``NAR_LOCK_TIMEOUT``.
        """
        return self._write((coerce_item(it, self.dim) for it in items), "upsert" if upsert else "add")

    def remove(self, key: str) -> bool:
        """Remove an entry. Its id is never reused.

        Args:
            key: Key to remove.

        Returns:
            True if the key was indexed, False if it was not.

        Raises:
            IndexLockedError: Another process held the write lock past ``NAR_LOCK_TIMEOUT``.
            InvalidQueryError: The index was opened read-only.
        """
        self._check_writable()
        with self._db.transaction() as txn:
            return remove_key(txn, key)

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> IndexEntry | None:
        """Look up an entry by key.

        Args:
            key: The key.

        Returns:
            The entry, or ``None`` if the key is not indexed.
        """
        rows = self._db.query(f"SELECT {SELECT} FROM entries WHERE key=?", (key,))
        return entry_from_row(rows[0]) if rows else None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return bool(self._db.query("SELECT 1 FROM entries WHERE key=?", (key,)))

    def __len__(self) -> int:
        return int(self._db.query("SELECT COUNT(*) FROM entries")[0][0])

    def keys(self) -> list[str]:
        """All keys, in id (insertion) order.

        Returns:
            The list of keys.
        """
        return [r[0] for r in self._db.query("SELECT key FROM entries ORDER BY id")]

    def entries(self) -> Iterator[IndexEntry]:
        """Iterate over all entries in id order, from one consistent snapshot.

        Uses its own read-only connection and reads in blocks, so memory stays bounded and
        concurrent writers are neither blocked nor seen half-way.

        Returns:
            An iterator of :class:`IndexEntry`.
        """
        with self._db.mutex:
            self._db.refresh()  # follow a database replaced by a restore elsewhere
        yield from iter_entries(self.db_path)

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        filter: Filter = None,  # noqa: A002 - public name mirrors the documented API
        exclude_keys: Iterable[str] = (),
        *,
        exact: bool = False,
    ) -> list[SearchHit]:
        """Find the ``k`` entries closest to ``vector``.

        Scores are inner products of unit vectors (cosine similarity): **larger is closer**;
        hits are sorted by decreasing score. Below ``APPROX_THRESHOLD`` entries the search
        is exact; above it is approximate (IVF), with exact scores for the candidates found.
        Filters are applied after the nearest-neighbour search with over-fetching that widens
        (more candidates, more IVF lists, finally an exact scan) until ``k`` hits pass, so
        ``k`` hits are returned whenever ``k`` entries match.

        Args:
            vector: Query, shape ``(dim,)``; normalised before searching.
            k: Number of hits wanted (>= 1).
            filter: ``None``; a dict of column equality constraints (``{"source_kind":
                "mlflow"}``; a list/tuple/set value means "any of"; ``None`` means NULL) on
                ``id``, ``key``, ``source_kind``, ``uri``, ``graph_hash``, ``encoder_version``,
                ``params_count``, ``family_guess``; a key prefix string (``"mlflow:"``); or a
                callable ``(IndexEntry) -> bool``.
            exclude_keys: Keys never returned (e.g. the query's own key).
            exact: Visit every IVF list (exact; costs a flat scan, 20-130 ms at 1M) instead
                of ``nprobe`` of them; no effect below ``APPROX_THRESHOLD`` entries.

        Returns:
            Up to ``k`` :class:`SearchHit`, best first.

        Raises:
            InvalidVectorError: The query has the wrong shape or is not finite / all zeros.
            InvalidQueryError: ``k`` < 1 or a malformed ``filter``.
        """
        unit = as_unit(vector, self.dim, "query vector")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidQueryError(f"k must be a positive int, found {k!r}")
        excl = frozenset([exclude_keys]) if isinstance(exclude_keys, str) else frozenset(exclude_keys)
        q = Query(unit, int(k), compile_filter(filter), excl)
        with self._db.mutex:
            index = self._cache.current()
            return run_query(self._db, index, self._cache.params, q, exact=exact)

    # ------------------------------------------------------------------ maintenance

    def stats(self) -> dict[str, Any]:
        """Summary of the index.

        Returns:
            A dict with ``count``, ``dim``, ``encoder_version``, ``index_type`` (e.g.
            ``"Flat (exact)"`` or ``"IVF4096,Flat (nprobe=64)"``), ``path``, ``size_bytes``
            (all index files on disk), ``sqlite_bytes``, ``faiss_bytes``, ``generation``,
            ``cache_generation`` (what the cache file on disk reflects) and ``format_version``.
        """
        with self._db.mutex:
            self._cache.current()
            count = len(self)
            sqlite_bytes = _file_sizes(self.path, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
            faiss_bytes = _file_sizes(self.path, FAISS_NAME, SIDECAR_NAME)
            return {
                "count": count,
                "dim": self.dim,
                "encoder_version": self.encoder_version,
                "index_type": self._cache.params.describe(),
                "path": str(self.path),
                "size_bytes": sqlite_bytes + faiss_bytes,
                "sqlite_bytes": sqlite_bytes,
                "faiss_bytes": faiss_bytes,
                "generation": self._cache.generation,
                "cache_generation": self._cache.disk_generation,
                "format_version": FORMAT_VERSION,
            }

    def rebuild(self, entries_iterable: Iterable[Any] | None = None) -> None:
        """Rebuild the FAISS cache from SQLite, or the whole index from ``entries_iterable``.

        Args:
            entries_iterable: ``None``: re-derive ``vectors.faiss`` from SQLite and save it.
                Otherwise items as for :meth:`add_many` (e.g. :func:`import_jsonl` of an
                export): the index is recreated from scratch with them (ids kept where given;
                encoder version from the constructor argument, else from the entries), see
                :meth:`restore`.

        Raises:
            IndexLockedError: A lock timed out.
            KeyExistsError, InvalidVectorError, EncoderVersionMismatchError: Bad entries; the
                existing index is left untouched.
            IndexReadOnlyError: ``entries_iterable`` given to a read-only handle, or the folder
                may not be written.
        """
        with self._db.mutex:
            if not self._db.writable:
                raise not_writable_error(self.path, "rebuild")
            if entries_iterable is None:
                self._db.refresh()
                self._cache.build()
                self._cache.save()
                return
            self._check_writable()
            replace_database(self._db, entries_iterable, self._db.requested_encoder)
            self._open()

    @classmethod
    def restore(
        cls,
        entries: Iterable[Any],
        path: str | os.PathLike[str] | None = None,
        encoder_version: str | None = None,
        dim: int = EMBEDDING_DIM,
    ) -> EmbeddingIndex:
        """Recreate an index from scratch from ``entries``; works when ``meta.sqlite`` is corrupt.

        The new database is built in a temporary file first; only when all entries are in is it
        swapped in. The previous files are moved aside as ``<name>.corrupt-<timestamp>`` (when
        the database was unreadable) or ``<name>.bak-<timestamp>``. This is what
        ``nar index rebuild`` runs.

        Args:
            entries: Items as for :meth:`add_many`, e.g. ``import_jsonl("export.jsonl")``.
            path: Index directory (default ``nar_home() / "index"``).
            encoder_version: Encoder version of the new index; default: that of the entries.
            dim: Embedding dimension.

        Returns:
            The new, open index (opened as the constructor opens it).

        Raises:
            IndexLockedError: The lock timed out.
            KeyExistsError, InvalidVectorError, EncoderVersionMismatchError: Bad ``entries``;
                nothing on disk is changed.
            IndexReadOnlyError: This process may not write the folder.
        """
        directory = index_path(path)
        if not folder_writable(directory, DB_NAME):
            raise not_writable_error(directory, "restore")
        directory.mkdir(parents=True, exist_ok=True)
        unopened = Database(directory, int(dim), verify=True, encoder_version=encoder_version, read_only=False)
        replace_database(unopened, entries, encoder_version)
        return cls(directory, encoder_version, dim)

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every entry to a JSONL file (atomically), vectors encoded with the codec.

        The first line is a header (``{"format": "nar-index-export", ...}``); every other line
        is :meth:`IndexEntry.to_json`. Vectors are stored as float16 (``nar1:`` codec), so a
        round trip through :func:`import_jsonl` changes each component by at most ~1e-3.

        Args:
            path: Output file.

        Returns:
            The number of entries written.
        """
        count = export_entries(self.entries(), path, dim=self.dim, encoder_version=self.encoder_version)
        logger.info("index %s: exported %d entries to %s", self.path, count, path)
        return count


def _file_sizes(directory: Path, *names: str) -> int:
    total = 0
    for name in names:
        with contextlib.suppress(OSError):
            total += (directory / name).stat().st_size
    return total
