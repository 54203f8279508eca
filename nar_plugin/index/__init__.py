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

Modules, one job each (dependencies point up this list only; nothing outside ``errors``,
``config`` and ``utils`` is imported)::

    codec        text form of an embedding (``nar1:...``)
    entries      IndexEntry, SearchHit, validation of keys / vectors / metadata
    locks        the file locks and NAR_LOCK_TIMEOUT
    readonly     folders this process may not write: read-only opening, the refusal to write
    ann          FAISS index types: choose, build, search (shared with benchmarks/index.py)
    schema       SQLite file format: schema, creation, validation, corruption mapping
    database     the live connection: reconnects after a restore, write transactions, reads
    rows         the one write path (add, upsert, restore) and row -> IndexEntry
    filters      search filters -> SQL condition and/or predicate
    faiss_cache  the FAISS cache: load, catch up across processes, retype, save
    query        search strategy: exact subset, over-fetching ANN, exact fallback
    backup       export, import_jsonl, restore
    store        EmbeddingIndex, the facade
    weights      weight fingerprints beside the entries (opaque blobs, content-addressed)
    handles      open_index: one shared handle per directory per process

The names below are imported lazily, so ``import nar_plugin.index.codec`` does not load FAISS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nar_plugin.index.ann import (
        APPROX_THRESHOLD,
        AnnParams,
        ann_params_of,
        ann_search,
        build_ann_index,
        choose_ann_params,
    )
    from nar_plugin.index.backup import import_jsonl
    from nar_plugin.index.entries import IndexEntry, SearchHit
    from nar_plugin.index.filters import Filter
    from nar_plugin.index.handles import close_all, open_index
    from nar_plugin.index.schema import FORMAT_VERSION
    from nar_plugin.index.store import EmbeddingIndex

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
    "Filter",
    "import_jsonl",
    "open_index",
    "close_all",
]

#: public name -> submodule that defines it
_HOME = {
    "FORMAT_VERSION": "schema",
    "APPROX_THRESHOLD": "ann",
    "AnnParams": "ann",
    "choose_ann_params": "ann",
    "build_ann_index": "ann",
    "ann_search": "ann",
    "ann_params_of": "ann",
    "IndexEntry": "entries",
    "SearchHit": "entries",
    "EmbeddingIndex": "store",
    "Filter": "filters",
    "import_jsonl": "backup",
    "open_index": "handles",
    "close_all": "handles",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    if name != "APPROX_THRESHOLD":  # a setting read at call time from .ann: never cache a copy
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
