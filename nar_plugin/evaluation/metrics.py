"""Retrieval metrics for architecture embeddings (one module, used by every method we report).

Protocol (DESIGN.md, "Corpus and evaluation"): every query item ranks the gallery items by
similarity (larger = closer), itself excluded; an item is *relevant* when it has the query's
family label. For each cut-off ``k`` we report

* ``MRR@k``  -- reciprocal rank of the first relevant item if it is within the top ``k``, else 0;
* ``MAP@k``  -- sum over the relevant items within the top ``k`` of the precision at their rank,
  divided by ``min(#relevant, k)``;
* ``NDCG@k`` -- binary gain, discount ``1 / log2(rank + 1)``, divided by the ideal DCG truncated
  at ``k`` (``min(#relevant, k)`` relevant items on top).

Each metric is averaged over the queries that have at least one relevant item in their gallery;
the others are excluded and counted (``"skipped_queries"``).

Ties. Items with equal scores are ranked *fairly*: every metric is the exact expected value over
uniformly random orderings of each group of tied items (no sampling, no dependence on input
order). This matters for coarse baselines (identical op histograms tie exactly). The closed forms
used, for a tie group of ``m`` items holding ``h`` relevant ones that starts after ``a`` strictly
better items of which ``b`` are relevant, at offset ``i`` (1-based) inside the group:

* ``P(item at rank a+i is relevant) = h / m``                           (NDCG: linear in it)
* ``E[rel * #relevant in ranks <= a+i] = h/m * (b + 1 + (i-1)(h-1)/(m-1))`` (MAP)
* ``P(first relevant is at rank a+i) = [b = 0] * prod_{l<i-1} (m-h-l)/(m-l) * h/(m-i+1)`` (MRR)

Scores are rounded to ``decimals`` (default 6) before ties are detected, so that equal embeddings
compared through BLAS (whose last bit may depend on a column's position) still tie.

Memory is bounded: queries are processed in blocks of ``block_size`` rows against the gallery, so
``N`` up to a few tens of thousands works with a few tens of MB.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from nar_plugin.evaluation.splits import Split

__all__ = [
    "DEFAULT_KS",
    "METRIC_NAMES",
    "evaluate_split",
    "format_table",
    "iter_blocks",
    "retrieval_metrics",
]

logger = logging.getLogger(__name__)

#: Cut-offs reported by default (DESIGN.md: 20, 50, 100, and 10).
DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100)
#: Metric families, in table order.
METRIC_NAMES: tuple[str, ...] = ("MRR", "MAP", "NDCG")

#: Upper bound on the number of float64 scores held for one block (~32 MB).
_BLOCK_ELEMENTS = 1 << 22

Metric = Literal["cosine", "dot", "precomputed"]


def iter_blocks(n: int, block_size: int) -> Iterator[slice]:
    """Yield consecutive slices ``[start, stop)`` covering ``range(n)`` in blocks.

    Args:
        n: number of rows.
        block_size: rows per block (>= 1); the last block may be shorter.

    Returns:
        An iterator of ``slice`` objects.

    Raises:
        ValueError: ``block_size`` < 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, found {block_size}")
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))


def _encode_labels(labels: Sequence[Hashable] | np.ndarray, n: int) -> np.ndarray:
    """Map arbitrary hashable labels to dense int64 codes (first-seen order)."""
    if len(labels) != n:
        raise ValueError(f"expected {n} labels (one per item), found {len(labels)}")
    codes: dict[Hashable, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, lab in enumerate(labels.tolist() if isinstance(labels, np.ndarray) else labels):
        out[i] = codes.setdefault(lab, len(codes))
    return out


def _as_index(idx: Sequence[int] | np.ndarray | None, n: int, what: str) -> np.ndarray:
    if idx is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(idx)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D sequence of integer item indices, found dtype "
                         f"{arr.dtype} with shape {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{what} indices must lie in [0, {n}), found range "
                         f"[{arr.min()}, {arr.max()}]")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{what} indices must be unique")
    return arr


def _block_scores(
    data: np.ndarray, q: np.ndarray, gallery: np.ndarray, metric: Metric
) -> np.ndarray:
    """Similarity block ``(len(q), len(gallery))`` in float64 (larger = closer)."""
    if metric == "precomputed":
        return np.asarray(data[np.ix_(q, gallery)], dtype=np.float64)
    # ``data`` was normalised already for cosine; computing in float64 keeps ties stable
    return data[q] @ data[gallery].T


def _query_metrics(
    scores: np.ndarray, rel: np.ndarray, ks: tuple[int, ...]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fair (tie-averaged) metrics for a block of queries.

    Args:
        scores: ``(B, G)`` float64, finite except ``-inf`` for excluded items (self).
        rel: ``(B, G)`` bool relevance; ``False`` wherever ``scores`` is ``-inf``.
        ks: cut-offs.

    Returns:
        ``(R, metrics)``: ``R`` the number of relevant items per query ``(B,)`` and a dict
        ``"MRR@k"`` etc. -> ``(B,)`` per-query values (meaningless where ``R == 0``).
    """
    nb, g = scores.shape
    kmax = min(max(ks), g)
    num_rel = rel.sum(axis=1)
    # top-kmax items; every item scoring strictly above the kmax-th score is among them
    part = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    v = np.take_along_axis(top, order, axis=1)
    r = np.take_along_axis(rel, idx, axis=1).astype(np.float64)

    pos = np.arange(kmax)
    new = np.ones((nb, kmax), dtype=bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    last = np.ones((nb, kmax), dtype=bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos + 1, kmax)[:, ::-1], axis=1)[:, ::-1]
    cumrel = np.zeros((nb, kmax + 1))
    np.cumsum(r, axis=1, out=cumrel[:, 1:])
    before = np.take_along_axis(cumrel, start, axis=1)  # relevant items strictly better
    m = (end - start).astype(np.float64)
    h = np.take_along_axis(cumrel, end, axis=1) - before
    # the tie group at the cut-off may continue past kmax: count it over the whole gallery
    t = v[:, -1:]
    eq = scores == t
    in_t = v == t
    m = np.where(in_t, eq.sum(axis=1, keepdims=True), m)
    h = np.where(in_t, (eq & rel).sum(axis=1, keepdims=True), h)
    j = (pos - start).astype(np.float64)  # items of the same group ranked before this slot

    p_rel = h / m
    hits = p_rel * (before + 1.0 + j * (h - 1.0) / np.maximum(m - 1.0, 1.0)) / (pos + 1.0)
    # P(first relevant at this slot): survival inside the group, times "no relevant before it"
    first = np.empty((nb, kmax))
    surv = np.ones(nb)
    for p in range(kmax):
        surv = np.where(new[:, p], 1.0, surv)
        rest = m[:, p] - j[:, p]
        first[:, p] = surv * h[:, p] / rest
        surv = surv * np.maximum(rest - h[:, p], 0.0) / rest
    first *= before == 0
    disc = 1.0 / np.log2(pos + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(max(ks)) + 2.0))])

    out: dict[str, np.ndarray] = {}
    safe_r = np.maximum(num_rel, 1)
    for k in ks:
        kk = min(k, kmax)
        denom = np.minimum(safe_r, k)
        out[f"MRR@{k}"] = (first[:, :kk] / (pos[:kk] + 1.0)).sum(axis=1)
        out[f"MAP@{k}"] = hits[:, :kk].sum(axis=1) / denom
        out[f"NDCG@{k}"] = (p_rel[:, :kk] * disc[:kk]).sum(axis=1) / ideal[denom]
    return num_rel, out


def _checked_matrix(emb_or_sim: np.ndarray, metric: str) -> np.ndarray:
    """The validated matrix: rows L2-normalised (float64) for ``cosine``, as given otherwise."""
    data = np.asarray(emb_or_sim)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D embedding or similarity matrix, found shape {data.shape}")
    if metric not in ("cosine", "dot", "precomputed"):
        raise ValueError(f"metric must be 'cosine', 'dot' or 'precomputed', found {metric!r}")
    if metric == "precomputed":
        if data.shape[1] != data.shape[0]:
            raise ValueError(f"a precomputed similarity matrix must be square, found shape {data.shape}")
        return data
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if metric == "cosine":
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        data = data / np.where(norms > 0, norms, 1.0)
    return data


def retrieval_metrics(
    emb_or_sim: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    queries: Sequence[int] | np.ndarray | None = None,
    gallery: Sequence[int] | np.ndarray | None = None,
    metric: Metric = "cosine",
    decimals: int | None = 6,
    block_size: int | None = None,
) -> dict[str, float]:
    """Family-retrieval metrics: each query ranks the gallery (itself excluded).

    Args:
        emb_or_sim: ``(N, D)`` embeddings, or with ``metric="precomputed"`` an ``(N, N)``
            similarity matrix (larger = closer; row = query, column = gallery item).
        labels: ``N`` family labels (any hashable); relevant = same label as the query.
        ks: cut-offs, each >= 1.
        queries: item indices that act as queries (default: all ``N``).
        gallery: item indices that are ranked (default: all ``N``). A query that is also in the
            gallery never retrieves itself. The held-out protocol is ``queries=test,
            gallery=test`` (or ``test`` + ``train`` for the larger-gallery variant).
        metric: ``"cosine"`` (rows L2-normalised first; zero rows stay zero), ``"dot"``, or
            ``"precomputed"``.
        decimals: scores are rounded to this many decimals before ties are detected
            (``None``: exact comparison).
        block_size: queries per block (default: as many as keep a block near 4M scores).

    Returns:
        ``{"MRR@k", "MAP@k", "NDCG@k"}`` for every ``k`` (means over the queries that have at
        least one relevant gallery item), plus ``"queries"`` (how many were averaged) and
        ``"skipped_queries"`` (queries without any relevant item, excluded from the means).
        Means are ``nan`` when no query could be evaluated.

    Raises:
        ValueError: shapes disagree, indices are out of range or repeated, ``ks`` is empty or
            has a value < 1, ``metric`` is unknown, or the scores are not finite.

    Example:
        >>> emb = np.eye(4)[[0, 0, 1, 1]]
        >>> retrieval_metrics(emb, ["a", "a", "b", "b"], ks=(1,))["MAP@1"]
        1.0
    """
    data = _checked_matrix(emb_or_sim, metric)
    n = data.shape[0]
    ks_t = tuple(int(k) for k in ks)
    if not ks_t or min(ks_t) < 1:
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1, found {tuple(ks)}")
    codes = _encode_labels(labels, n)
    q_all = _as_index(queries, n, "queries")
    g_idx = _as_index(gallery, n, "gallery")

    g_pos = np.full(n, -1, dtype=np.int64)
    g_pos[g_idx] = np.arange(g_idx.size)
    g_codes = codes[g_idx]
    ng = g_idx.size
    if block_size is None:
        block_size = max(1, _BLOCK_ELEMENTS // max(ng, 1))

    names = [f"{m}@{k}" for m in METRIC_NAMES for k in ks_t]
    sums = dict.fromkeys(names, 0.0)
    evaluated = skipped = 0
    if ng > 0:
        for sl in iter_blocks(q_all.size, block_size):
            q = q_all[sl]
            scores = _block_scores(data, q, g_idx, metric)
            if not np.isfinite(scores).all():
                raise ValueError("similarity scores contain NaN or infinite values")
            if decimals is not None:
                scores = np.round(scores, decimals)
            rel = codes[q][:, None] == g_codes[None, :]
            self_col = g_pos[q]
            rows = np.flatnonzero(self_col >= 0)
            scores[rows, self_col[rows]] = -np.inf
            rel[rows, self_col[rows]] = False
            num_rel, per_query = _query_metrics(scores, rel, ks_t)
            ok = num_rel > 0
            evaluated += int(ok.sum())
            skipped += int((~ok).sum())
            for name in names:
                sums[name] += float(per_query[name][ok].sum())
    else:
        skipped = q_all.size
    if skipped:
        logger.info("%d of %d queries have no relevant gallery item and are excluded",
                    skipped, q_all.size)
    result = {name: (sums[name] / evaluated if evaluated else float("nan")) for name in names}
    result["queries"] = float(evaluated)
    result["skipped_queries"] = float(skipped)
    return result


_METRIC_RE = re.compile(r"^(MRR|MAP|NDCG)@(\d+)$")


def _default_columns(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    cols: set[str] = set()
    for res in results.values():
        cols.update(c for c in res if _METRIC_RE.match(c))

    def key(c: str) -> tuple[int, int]:
        m = _METRIC_RE.match(c)
        assert m is not None  # filtered above
        return METRIC_NAMES.index(m.group(1)), int(m.group(2))

    return sorted(cols, key=key)


def format_table(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | None = None,
    digits: int = 4,
    bold_best: bool = True,
) -> str:
    """Render ``{method: {metric: value}}`` as a Markdown table (methods x metrics).

    Args:
        results: per-method metric dicts, e.g. from :func:`retrieval_metrics`.
        metrics: columns to show (default: every ``MRR@k`` / ``MAP@k`` / ``NDCG@k`` present,
            grouped by metric then ``k``).
        digits: decimals shown.
        bold_best: mark the best value of each column in bold (larger is better).

    Returns:
        The table as a string (no trailing newline); a missing value shows as ``-``.

    Example:
        >>> print(format_table({"wl": {"MAP@20": 0.5}, "gcn": {"MAP@20": 0.25}}))
        | method | MAP@20 |
        |---|---:|
        | wl | **0.5000** |
        | gcn | 0.2500 |
    """
    cols = list(metrics) if metrics is not None else _default_columns(results)
    best: dict[str, float] = {}
    for c in cols:
        vals = [float(r[c]) for r in results.values() if c in r and np.isfinite(r[c])]
        if vals:
            best[c] = max(vals)
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for method, res in results.items():
        cells = []
        for c in cols:
            if c not in res:
                cells.append("-")
                continue
            text = f"{float(res[c]):.{digits}f}"
            if bold_best and len(results) > 1 and c in best and float(res[c]) == best[c]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_split(emb: np.ndarray, labels: Sequence[Hashable], split: Split,
                   ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Retrieval metrics with the baselines' protocol: queries = gallery = ``split.test``.

    Args:
        emb: ``(len(split.test), D)`` embeddings of the test items, in ``split.test`` order.
        labels: family labels of *all* items (indexed like the split).
        split: the split.
        ks: metric cut-offs.
    """
    test_labels = [labels[int(i)] for i in split.test]
    return retrieval_metrics(emb, test_labels, ks=ks)
