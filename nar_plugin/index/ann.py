"""The FAISS layer: which index type to build for n vectors, how to build and search it.

Shared with ``benchmarks/index.py`` so that the benchmark measures the code path the index runs.
Exact (``IndexIDMap2(IndexFlatIP)``) below :data:`APPROX_THRESHOLD` entries; above, an inverted
file with exact float32 storage (``IndexIVFFlat``, spherical k-means, inner product). IVFFlat
keeps full vectors, so its scores are exact inner products; only the candidate set is
approximate. IVF (unlike HNSW) supports removal, which ``remove``/``upsert`` need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from nar_plugin.errors import InvalidQueryError, InvalidVectorError

__all__ = [
    "APPROX_THRESHOLD",
    "RETRAIN_GROWTH",
    "AnnParams",
    "choose_ann_params",
    "build_ann_index",
    "ann_params_of",
    "ann_search",
    "remove_ids",
]

#: From this many entries on, the FAISS cache is an approximate (IVF) index instead of exact.
#: Read at call time (tests lower it with ``monkeypatch.setattr(nar_plugin.index.ann, ...)``).
APPROX_THRESHOLD = 100_000
#: An IVF cache is retrained once the index has grown this much since training.
RETRAIN_GROWTH = 4.0


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


def remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove ``ids`` from a FAISS index built by :func:`build_ann_index`; returns how many were there."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) == 0 or index.ntotal == 0:
        return 0
    if isinstance(index, faiss.IndexIVF):
        # the hashtable direct map only accepts an explicit id array
        return int(index.remove_ids(faiss.IDSelectorArray(ids)))
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))
