"""Benchmark of the EmbeddingIndex FAISS layer: exact (Flat) vs approximate (IVF) search.

Measures, at each size and on two data sets of unit vectors (D=128):

* ``clustered`` — realistic: a two-level Gaussian mixture (families -> >= 1,000 architecture
  clusters -> variants on a low-rank manifold per cluster, log-normal cluster sizes), with the
  spread chosen so that exact nearest neighbours are mostly in the query's own cluster (the
  fraction is printed as ``nn_in_cluster``), as with real architecture embeddings;
* ``uniform`` — uniform on the sphere, the worst case for any partitioning index.

For each: build time, index bytes (serialised size), single-query latency p50/p99 for k=10 over
1,000 held-out queries, recall@10 of IVF vs exact, and the speed ratio (exact p50 / IVF p50,
where exact p50 is the faster of the 2-thread and 1-thread timings).
It calls the same functions EmbeddingIndex uses (``choose_ann_params``, ``build_ann_index``,
``ann_search``), plus an end-to-end ``EmbeddingIndex.search`` timing on the clustered set.

Usage::

    .venv/bin/python benchmarks/index.py                       # 10k, 100k, 1M
    .venv/bin/python benchmarks/index.py --sizes 10000,100000  # shorter
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import faiss
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nar_plugin.index import (  # noqa: E402 - after the path tweak for running from a checkout
    AnnParams,
    EmbeddingIndex,
    ann_search,
    build_ann_index,
    choose_ann_params,
)

DIM = 128
K = 10


@dataclass
class Row:
    dataset: str
    n: int
    method: str
    build_s: float
    index_bytes: int
    p50_ms: float
    p99_ms: float
    recall: float
    speedup: float
    note: str = ""


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-level mixture: families -> clusters (>= 1,000) -> points on a per-cluster 16-d subspace.

    Returns:
        (base, base_cluster, queries, query_cluster); queries are fresh draws from the clusters.
    """
    n_clusters = max(1000, n // 500)
    n_families = max(50, n_clusters // 20)
    fam = _unit(rng.standard_normal((n_families, DIM)))
    fam_of = rng.integers(0, n_families, n_clusters)
    # cluster centres scattered around their family centre (cosine ~0.6-0.7 to it)
    centres = _unit(fam[fam_of] + 1.2 * rng.standard_normal((n_clusters, DIM)) / np.sqrt(DIM))
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    total = n + n_queries
    sizes = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(np.int64)
    while sizes.sum() < total:
        sizes[rng.integers(0, n_clusters)] += 1
    while sizes.sum() > total:
        j = rng.integers(0, n_clusters)
        if sizes[j] > 1:
            sizes[j] -= 1
    rank = 16
    spread = rng.uniform(0.35, 0.6, n_clusters)
    out = np.empty((total, DIM), dtype=np.float32)
    labels = np.repeat(np.arange(n_clusters), sizes)
    pos = 0
    for c in range(n_clusters):
        m = int(sizes[c])
        basis = rng.standard_normal((rank, DIM)).astype(np.float32) / np.sqrt(DIM)
        scales = np.linspace(1.6, 0.4, rank).astype(np.float32)  # anisotropic, like learned manifolds
        z = rng.standard_normal((m, rank)).astype(np.float32) * scales
        noise = 0.08 * rng.standard_normal((m, DIM)).astype(np.float32) / np.sqrt(DIM)
        out[pos : pos + m] = centres[c] + spread[c] * (z @ basis) + noise
        pos += m
    out = _unit(out)
    perm = rng.permutation(total)
    out, labels = out[perm], labels[perm]
    return out[:n], labels[:n], out[n:], labels[n:]


def uniform(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, None, np.ndarray, None]:
    """Uniform on the unit sphere (worst case)."""
    x = _unit(rng.standard_normal((n + n_queries, DIM)).astype(np.float32))
    return x[:n], None, x[n:], None


def latencies(index: faiss.Index, queries: np.ndarray, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Single-query search one query at a time; returns (latencies in ms, ids (nq, K))."""
    lat = np.empty(len(queries))
    ids = np.empty((len(queries), K), dtype=np.int64)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t0 = time.perf_counter_ns()
        _, found = ann_search(index, q, K, nprobe=nprobe)
        lat[i] = (time.perf_counter_ns() - t0) / 1e6
        ids[i] = found[0]
    return lat, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth))
    return hits / truth.size


def run_one(
    name: str,
    n: int,
    base: np.ndarray,
    labels: np.ndarray | None,
    queries: np.ndarray,
    qlabels: np.ndarray | None,
    sweep: list[int],
) -> list[Row]:
    ids = np.arange(1, n + 1, dtype=np.int64)  # SQLite ids start at 1
    rows: list[Row] = []
    t0 = time.perf_counter()
    exact = build_ann_index(base, ids, AnnParams("flat"))
    exact_build = time.perf_counter() - t0
    _, truth = exact.search(queries, K)
    lat_exact, _ = latencies(exact, queries)
    # On a loaded machine two OpenMP threads can make one flat query much slower (a barrier
    # waits for a descheduled thread), so the exact baseline is also timed single-threaded and
    # the speed ratio uses the faster of the two: a conservative ratio.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    lat_exact1, _ = latencies(exact, queries)
    faiss.omp_set_num_threads(threads)
    exact_p50 = min(float(np.median(lat_exact)), float(np.median(lat_exact1)))
    used = choose_ann_params(n)
    note = ""
    if labels is not None and qlabels is not None:
        in_cluster = float(np.mean(labels[truth - 1] == qlabels[:, None]))
        note = f"nn_in_cluster={in_cluster:.2f}"
    exact_bytes = len(faiss.serialize_index(exact))
    star = " *" if used.kind == "flat" else ""
    for label, lat in ((f"exact Flat{star}", lat_exact), ("exact Flat, 1 thread", lat_exact1)):
        p50 = float(np.median(lat))
        rows.append(
            Row(name, n, label, exact_build, exact_bytes, p50, float(np.percentile(lat, 99)), 1.0, exact_p50 / p50, note)
        )
        note = ""
    params = choose_ann_params(n, threshold=0)
    t0 = time.perf_counter()
    approx = build_ann_index(base, ids, params)
    build = time.perf_counter() - t0
    nbytes = len(faiss.serialize_index(approx))
    for nprobe in sorted({params.nprobe, *sweep}):
        if nprobe > params.nlist:
            continue
        lat, found = latencies(approx, queries, nprobe=nprobe)
        p50 = float(np.median(lat))
        default = nprobe == params.nprobe
        method = f"IVF{params.nlist} nprobe={nprobe}" + (" *" if default and used.kind == "ivf" else "") + (
            "" if default else " (sweep)")
        rows.append(
            Row(name, n, method, build, nbytes, p50, float(np.percentile(lat, 99)), recall_at_k(found, truth),
                exact_p50 / p50)
        )
    del exact, approx
    return rows


def end_to_end(n: int, base: np.ndarray, queries: np.ndarray) -> str:
    """Time EmbeddingIndex.add_many + open (cache build) + search(k=10) on the clustered set."""
    with tempfile.TemporaryDirectory(prefix="nar-bench-") as tmp:
        t0 = time.perf_counter()
        idx = EmbeddingIndex(tmp, encoder_version="bench")
        for start in range(0, n, 50_000):
            idx.add_many((f"bench:{i}", base[i]) for i in range(start, min(n, start + 50_000)))
        t_add = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx.search(queries[0], k=K)  # catches up / builds the FAISS cache
        t_cache = time.perf_counter() - t0
        lat = np.empty(len(queries))
        for i, q in enumerate(queries):
            t1 = time.perf_counter_ns()
            idx.search(q, k=K)
            lat[i] = (time.perf_counter_ns() - t1) / 1e6
        stats = idx.stats()
        idx.close()
        t0 = time.perf_counter()
        reopened = EmbeddingIndex(tmp)
        t_open = time.perf_counter() - t0
        reopened.close()
    return (
        f"| {n:,} | {stats['index_type']} | {t_add:.1f} | {t_cache:.1f} | {t_open:.2f} | "
        f"{np.median(lat):.2f} | {np.percentile(lat, 99):.2f} | {stats['size_bytes'] / 2**20:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated index sizes")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", default="16,32,64,256", help="extra IVF nprobe values to report")
    parser.add_argument("--datasets", default="clustered,uniform")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end EmbeddingIndex timing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    faiss.omp_set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sweep = [int(s) for s in args.sweep.split(",") if s]
    print(f"# faiss {faiss.__version__}, {args.threads} threads, D={DIM}, k={K}, {args.queries} single queries, seed {args.seed}")
    print("| data | n | method | build s | index MiB | p50 ms | p99 ms | recall@10 | speed vs exact | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    e2e: list[str] = []
    for n in sizes:
        for name in args.datasets.split(","):
            rng = np.random.default_rng(args.seed + n)
            if name == "clustered":
                base, labels, queries, qlabels = clustered(n, args.queries, rng)
            else:
                base, labels, queries, qlabels = uniform(n, args.queries, rng)
            for r in run_one(name, n, base, labels, queries, qlabels, sweep):
                print(
                    f"| {r.dataset} | {r.n:,} | {r.method} | {r.build_s:.2f} | {r.index_bytes / 2**20:.1f} | "
                    f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.recall:.3f} | {r.speedup:.1f}x | {r.note} |",
                    flush=True,
                )
            if name == "clustered" and not args.no_e2e:
                e2e.append(end_to_end(n, base, queries))
            del base, queries
    if e2e:
        print()
        print("End to end (EmbeddingIndex, clustered): add_many into SQLite, first search (builds the FAISS")
        print("cache), reopen (loads the cache), search(k=10) latency")
        print()
        print("| n | index | add_many s | cache build s | reopen s | p50 ms | p99 ms | on disk MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for line in e2e:
            print(line)
    print()
    print("* = the index type EmbeddingIndex uses at that size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
