"""Persistent embedding index: SQLite is the source of truth, FAISS is a derived cache.

Layout of an index directory (default ``$NAR_HOME/index``)::

    meta.sqlite          SQLite (WAL mode): keys, stable ids, the vectors (float32 blobs), metadata,
                         tombstones of removed ids, and an ``info`` table (format_version, dim,
                         encoder_version, generation, uid)
    vectors.faiss        FAISS index over the same vectors, keyed by the SQLite ids (a cache)
    vectors.faiss.json   sidecar: the generation, row count, size and CRC32 the cache reflects
    .lock                filelock serialising writers across processes
    .cache.lock          filelock serialising writers of the FAISS cache file

Why this split:

* **SQLite is the truth.** It gives atomic, durable, multi-process transactions for free: a writer
  killed with ``kill -9`` in the middle of a batch leaves the previous committed state, and
  every reader sees a consistent snapshot. The vectors live there too, so the FAISS file can
  always be re-derived, exact scores can be recomputed, and an export needs nothing else.
* **FAISS is a cache.** Its files cannot be updated transactionally and are not safe to write
  from several processes, so they are never trusted: a missing, truncated, corrupt (CRC32
  mismatch) or stale cache is rebuilt or caught up from SQLite on open, logged, and never
  surfaces as an error. The cache file is replaced atomically (temp file + ``os.replace``).
* **Freshness across processes.** Every write transaction bumps ``info.generation`` and stamps
  the rows it writes with that generation (``rev``); removals leave a tombstone with their
  generation. Each open index remembers the generation its in-memory FAISS index reflects.
  Before a search it reads the current generation (one indexed lookup) and, if another process
  wrote since, applies exactly the rows and tombstones with a newer generation. So a process
  always searches what was committed before the search started, without reloading.
* **Ids** are SQLite ``AUTOINCREMENT`` row ids: stable across ``upsert`` and never reused after
  ``remove``, so they can serve as FAISS ids and as references.
* **Exact below 100k, approximate above.** Below :data:`APPROX_THRESHOLD` entries the cache is an
  ``IndexIDMap2`` over ``IndexFlatIP`` (exact). Above, it is an inverted file with exact
  float32 storage (``IndexIVFFlat``, spherical k-means, inner product) whose ``nprobe`` is set
  by :func:`choose_ann_params` from measurements on clustered data (see ``docs/index.md``).
  Because IVFFlat keeps full vectors, its scores are exact inner products; only the candidate
  set is approximate, so no re-ranking pass is needed. IVF (unlike HNSW) supports removal,
  which ``remove``/``upsert`` need, and needs no retraining for moderate growth (it is retrained
  when the index has grown 4x since training).

Scores are inner products of unit vectors (= cosine similarity): **larger is closer**.

Writers take ``<dir>/.lock`` (timeout ``NAR_LOCK_TIMEOUT``, :class:`IndexLockedError` on
timeout) around each SQLite write transaction. Readers take no lock (WAL snapshots).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import faiss
import filelock
import numpy as np

from nar_plugin.index.codec import EMBEDDING_DIM, decode_embedding, encode_embedding
from nar_plugin.config import NAR_LOCK_TIMEOUT, nar_home
from nar_plugin.errors import (
    CorruptArtifactError,
    EncoderVersionMismatchError,
    IndexCorruptError,
    IndexLockedError,
    InvalidQueryError,
    InvalidVectorError,
    KeyExistsError,
    NarError,
)

__all__ = [
    "FORMAT_VERSION",
    "APPROX_THRESHOLD",
    "AnnParams",
    "choose_ann_params",
    "build_ann_index",
    "ann_search",
    "ann_params_of",
    "IndexEntry",
    "SearchHit",
    "EmbeddingIndex",
    "import_jsonl",
]

logger = logging.getLogger(__name__)

#: On-disk format of the SQLite schema; bumped on incompatible changes and checked on open.
FORMAT_VERSION = 1
#: From this many entries on, the FAISS cache is an approximate (IVF) index instead of exact.
APPROX_THRESHOLD = 100_000
#: An IVF cache is retrained once the index has grown this much since training.
_RETRAIN_GROWTH = 4.0
#: Filtered searches whose SQL filter matches at most this many rows are scored exactly.
_EXACT_SUBSET_MAX = 20_000
#: Over-fetching stops widening at this many candidates and switches to an exact scan.
_WIDEN_LIMIT = 16_384
_READ_BLOCK = 8_192

_DB_NAME = "meta.sqlite"
_FAISS_NAME = "vectors.faiss"
_SIDECAR_NAME = "vectors.faiss.json"
_LOCK_NAME = ".lock"
_CACHE_LOCK_NAME = ".cache.lock"
_VEC_DTYPE = np.dtype("<f4")

_META_COLUMNS = ("source_kind", "uri", "graph_hash", "encoder_version", "params_count", "family_guess")
_FILTER_COLUMNS = ("id", "key", *_META_COLUMNS)
_SELECT = (
    "id, key, vector, source_kind, uri, graph_hash, encoder_version, params_count, family_guess, "
    "created_at, updated_at, metadata"
)

_SCHEMA = """
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
_REQUIRED_TABLES = frozenset({"info", "entries", "tombstones"})

Filter = Union[Mapping[str, Any], str, Callable[["IndexEntry"], bool], None]


# --------------------------------------------------------------------------------------------
# Approximate-search layer (shared with benchmarks/index.py so both measure the same code path)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnParams:
    """How the FAISS cache is built.

    Attributes:
        kind: ``"flat"`` (exact ``IndexIDMap2(IndexFlatIP)``) or ``"ivf"`` (``IndexIVFFlat``).
        nlist: Number of inverted lists (IVF only).
        nprobe: Lists visited per query (IVF only); the recall/latency knob.
        train_size: Number of vectors k-means is trained on (IVF only).
    """

    kind: str
    nlist: int = 0
    nprobe: int = 0
    train_size: int = 0

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"IVF4096,Flat (nprobe=48)"``."""
        if self.kind == "flat":
            return "Flat (exact)"
        return f"IVF{self.nlist},Flat (nprobe={self.nprobe})"


def choose_ann_params(n: int, *, threshold: int | None = None) -> AnnParams:
    """Pick the FAISS index type and its parameters for ``n`` vectors.

    Exact search below ``threshold``; above, IVF with ``nlist`` the power of two nearest to
    ``4 * sqrt(n)`` and ``nprobe = max(128, nlist / 32)`` (128 of 1,024 lists at 100k entries,
    128 of 4,096 at 1M). Chosen with ``benchmarks/index.py`` on clustered unit vectors, 2 cores:
    at 1M, nprobe 64 / 128 / 256 gave recall@10 0.957 / 0.972 / 0.982 at p50 0.45 / 0.86 /
    1.7 ms; 128 keeps a margin above 0.95 at a fraction of the 5 ms budget (``docs/index.md``).

    Args:
        n: Number of vectors the index will hold.
        threshold: Entry count from which the approximate index is used (default
            :data:`APPROX_THRESHOLD`, read at call time).

    Returns:
        The parameters for :func:`build_ann_index`.

    Raises:
        InvalidQueryError: ``n`` is negative.
    """
    if n < 0:
        raise InvalidQueryError(f"n must be >= 0, found {n}")
    if n < (APPROX_THRESHOLD if threshold is None else threshold):
        return AnnParams("flat")
    nlist = int(2 ** round(math.log2(4.0 * math.sqrt(n))))
    nlist = max(64, min(nlist, n // 39))  # faiss wants >= 39 training points per list
    nprobe = max(128, nlist // 32)
    train_size = min(n, 64 * nlist)
    return AnnParams("ivf", nlist=nlist, nprobe=min(nprobe, nlist), train_size=train_size)


def build_ann_index(
    vectors: np.ndarray, ids: np.ndarray, params: AnnParams, *, seed: int = 0
) -> faiss.Index:
    """Build the FAISS index :class:`EmbeddingIndex` uses as its cache.

    Args:
        vectors: ``(n, d)`` unit-norm float32 vectors.
        ids: ``(n,)`` int64 ids (the SQLite row ids).
        params: From :func:`choose_ann_params`.
        seed: Seed of the training-sample draw and of k-means (IVF only).

    Returns:
        An ``IndexIDMap2(IndexFlatIP)`` or an ``IndexIVFFlat`` (inner product, spherical
        k-means, hashtable direct map so removals are cheap) holding the vectors.

    Raises:
        InvalidVectorError: ``vectors`` and ``ids`` do not match in shape.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.shape != (vectors.shape[0],):
        raise InvalidVectorError(f"expected vectors (n, d) and ids (n,), found {vectors.shape} and {ids.shape}")
    dim = vectors.shape[1]
    if params.kind == "flat":
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(vectors, ids)
        return index
    if params.kind != "ivf":
        raise InvalidQueryError(f"unknown index kind {params.kind!r}; expected 'flat' or 'ivf'")
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, params.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True
    quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
    ivf.cp.spherical = True  # centroids on the sphere: assignment by inner product is consistent
    ivf.cp.seed = seed
    rng = np.random.default_rng(seed)
    train_n = min(len(vectors), params.train_size or len(vectors))
    sample = vectors if train_n >= len(vectors) else vectors[np.sort(rng.choice(len(vectors), train_n, replace=False))]
    ivf.train(sample)
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    ivf.nprobe = params.nprobe
    for start in range(0, len(vectors), 65_536):
        ivf.add_with_ids(vectors[start : start + 65_536], ids[start : start + 65_536])
    return ivf


def ann_params_of(index: faiss.Index) -> AnnParams:
    """Describe a FAISS index built by :func:`build_ann_index` (e.g. one loaded from disk).

    Args:
        index: The FAISS index.

    Returns:
        Its :class:`AnnParams` (``train_size`` is 0: it is not stored in the index).
    """
    if isinstance(index, faiss.IndexIVF):
        return AnnParams("ivf", nlist=int(index.nlist), nprobe=int(index.nprobe))
    return AnnParams("flat")


def ann_search(
    index: faiss.Index, queries: np.ndarray, k: int, *, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Search the FAISS cache (same call for exact and approximate indexes).

    Args:
        index: From :func:`build_ann_index`.
        queries: ``(nq, d)`` float32 unit vectors.
        k: Neighbours per query.
        nprobe: Override of the IVF ``nprobe`` (clipped to ``nlist``); ignored for flat indexes.

    Returns:
        ``(scores, ids)``, each ``(nq, k)``: inner products (larger = closer), ids ``-1`` where
        fewer than ``k`` results were found.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if isinstance(index, faiss.IndexIVF):
        probe = int(index.nprobe if nprobe is None else nprobe)
        params = faiss.SearchParametersIVF(nprobe=max(1, min(probe, int(index.nlist))))
        return index.search(queries, k, params=params)
    return index.search(queries, k)


def _remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) == 0 or index.ntotal == 0:
        return 0
    if isinstance(index, faiss.IndexIVF):
        # the hashtable direct map only accepts an explicit id array
        return int(index.remove_ids(faiss.IDSelectorArray(ids)))
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))


# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IndexEntry:
    """One indexed embedding and its metadata.

    Attributes:
        id: Stable integer id (never reused after removal; kept by ``upsert``).
        key: Unique key, e.g. ``"mlflow:model:m-123"`` or ``"hf:org/name@rev"``.
        vector: Unit-norm float32 vector, shape ``(dim,)`` (read-only).
        source_kind: Where the model came from (``"mlflow"``, ``"hf"``, ``"file"``...).
        uri: Where to find the model.
        graph_hash: WL hash of the architecture graph (equal hash = identical architecture).
        encoder_version: Version of the encoder that produced ``vector``.
        params_count: Number of parameters of the model, if known.
        family_guess: Predicted architecture family, if any.
        created_at: ISO-8601 UTC time the key was first indexed.
        updated_at: ISO-8601 UTC time of the last write of the key.
        metadata: Free-form JSON-serialisable metadata.
    """

    id: int
    key: str
    vector: np.ndarray
    source_kind: str | None = None
    uri: str | None = None
    graph_hash: str | None = None
    encoder_version: str | None = None
    params_count: int | None = None
    family_guess: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexEntry):
            return NotImplemented
        return (
            self.id == other.id
            and self.key == other.key
            and np.array_equal(self.vector, other.vector)
            and all(getattr(self, c) == getattr(other, c) for c in (*_META_COLUMNS, "created_at", "updated_at"))
            and self.metadata == other.metadata
        )

    __hash__ = None  # type: ignore[assignment]  # mutable metadata dict: not hashable

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-serialisable dict, the vector encoded by :func:`encode_embedding`.

        Returns:
            A dict with ``id``, ``key``, ``vector`` (``"nar1:..."``), the metadata columns,
            ``created_at``, ``updated_at`` and ``metadata``.
        """
        out: dict[str, Any] = {"id": self.id, "key": self.key, "vector": encode_embedding(self.vector, dim=len(self.vector))}
        for col in _META_COLUMNS:
            out[col] = getattr(self, col)
        out["created_at"] = self.created_at
        out["updated_at"] = self.updated_at
        out["metadata"] = self.metadata
        return out


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        key: Key of the matching entry.
        id: Its stable id.
        score: Inner product of the unit query and the unit entry vector, i.e. cosine
            similarity in [-1, 1]: **larger is closer**.
        entry: The full entry.
    """

    key: str
    id: int
    score: float
    entry: IndexEntry


@dataclass(frozen=True)
class _Item:
    """A validated entry about to be written."""

    key: str
    vector: np.ndarray
    meta: dict[str, Any]
    metadata: dict[str, Any]
    id: int | None = None
    created_at: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _as_unit(vector: Any, dim: int, what: str = "vector") -> np.ndarray:
    try:
        arr = np.asarray(vector)
    except Exception as exc:  # noqa: BLE001 - arbitrary user object; report it as a bad vector
        raise InvalidVectorError(f"{what} must be an array of {dim} floats, found {type(vector).__name__}: {exc}") from None
    if arr.dtype.kind != "f":
        raise InvalidVectorError(f"{what} must have a floating dtype (float32), found dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dim,):
        raise InvalidVectorError(f"{what} must have shape ({dim},), found {arr.shape}")
    arr64 = arr.astype(np.float64)
    if not np.all(np.isfinite(arr64)):
        raise InvalidVectorError(f"{what} contains non-finite values (NaN or inf)")
    norm = float(np.linalg.norm(arr64))
    if norm == 0.0:
        raise InvalidVectorError(f"{what} is all zeros; expected a non-zero embedding")
    unit = (arr64 / norm).astype(np.float32)
    unit.setflags(write=False)
    return unit


def _corrupt_from(exc: BaseException, db: Path) -> IndexCorruptError | None:
    """Map an sqlite3 error raised while reading ``db`` to IndexCorruptError (None: not corruption)."""
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc).lower()
        if "malformed" not in msg and "not a database" not in msg and "disk i/o" not in msg:
            return None
    if isinstance(exc, sqlite3.DatabaseError):
        return IndexCorruptError(f"index database {db} is corrupt ({exc})", path=str(db))
    return None


class _Txn:
    """State of one write transaction."""

    __slots__ = ("conn", "gen", "changed")

    def __init__(self, conn: sqlite3.Connection, gen: int) -> None:
        self.conn = conn
        self.gen = gen
        self.changed = False


def _stored_encoder(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM info WHERE name='encoder_version'").fetchone()
    return row[0] if row and row[0] else None


def _claim_encoder(txn: _Txn, version: str | None, where: str) -> str | None:
    """Check ``version`` against the recorded encoder version; record it if there is none yet.

    Returns the index's encoder version after the check. Runs inside a write transaction, so
    two processes racing to record different versions cannot both succeed.
    """
    stored = _stored_encoder(txn.conn)
    if version is None or stored == version:
        return stored
    if stored is None:
        txn.conn.execute("INSERT OR REPLACE INTO info(name, value) VALUES ('encoder_version', ?)", (version,))
        txn.changed = True
        return version
    raise EncoderVersionMismatchError(expected=version, found=stored, where=where)


def _make_item(
    key: str,
    vector: Any,
    meta: Mapping[str, Any],
    dim: int,
    *,
    id: int | None = None,  # noqa: A002 - mirrors the column name
    created_at: str | None = None,
) -> _Item:
    """Validate one entry before any lock is taken."""
    if not isinstance(key, str) or not key:
        raise InvalidQueryError(f"key must be a non-empty str, found {key!r}")
    unknown = set(meta) - {*_META_COLUMNS, "metadata"}
    if unknown:
        raise InvalidQueryError(
            f"unknown metadata field(s) {', '.join(sorted(unknown))}; expected any of "
            f"{', '.join((*_META_COLUMNS, 'metadata'))}"
        )
    unit = _as_unit(vector, dim, f"vector of {key!r}")
    cols: dict[str, Any] = {c: meta.get(c) for c in _META_COLUMNS}
    if cols["source_kind"] is None and ":" in key:
        cols["source_kind"] = key.split(":", 1)[0]
    if cols["params_count"] is not None:
        try:
            cols["params_count"] = int(cols["params_count"])
        except (TypeError, ValueError):
            raise InvalidQueryError(f"params_count must be an int, found {cols['params_count']!r}") from None
    for c in ("source_kind", "uri", "graph_hash", "encoder_version", "family_guess"):
        if cols[c] is not None:
            cols[c] = str(cols[c])
    metadata = dict(meta.get("metadata") or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidQueryError(f"metadata of {key!r} must be JSON-serialisable: {exc}") from None
    if id is not None and int(id) <= 0:
        id = None  # noqa: A001 - "no id" in imports without ids
    return _Item(key=key, vector=unit, meta=cols, metadata=metadata, id=id, created_at=created_at)


def _coerce_item(item: Any, dim: int) -> _Item:
    """Accept IndexEntry, mapping or (key, vector[, meta]) tuple items (see ``add_many``)."""
    if isinstance(item, IndexEntry):
        meta = {c: getattr(item, c) for c in _META_COLUMNS}
        meta["metadata"] = item.metadata
        return _make_item(item.key, item.vector, meta, dim, id=item.id, created_at=item.created_at)
    if isinstance(item, Mapping):
        if "key" not in item or "vector" not in item:
            raise InvalidQueryError(f"an item mapping needs 'key' and 'vector', found keys {sorted(item)}")
        meta = {k: v for k, v in item.items() if k not in ("key", "vector", "id", "created_at", "updated_at")}
        return _make_item(item["key"], item["vector"], meta, dim, id=item.get("id"), created_at=item.get("created_at"))
    if isinstance(item, tuple) and len(item) in (2, 3):
        meta = item[2] if len(item) == 3 else {}
        if not isinstance(meta, Mapping):
            raise InvalidQueryError(f"the third element of an item tuple must be a dict, found {type(meta).__name__}")
        return _make_item(item[0], item[1], meta, dim)
    raise InvalidQueryError(
        "items must be IndexEntry, mappings with 'key'/'vector', or (key, vector[, meta]) tuples; "
        f"found {type(item).__name__}"
    )


def _write_item(txn: _Txn, item: _Item, mode: str, where: str) -> int:
    """Insert or update one validated item; ``mode`` is ``add``, ``upsert`` or ``restore``."""
    conn = txn.conn
    meta = dict(item.meta)
    recorded = _claim_encoder(txn, meta["encoder_version"], where)
    if meta["encoder_version"] is None:
        meta["encoder_version"] = recorded
    blob = item.vector.astype(_VEC_DTYPE).tobytes()
    now = _now()
    values = [meta[c] for c in _META_COLUMNS]
    metadata = json.dumps(item.metadata, sort_keys=True)
    row = conn.execute("SELECT id FROM entries WHERE key=?", (item.key,)).fetchone()
    txn.changed = True
    if row is not None:
        if mode != "upsert":
            raise KeyExistsError(item.key, int(row[0]))
        sets = ", ".join(f"{c}=?" for c in _META_COLUMNS)
        conn.execute(
            f"UPDATE entries SET vector=?, {sets}, metadata=?, updated_at=?, rev=? WHERE id=?",
            (blob, *values, metadata, now, txn.gen, row[0]),
        )
        return int(row[0])
    cols = ", ".join(_META_COLUMNS)
    marks = ", ".join("?" for _ in _META_COLUMNS)
    explicit_id = item.id if mode == "restore" else None
    try:
        cur = conn.execute(
            f"INSERT INTO entries (id, key, vector, {cols}, created_at, updated_at, metadata, rev) "
            f"VALUES (?, ?, ?, {marks}, ?, ?, ?, ?)",
            (explicit_id, item.key, blob, *values, item.created_at or now, now, metadata, txn.gen),
        )
    except sqlite3.IntegrityError:
        raise InvalidQueryError(f"entry {item.key!r} repeats id {explicit_id} of another entry") from None
    return int(cur.lastrowid)


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


class EmbeddingIndex:
    """A persistent, multi-process-safe index of unit embeddings with metadata.

    SQLite (``meta.sqlite``) stores keys, ids, vectors and metadata and is the source of truth;
    FAISS (``vectors.faiss``) is a cache rebuilt from it whenever it is missing, stale or
    corrupt. Search scores are inner products of unit vectors (cosine): larger is closer.

    Args:
        path: Index directory; default ``nar_plugin.config.nar_home() / "index"``. Created if
            missing.
        encoder_version: Version of the encoder whose embeddings this index holds. If the index
            already records another version, opening fails. If the index records none yet,
            this one is recorded; if ``None``, the first added entry's version is recorded.
        dim: Embedding dimension.
        verify: Run SQLite's ``PRAGMA quick_check`` on open (reads the whole database once).

    Raises:
        IndexCorruptError: ``meta.sqlite`` is not a valid database, fails the quick check, lacks
            the schema, or has a newer format version. Restore with :meth:`restore` from an
            export (``nar index rebuild``).
        EncoderVersionMismatchError: ``encoder_version`` differs from the recorded one.
        InvalidVectorError: ``dim`` differs from the dimension the index was created with.
        IndexLockedError: The index had to be created or updated and the lock timed out.

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
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else nar_home() / "index"
        self.dim = int(dim)
        self._verify = verify
        self._requested_encoder = encoder_version
        self._mutex = threading.RLock()
        self._lock = filelock.FileLock(str(self.path / _LOCK_NAME))
        self._cache_lock = filelock.FileLock(str(self.path / _CACHE_LOCK_NAME))
        self._conn: sqlite3.Connection | None = None
        self._db_ino: tuple[int, int] | None = None
        self._uid = ""
        self._encoder_version: str | None = None
        self._reset_cache_state()
        self.path.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            self._connect()
            self._ensure_current()

    # ------------------------------------------------------------------ connection / schema

    @property
    def db_path(self) -> Path:
        """Path of the SQLite database (the source of truth)."""
        return self.path / _DB_NAME

    @property
    def encoder_version(self) -> str | None:
        """Encoder version recorded by the index (``None`` while it has none)."""
        return self._encoder_version

    def _reset_cache_state(self) -> None:
        self._faiss: faiss.Index | None = None
        self._params = AnnParams("flat")
        self._faiss_gen = -1  # generation the in-memory FAISS index reflects
        self._disk_gen = -1  # generation of the cache file on disk, as far as we know
        self._disk_bad = False  # the cache file on disk failed to load: overwrite it
        self._pending = 0  # rows/tombstones applied since the cache file was written
        self._max_id = 0  # largest id the in-memory FAISS index has seen
        self._trained_n = 0

    def _lock_timeout(self) -> float:
        return float(NAR_LOCK_TIMEOUT.get())

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        timeout = self._lock_timeout()
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise IndexLockedError(
                f"could not lock index {self.path} within {timeout:g} s: another process is writing "
                "(wait and retry, or raise NAR_LOCK_TIMEOUT)"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def _connect(self) -> None:
        db = self.db_path
        if not db.exists():
            with self._write_lock():
                if not db.exists():
                    self._create_db(db, self._requested_encoder)
        st = os.stat(db)  # before connecting: if the file is swapped meanwhile, we reconnect later
        try:
            conn = sqlite3.connect(
                str(db), timeout=self._lock_timeout(), isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            raise _corrupt_from(exc, db) or exc
        try:
            info = self._validate(conn, db)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._db_ino = (st.st_dev, st.st_ino)
        self._uid = str(info.get("uid") or "")
        self._encoder_version = info.get("encoder_version") or None
        requested = self._requested_encoder
        if requested is not None and self._encoder_version != requested:
            if self._encoder_version is not None:
                conn.close()
                self._conn = None
                raise EncoderVersionMismatchError(expected=requested, found=self._encoder_version, where=f"index at {self.path}")
            with self._transaction() as txn:
                _claim_encoder(txn, requested, f"index at {self.path}")

    def _validate(self, conn: sqlite3.Connection, db: Path) -> dict[str, str]:
        try:
            if db.stat().st_size == 0:
                raise IndexCorruptError(f"index database {db} is empty (0 bytes)", path=str(db))
            conn.execute("PRAGMA synchronous=NORMAL")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if self._verify:
                rows = conn.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    detail = "; ".join(str(r[0]) for r in rows[:3])
                    raise IndexCorruptError(f"index database {db} failed its integrity check ({detail})", path=str(db))
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = _REQUIRED_TABLES - tables
            if missing:
                raise IndexCorruptError(
                    f"index database {db} lacks table(s) {', '.join(sorted(missing))}", path=str(db)
                )
            info = {str(k): v for k, v in conn.execute("SELECT name, value FROM info")}
        except sqlite3.DatabaseError as exc:
            raise _corrupt_from(exc, db) or exc from None
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
        if stored_dim != self.dim:
            raise InvalidVectorError(f"index at {self.path} holds dim={stored_dim} vectors, but was opened with dim={self.dim}")
        if mode.lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        return info

    def _create_db(self, db: Path, encoder_version: str | None, *, announce: bool = True) -> Path:
        """Create a fresh database at a temp path, then move it to ``db`` (atomic creation)."""
        tmp = db.with_name(f"{db.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            info = {
                "format_version": str(FORMAT_VERSION),
                "dim": str(self.dim),
                "encoder_version": encoder_version,
                "generation": "0",
                "uid": uuid.uuid4().hex,
                "created_at": _now(),
            }
            conn.executemany("INSERT INTO info(name, value) VALUES (?, ?)", list(info.items()))
            conn.execute("COMMIT")
        finally:
            conn.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db)
        _fsync_dir(db.parent)
        if announce:
            logger.info("created embedding index %s", db.parent)
        return db

    def _refresh_connection(self) -> sqlite3.Connection:
        """Reconnect if ``meta.sqlite`` was replaced (e.g. by :meth:`restore` in another process)."""
        if self._conn is None:
            raise InvalidQueryError(f"index {self.path} is closed; open a new EmbeddingIndex")
        try:
            st = os.stat(self.db_path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            # a restore in another process may be swapping files: wait for its lock, look again
            with self._write_lock():
                pass
            if not self.db_path.exists():
                raise IndexCorruptError(f"index database {self.db_path} disappeared", path=str(self.db_path)) from None
            current = None
        if current != self._db_ino:
            logger.info("index database %s was replaced; reopening", self.db_path)
            self._conn.close()
            self._conn = None
            self._reset_cache_state()
            self._connect()
        assert self._conn is not None  # for type checkers; _connect sets it or raises
        return self._conn

    def close(self) -> None:
        """Refresh and save the FAISS cache if that is cheap (<= 64 MiB), then close the database.

        Saving is best effort (the cache is re-derivable): errors while saving are logged, not
        raised. The index must not be used after closing; calling ``close`` twice is harmless.
        """
        with self._mutex:
            if self._conn is None:
                return
            if self._faiss is not None and self._faiss.ntotal * self.dim * 4 <= 64 * 2**20:
                try:
                    self._ensure_current()
                    self._maybe_save(force=True)
                except (NarError, sqlite3.Error, OSError, RuntimeError) as exc:
                    logger.warning("index %s: could not save the FAISS cache on close: %s", self.path, exc)
            self._conn.close()
            self._conn = None
            self._faiss = None

    def __enter__(self) -> EmbeddingIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingIndex(path={str(self.path)!r}, dim={self.dim}, encoder_version={self._encoder_version!r})"

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Txn]:
        """Write transaction: process lock + ``BEGIN IMMEDIATE``; bumps the generation on change."""
        with self._mutex:
            conn = self._refresh_connection()
            with self._write_lock():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    gen = int(conn.execute("SELECT value FROM info WHERE name='generation'").fetchone()[0]) + 1
                except sqlite3.DatabaseError as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise _corrupt_from(exc, self.db_path) or exc from None
                txn = _Txn(conn, gen)
                try:
                    yield txn
                    if txn.changed:
                        conn.execute("UPDATE info SET value=? WHERE name='generation'", (str(gen),))
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        self._encoder_version = _stored_encoder(conn)

    def _write_many(self, items: Iterable[_Item], mode: str) -> list[int]:
        where = f"index at {self.path}"
        with self._transaction() as txn:
            return [_write_item(txn, item, mode, where) for item in items]

    def add(
        self,
        key: str,
        vector: np.ndarray,
        *,
        source_kind: str | None = None,
        uri: str | None = None,
        graph_hash: str | None = None,
        encoder_version: str | None = None,
        params_count: int | None = None,
        family_guess: str | None = None,
        metadata: Mapping[str, Any] | None = None,
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
        """
        meta = dict(
            source_kind=source_kind, uri=uri, graph_hash=graph_hash, encoder_version=encoder_version,
            params_count=params_count, family_guess=family_guess, metadata=metadata,
        )
        return self._write_many([_make_item(key, vector, meta, self.dim)], "add")[0]

    def upsert(
        self,
        key: str,
        vector: np.ndarray,
        *,
        source_kind: str | None = None,
        uri: str | None = None,
        graph_hash: str | None = None,
        encoder_version: str | None = None,
        params_count: int | None = None,
        family_guess: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Add an entry or replace the vector and all metadata of an existing key.

        The id of an existing key is kept, and so is its ``created_at``. Arguments as in
        :meth:`add`.

        Returns:
            The entry's stable id.

        Raises:
            InvalidVectorError: Wrong shape, non-float dtype, non-finite values or zero vector.
            EncoderVersionMismatchError: ``encoder_version`` differs from the index's.
            IndexLockedError: Another process held the write lock past ``NAR_LOCK_TIMEOUT``.
        """
        meta = dict(
            source_kind=source_kind, uri=uri, graph_hash=graph_hash, encoder_version=encoder_version,
            params_count=params_count, family_guess=family_guess, metadata=metadata,
        )
        return self._write_many([_make_item(key, vector, meta, self.dim)], "upsert")[0]

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
        return self._write_many((_coerce_item(it, self.dim) for it in items), "upsert" if upsert else "add")

    def remove(self, key: str) -> bool:
        """Remove an entry. Its id is never reused.

        Args:
            key: Key to remove.

        Returns:
            True if the key was indexed, False if it was not.

        Raises:
            IndexLockedError: Another process held the write lock past ``NAR_LOCK_TIMEOUT``.
        """
        with self._transaction() as txn:
            row = txn.conn.execute("SELECT id FROM entries WHERE key=?", (key,)).fetchone()
            if row is None:
                return False
            txn.conn.execute("DELETE FROM entries WHERE id=?", (row[0],))
            txn.conn.execute("INSERT OR REPLACE INTO tombstones(id, rev) VALUES (?, ?)", (row[0], txn.gen))
            txn.changed = True
            return True

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> IndexEntry:
        vec = np.frombuffer(row[2], dtype=_VEC_DTYPE).astype(np.float32, copy=False)
        return IndexEntry(
            id=int(row[0]), key=row[1], vector=vec, source_kind=row[3], uri=row[4], graph_hash=row[5],
            encoder_version=row[6], params_count=row[7], family_guess=row[8], created_at=row[9],
            updated_at=row[10], metadata=json.loads(row[11]) if row[11] else {},
        )

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            conn = self._refresh_connection()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _corrupt_from(exc, self.db_path) or exc from None

    def get(self, key: str) -> IndexEntry | None:
        """Look up an entry by key.

        Args:
            key: The key.

        Returns:
            The entry, or ``None`` if the key is not indexed.
        """
        rows = self._query(f"SELECT {_SELECT} FROM entries WHERE key=?", (key,))
        return self._entry(rows[0]) if rows else None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return bool(self._query("SELECT 1 FROM entries WHERE key=?", (key,)))

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM entries")[0][0])

    def keys(self) -> list[str]:
        """All keys, in id (insertion) order.

        Returns:
            The list of keys.
        """
        return [r[0] for r in self._query("SELECT key FROM entries ORDER BY id")]

    def entries(self) -> Iterator[IndexEntry]:
        """Iterate over all entries in id order, from one consistent snapshot.

        Uses its own read-only connection and reads in blocks, so memory stays bounded and
        concurrent writers are neither blocked nor seen half-way.

        Returns:
            An iterator of :class:`IndexEntry`.
        """
        with self._mutex:
            self._refresh_connection()
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")
            cur = conn.execute(f"SELECT {_SELECT} FROM entries ORDER BY id")
            while True:
                rows = cur.fetchmany(_READ_BLOCK)
                if not rows:
                    break
                for row in rows:
                    yield self._entry(row)
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise _corrupt_from(exc, self.db_path) or exc from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ FAISS cache

    def _generation(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT value FROM info WHERE name='generation'").fetchone()[0])

    def _ensure_current(self) -> None:
        """Make the in-memory FAISS index reflect the latest committed generation."""
        conn = self._refresh_connection()
        try:
            gen = self._generation(conn)
            if self._faiss is not None and gen == self._faiss_gen:
                return
            if self._faiss is None:
                self._load_or_build()
            elif self._lag(conn, self._faiss_gen) > max(10_000, self._faiss.ntotal):
                self._build_from_db()  # a bulk load elsewhere: one build beats a huge catch-up
            else:
                self._catch_up(conn)
            self._maybe_retype()
        except sqlite3.DatabaseError as exc:
            raise _corrupt_from(exc, self.db_path) or exc from None
        self._maybe_save()

    @staticmethod
    def _lag(conn: sqlite3.Connection, since: int) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM entries WHERE rev > ?", (since,)).fetchone()[0])

    def _catch_up(self, conn: sqlite3.Connection, *, count: bool = False) -> int:
        """Apply rows and tombstones newer than the cache's generation (one snapshot).

        Returns:
            The number of entries in that snapshot if ``count``, else -1.
        """
        assert self._faiss is not None
        conn.execute("BEGIN")
        try:
            gen = self._generation(conn)
            rows = conn.execute("SELECT id, vector FROM entries WHERE rev > ? ORDER BY id", (self._faiss_gen,)).fetchall()
            dead = [r[0] for r in conn.execute("SELECT id FROM tombstones WHERE rev > ?", (self._faiss_gen,))]
            total = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]) if count else -1
        finally:
            conn.execute("COMMIT")
        changed = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        stale = np.concatenate([np.asarray(dead, dtype=np.int64), changed[changed <= self._max_id]])
        _remove_ids(self._faiss, stale)
        if len(rows):
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=_VEC_DTYPE).reshape(len(rows), self.dim)
            self._faiss.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), changed)
            self._max_id = max(self._max_id, int(changed.max()))
        self._faiss_gen = gen
        self._pending += len(rows) + len(dead)
        if rows or dead:
            logger.debug("index %s: applied %d rows, %d removals up to generation %d", self.path, len(rows), len(dead), gen)
        return total

    def _snapshot(self, conn: sqlite3.Connection) -> tuple[int, np.ndarray, np.ndarray]:
        """Read (generation, ids, vectors) of all entries from one snapshot."""
        conn.execute("BEGIN")
        try:
            gen = self._generation(conn)
            n = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            ids = np.empty(n, dtype=np.int64)
            vecs = np.empty((n, self.dim), dtype=np.float32)
            cur = conn.execute("SELECT id, vector FROM entries ORDER BY id")
            pos = 0
            while True:
                rows = cur.fetchmany(_READ_BLOCK)
                if not rows:
                    break
                m = len(rows)
                ids[pos : pos + m] = [r[0] for r in rows]
                vecs[pos : pos + m] = np.frombuffer(b"".join(r[1] for r in rows), dtype=_VEC_DTYPE).reshape(m, self.dim)
                pos += m
        finally:
            conn.execute("COMMIT")
        return gen, ids, vecs

    def _build_from_db(self, params: AnnParams | None = None) -> None:
        conn = self._refresh_connection()
        t0 = time.perf_counter()
        gen, ids, vecs = self._snapshot(conn)
        params = params or choose_ann_params(len(ids))
        self._faiss = build_ann_index(vecs, ids, params)
        self._params = params
        self._faiss_gen = gen
        self._max_id = int(ids.max()) if len(ids) else 0
        self._trained_n = len(ids)
        self._pending = len(ids) + 1  # force a save
        self._disk_gen = -1
        logger.info(
            "index %s: built %s cache over %d entries in %.2f s", self.path, params.describe(), len(ids), time.perf_counter() - t0
        )

    def _load_or_build(self) -> None:
        conn = self._refresh_connection()
        loaded = self._read_cache()
        if loaded is not None:
            index, meta = loaded
            db_gen = self._generation(conn)
            cache_gen = int(meta.get("generation", -1))
            reason = None
            if meta.get("uid") != self._uid:
                reason = "it belongs to another database"
            elif int(meta.get("dim", -1)) != self.dim or index.d != self.dim:
                reason = "its dimension differs"
            elif cache_gen > db_gen:
                reason = f"it is from generation {cache_gen}, newer than the database ({db_gen})"
            elif index.ntotal != int(meta.get("count", -1)):
                reason = "its row count does not match its sidecar"
            else:
                lag = self._lag(conn, cache_gen)
                if lag > max(10_000, index.ntotal):
                    reason = f"it lags {lag} rows behind"
            if reason is None:
                self._faiss = index
                self._params = ann_params_of(index)
                self._faiss_gen = self._disk_gen = cache_gen
                self._max_id = int(meta.get("max_id", 0))
                self._trained_n = int(meta.get("trained_n", index.ntotal))
                self._pending = 0
                total = self._catch_up(conn, count=True)
                if self._faiss.ntotal == total:
                    return
                reason = f"after catching up it holds {self._faiss.ntotal} vectors, the database {total}"
            logger.warning("index %s: FAISS cache is stale (%s); rebuilding it from SQLite", self.path, reason)
        self._build_from_db()
        self._disk_bad = True

    def _maybe_retype(self) -> None:
        assert self._faiss is not None
        n = self._faiss.ntotal
        p = self._params
        target: AnnParams | None = None
        if p.kind == "flat" and n >= APPROX_THRESHOLD:
            target = choose_ann_params(n)
        elif p.kind == "ivf" and n < APPROX_THRESHOLD // 2:  # hysteresis: no flapping at the threshold
            target = AnnParams("flat")
        elif p.kind == "ivf" and n > _RETRAIN_GROWTH * max(self._trained_n, 1):
            target = choose_ann_params(n)
        if target is not None:
            logger.info("index %s: %d entries; switching cache from %s to %s", self.path, n, p.describe(), target.describe())
            self._build_from_db(target if target.kind == "flat" else None)

    def _read_cache(self) -> tuple[faiss.Index, dict[str, Any]] | None:
        fpath, spath = self.path / _FAISS_NAME, self.path / _SIDECAR_NAME
        for _attempt in range(3):
            try:
                meta = json.loads(spath.read_text())
                data = np.fromfile(fpath, dtype=np.uint8)
            except FileNotFoundError:
                logger.info("index %s: no FAISS cache yet; building it", self.path)
                return None
            except (OSError, ValueError) as exc:
                logger.warning("index %s: unreadable FAISS cache (%s); rebuilding it", self.path, exc)
                return None
            if not isinstance(meta, dict):
                logger.warning("index %s: malformed FAISS sidecar; rebuilding the cache", self.path)
                return None
            if len(data) != meta.get("size") or zlib.crc32(memoryview(data)) != meta.get("crc32"):
                # a concurrent save may have replaced the file between the two reads: retry
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(spath.read_text()) != meta:
                        continue
                logger.warning(
                    "index %s: FAISS cache is truncated or corrupt (size/CRC32 mismatch); rebuilding it", self.path
                )
                return None
            try:
                return faiss.deserialize_index(data), meta
            except RuntimeError as exc:
                logger.warning("index %s: FAISS cache does not load (%s); rebuilding it", self.path, str(exc)[:200])
                return None
        logger.warning("index %s: FAISS cache kept changing while being read; rebuilding it", self.path)
        return None

    def _maybe_save(self, force: bool = False) -> bool:
        """Write the cache file if it lags enough (never blocks: skips if another process saves)."""
        if self._faiss is None or self._faiss_gen <= self._disk_gen:
            return False
        n = self._faiss.ntotal
        if not force and self._pending < max(256, n // 50) and self._disk_gen >= 0:
            return False
        try:
            self._cache_lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        try:
            spath = self.path / _SIDECAR_NAME
            with contextlib.suppress(OSError, ValueError, TypeError):
                meta = json.loads(spath.read_text())
                fresh = meta.get("uid") == self._uid and int(meta.get("generation", -1)) >= self._faiss_gen
                if fresh and not self._disk_bad and (self.path / _FAISS_NAME).stat().st_size == meta.get("size"):
                    self._disk_gen = self._faiss_gen
                    self._pending = 0
                    return False
            self._save_cache()
            return True
        finally:
            self._cache_lock.release()

    def _save_cache(self) -> None:
        """Atomically write ``vectors.faiss`` then its sidecar (caller holds the cache lock)."""
        assert self._faiss is not None
        fpath, spath = self.path / _FAISS_NAME, self.path / _SIDECAR_NAME
        for stale in self.path.glob(f"{_FAISS_NAME}*.tmp-*"):  # left by a killed saver
            with contextlib.suppress(OSError):
                stale.unlink()
        tag = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ftmp, stmp = fpath.with_name(f"{fpath.name}.{tag}"), spath.with_name(f"{spath.name}.{tag}")
        try:
            data = faiss.serialize_index(self._faiss)
            with open(ftmp, "wb") as fh:
                fh.write(memoryview(data))
                fh.flush()
                os.fsync(fh.fileno())
            meta = {
                "format_version": FORMAT_VERSION,
                "uid": self._uid,
                "generation": self._faiss_gen,
                "count": int(self._faiss.ntotal),
                "dim": self.dim,
                "kind": self._params.kind,
                "nlist": self._params.nlist,
                "nprobe": self._params.nprobe,
                "trained_n": self._trained_n,
                "max_id": self._max_id,
                "encoder_version": self._encoder_version,
                "size": int(len(data)),
                "crc32": zlib.crc32(memoryview(data)),
                "saved_at": _now(),
            }
            del data
            stmp.write_text(json.dumps(meta))
            os.replace(ftmp, fpath)
            os.replace(stmp, spath)
            _fsync_dir(self.path)
        finally:
            for tmp in (ftmp, stmp):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._disk_gen = self._faiss_gen
        self._disk_bad = False
        self._pending = 0
        logger.debug("index %s: saved FAISS cache at generation %d", self.path, self._faiss_gen)

    # ------------------------------------------------------------------ search

    def _compile_filter(self, flt: Filter) -> tuple[str | None, list[Any], Callable[[IndexEntry], bool] | None]:
        if flt is None:
            return None, [], None
        if isinstance(flt, str):
            if not flt:
                return None, [], None
            last = ord(flt[-1])
            if last < 0xD7FF:  # key range scan on the unique index (BINARY collation = UTF-8 order)
                return "key >= ? AND key < ?", [flt, flt[:-1] + chr(last + 1)], None
            return "substr(key, 1, ?) = ?", [len(flt), flt], None
        if isinstance(flt, Mapping):
            clauses: list[str] = []
            params: list[Any] = []
            for col, val in flt.items():
                if col not in _FILTER_COLUMNS:
                    raise InvalidQueryError(f"cannot filter on {col!r}; expected one of {', '.join(_FILTER_COLUMNS)}")
                if val is None:
                    clauses.append(f"{col} IS NULL")
                elif isinstance(val, (list, tuple, set, frozenset)):
                    vals = list(val)
                    clauses.append(f"{col} IN ({', '.join('?' for _ in vals)})" if vals else "0")
                    params.extend(vals)
                else:
                    clauses.append(f"{col} = ?")
                    params.append(val)
            return (" AND ".join(clauses) or None), params, None
        if callable(flt):
            return None, [], flt
        raise InvalidQueryError(
            f"filter must be a dict of column values, a key prefix str or a callable(entry) -> bool; found {type(flt).__name__}"
        )

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
        hits are sorted by decreasing score. Below :data:`APPROX_THRESHOLD` entries the search
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
                of ``nprobe`` of them; no effect below :data:`APPROX_THRESHOLD` entries.

        Returns:
            Up to ``k`` :class:`SearchHit`, best first.

        Raises:
            InvalidVectorError: The query has the wrong shape or is not finite / all zeros.
            InvalidQueryError: ``k`` < 1 or a malformed ``filter``.
        """
        query = _as_unit(vector, self.dim, "query vector")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidQueryError(f"k must be a positive int, found {k!r}")
        k = int(k)
        excl = frozenset([exclude_keys]) if isinstance(exclude_keys, str) else frozenset(exclude_keys)
        where, params, pred = self._compile_filter(filter)
        with self._mutex:
            self._ensure_current()
            assert self._faiss is not None
            n = int(self._faiss.ntotal)
            if n == 0:
                return []
            try:
                if where is not None:
                    matching = int(self._query(f"SELECT COUNT(*) FROM entries WHERE {where}", params)[0][0])
                    if matching == 0:
                        return []
                    if matching <= max(_EXACT_SUBSET_MAX, 4 * k):
                        return self._exact_search(query, k, where, params, pred, excl)
                return self._ann_filtered(query, k, n, where, params, pred, excl, exact=exact)
            except sqlite3.DatabaseError as exc:
                raise _corrupt_from(exc, self.db_path) or exc from None

    def _fetch(self, ids: list[int], where: str | None, params: list[Any]) -> dict[int, IndexEntry]:
        out: dict[int, IndexEntry] = {}
        for start in range(0, len(ids), 900):  # stay below SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            sql = f"SELECT {_SELECT} FROM entries WHERE id IN ({', '.join('?' for _ in chunk)})"
            if where:
                sql += f" AND ({where})"
            for row in self._query(sql, [*chunk, *params]):
                out[int(row[0])] = self._entry(row)
        return out

    def _ann_filtered(
        self,
        query: np.ndarray,
        k: int,
        n: int,
        where: str | None,
        params: list[Any],
        pred: Callable[[IndexEntry], bool] | None,
        excl: frozenset[str],
        *,
        exact: bool = False,
    ) -> list[SearchHit]:
        assert self._faiss is not None
        filtered = where is not None or pred is not None
        fetch = min(n, k + len(excl)) if not filtered else min(n, max(4 * (k + len(excl)), 32))
        ivf = self._params.kind == "ivf"
        nlist = int(self._faiss.nlist) if ivf else 0
        nprobe = (nlist if exact else int(self._faiss.nprobe)) if ivf else 0
        verdict: dict[int, SearchHit | None] = {}  # id -> hit (passes) or None (rejected)
        while True:
            scores, ids = ann_search(self._faiss, query[None, :], fetch, nprobe=nprobe or None)
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            new = [i for i, _ in found if i not in verdict]
            entries = self._fetch(new, where, params)
            for i in new:
                entry = entries.get(i)
                ok = entry is not None and entry.key not in excl and (pred is None or bool(pred(entry)))
                verdict[i] = SearchHit(entry.key, i, 0.0, entry) if ok and entry is not None else None
            hits = []
            for i, s in found:
                hit = verdict[i]
                if hit is not None:
                    hits.append(SearchHit(hit.key, i, s, hit.entry))
                    if len(hits) == k:
                        return hits
            all_lists = not ivf or nprobe >= nlist
            if len(found) < fetch and all_lists or fetch >= n and all_lists:
                return hits  # everything was looked at
            if fetch >= _WIDEN_LIMIT:
                return self._exact_search(query, k, where, params, pred, excl)
            if len(found) >= fetch:
                fetch = min(n, fetch * 4)
            if ivf:
                nprobe = min(nlist, nprobe * 2)

    def _exact_search(
        self,
        query: np.ndarray,
        k: int,
        where: str | None,
        params: list[Any],
        pred: Callable[[IndexEntry], bool] | None,
        excl: frozenset[str],
    ) -> list[SearchHit]:
        """Exact scan over the (filtered) rows in SQLite, block by block."""
        best: list[SearchHit] = []
        conn = self._refresh_connection()
        sql = f"SELECT {_SELECT} FROM entries" + (f" WHERE {where}" if where else "")
        conn.execute("BEGIN")
        try:
            cur = conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(_READ_BLOCK)
                if not rows:
                    break
                vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype=_VEC_DTYPE).reshape(len(rows), self.dim)
                scores = vecs @ query
                floor = best[-1].score if len(best) >= k else -np.inf
                for j in np.argsort(-scores, kind="stable"):
                    s = float(scores[j])
                    if s < floor:
                        break
                    row = rows[j]
                    if row[1] in excl:
                        continue
                    entry = self._entry(row)
                    if pred is not None and not pred(entry):
                        continue
                    best.append(SearchHit(entry.key, entry.id, s, entry))
                    if len(best) >= k:
                        best.sort(key=lambda h: (-h.score, h.id))
                        del best[k:]
                        floor = best[-1].score
        finally:
            conn.execute("COMMIT")
        best.sort(key=lambda h: (-h.score, h.id))
        return best[:k]

    # ------------------------------------------------------------------ maintenance

    def stats(self) -> dict[str, Any]:
        """Summary of the index.

        Returns:
            A dict with ``count``, ``dim``, ``encoder_version``, ``index_type`` (e.g.
            ``"Flat (exact)"`` or ``"IVF4096,Flat (nprobe=64)"``), ``path``, ``size_bytes``
            (all index files on disk), ``sqlite_bytes``, ``faiss_bytes``, ``generation``,
            ``cache_generation`` (what the cache file on disk reflects) and ``format_version``.
        """
        with self._mutex:
            self._ensure_current()
            count = len(self)

            def size(*names: str) -> int:
                total = 0
                for name in names:
                    with contextlib.suppress(OSError):
                        total += (self.path / name).stat().st_size
                return total

            sqlite_bytes = size(_DB_NAME, f"{_DB_NAME}-wal", f"{_DB_NAME}-shm")
            faiss_bytes = size(_FAISS_NAME, _SIDECAR_NAME)
            return {
                "count": count,
                "dim": self.dim,
                "encoder_version": self._encoder_version,
                "index_type": self._params.describe(),
                "path": str(self.path),
                "size_bytes": sqlite_bytes + faiss_bytes,
                "sqlite_bytes": sqlite_bytes,
                "faiss_bytes": faiss_bytes,
                "generation": self._faiss_gen,
                "cache_generation": self._disk_gen,
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
        """
        with self._mutex:
            if entries_iterable is not None:
                self._replace_from(entries_iterable, self._requested_encoder)
                return
            self._refresh_connection()
            self._build_from_db()
            timeout = self._lock_timeout()
            try:
                self._cache_lock.acquire(timeout=timeout)
            except filelock.Timeout:
                raise IndexLockedError(
                    f"could not lock the FAISS cache of {self.path} within {timeout:g} s (raise NAR_LOCK_TIMEOUT)"
                ) from None
            try:
                self._save_cache()
            finally:
                self._cache_lock.release()

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
            The new, open index.

        Raises:
            IndexLockedError: The lock timed out.
            KeyExistsError, InvalidVectorError, EncoderVersionMismatchError: Bad ``entries``;
                nothing on disk is changed.
        """
        self = cls.__new__(cls)
        self.path = Path(path).expanduser() if path is not None else nar_home() / "index"
        self.dim = int(dim)
        self._verify = True
        self._requested_encoder = encoder_version
        self._mutex = threading.RLock()
        self._lock = filelock.FileLock(str(self.path / _LOCK_NAME))
        self._cache_lock = filelock.FileLock(str(self.path / _CACHE_LOCK_NAME))
        self._conn = None
        self._db_ino = None
        self._uid = ""
        self._encoder_version = None
        self._reset_cache_state()
        self.path.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            self._replace_from(entries, encoder_version)
        return self

    def _replace_from(self, entries: Iterable[Any], encoder_version: str | None) -> None:
        db = self.db_path
        tmp = self._create_db(
            db.with_name(f"{db.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"), encoder_version, announce=False
        )
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                txn = _Txn(conn, 1)
                count = 0
                for item in entries:
                    _write_item(txn, _coerce_item(item, self.dim), "restore", f"index at {self.path}")
                    count += 1
                conn.execute("UPDATE info SET value='1' WHERE name='generation'")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.close()
            with self._write_lock():
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                status = "bak" if self._db_readable(db) else "corrupt"
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                moved = []
                for name in (_DB_NAME, f"{_DB_NAME}-wal", f"{_DB_NAME}-shm", _FAISS_NAME, _SIDECAR_NAME):
                    src = self.path / name
                    if src.exists():
                        os.replace(src, self.path / f"{name}.{status}-{stamp}")
                        moved.append(name)
                os.replace(tmp, db)
                _fsync_dir(self.path)
            if moved:
                logger.warning(
                    "index %s: recreated from %d entries; previous files moved aside as <name>.%s-%s",
                    self.path, count, status, stamp,
                )
            else:
                logger.info("index %s: created from %d entries", self.path, count)
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{tmp}{suffix}").unlink()
        self._reset_cache_state()
        self._db_ino = None
        self._connect()
        self._ensure_current()

    @staticmethod
    def _db_readable(db: Path) -> bool:
        if not db.exists():
            return True
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                ok = conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                return ok and _REQUIRED_TABLES <= tables
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return False

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
        out = Path(path)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        count = 0
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                header = {
                    "format": "nar-index-export",
                    "format_version": FORMAT_VERSION,
                    "dim": self.dim,
                    "encoder_version": self._encoder_version,
                    "exported_at": _now(),
                }
                fh.write(json.dumps(header) + "\n")
                for entry in self.entries():
                    fh.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
                    count += 1
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        logger.info("index %s: exported %d entries to %s", self.path, count, out)
        return count


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
            if obj.get("format") == "nar-index-export":
                if int(obj.get("dim", dim)) != dim:
                    raise CorruptArtifactError(f"{src}: export holds dim={obj.get('dim')} vectors, expected dim={dim}", path=str(src))
                continue
            if "key" not in obj or "vector" not in obj:
                raise CorruptArtifactError(f"{src}:{lineno}: an entry needs 'key' and 'vector'", path=str(src))
            try:
                vec = decode_embedding(obj["vector"], dim=dim)
            except ValueError as exc:
                raise type(exc)(f"{src}:{lineno}: {exc}") from None
            yield IndexEntry(
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
