"""Retrieval baselines, evaluated by the same code and split as the NAR encoder.

Four baselines (DESIGN.md, "Corpus and evaluation"):

* ``histogram`` -- :func:`histogram_embed`: normalised op-type counts over :data:`~nar_plugin.graph.OPS`
  (optionally plus attribute-bucket counts), compared by cosine.
* ``wl`` -- :func:`wl_embed`: Weisfeiler-Lehman subtree features (labels of rounds ``0..steps``
  from :meth:`ArchGraph.wl_labels`) hashed into a fixed-size count vector, optionally tf-idf
  weighted, L2-normalised: cosine on it is the normalised WL subtree kernel.
* ``gcn`` / ``gat`` -- :mod:`nar_plugin.evaluation.gnn_baselines`: a 3-layer GCNConv / GATConv
  network on the raw ArchGraph (no motifs), trained on the training split only.

:func:`run_baselines` evaluates them with :func:`nar_plugin.evaluation.metrics.retrieval_metrics` on a
:class:`~nar_plugin.evaluation.splits.Split`. Protocol (the paper's): queries = test items, gallery = test
items (each query excluded from its own gallery); ``gallery="all"`` ranks train + test instead.
Histogram and WL need numpy only; torch is imported for the GNN baselines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nar_plugin.evaluation.metrics import DEFAULT_KS, retrieval_metrics
from nar_plugin.graph import ATTR_BINS, OP_INDEX, OPS, ArchGraph

if TYPE_CHECKING:
    from nar_plugin.evaluation.splits import Split

__all__ = ["BASELINES", "histogram_embed", "run_baselines", "wl_embed"]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`run_baselines`, in table order.
BASELINES: tuple[str, ...] = ("histogram", "wl", "gcn", "gat")

# Attribute buckets (values above the last bucket are clipped into it). Index 0 is "n/a".
_KERNEL_BINS, _STRIDE_BINS, _GROUP_BINS, _WIDTH_BINS, _ = ATTR_BINS


# ===================================================================== histogram
def histogram_embed(graphs: Sequence[ArchGraph], attributes: bool = False) -> np.ndarray:
    """Op-type histogram embeddings.

    Each block of counts is divided by its total (so graph size does not matter), the blocks are
    concatenated, and the row is L2-normalised (inner product = cosine).

    Args:
        graphs: the graphs.
        attributes: also append count blocks of the known (non-zero) kernel sizes, strides,
            group kinds and output-width buckets, each normalised like the op block.

    Returns:
        ``(N, len(OPS))`` float32, or ``(N, len(OPS) + 16 + 8 + 3 + 32)`` with ``attributes``;
        unit-norm rows (an empty graph gives a zero row).
    """
    width = len(OPS) + (_KERNEL_BINS + _STRIDE_BINS + _GROUP_BINS + _WIDTH_BINS if attributes else 0)
    out = np.zeros((len(graphs), width), dtype=np.float64)
    for row, g in enumerate(graphs):
        blocks = [np.bincount([OP_INDEX[o] for o in g.ops], minlength=len(OPS)).astype(np.float64)]
        if attributes:
            feats = np.asarray(g.feature_matrix(), dtype=np.int64).reshape(-1, 6)
            for col, bins in ((1, _KERNEL_BINS), (2, _STRIDE_BINS), (3, _GROUP_BINS),
                              (5, _WIDTH_BINS)):
                vals = feats[:, col]
                # groups: 0 = dense is a real value for convs; others: 0 = unknown, skipped
                known = vals[feats[:, 1] > 0] if col == 3 else vals[vals > 0]
                blocks.append(np.bincount(np.minimum(known, bins - 1), minlength=bins)
                              .astype(np.float64))
        for b in blocks:
            total = b.sum()
            if total > 0:
                b /= total
        out[row] = np.concatenate(blocks)
    return _l2_normalise(out).astype(np.float32)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


# ===================================================================== WL subtree features
_GOLDEN = 0x9E3779B97F4A7C15  # mixes the round number into the label's hash


def wl_embed(
    graphs: Sequence[ArchGraph],
    steps: int = 3,
    dim: int = 2**14,
    tfidf: bool = False,
    sublinear_tf: bool = False,
) -> np.ndarray:
    """Hashed Weisfeiler-Lehman subtree features.

    Feature ``(t, label)`` counts the nodes whose round-``t`` WL label (over in- and
    out-neighbours, see :meth:`ArchGraph.wl_labels`) is ``label``, for ``t = 0..steps``. Labels
    are 64-bit digests already, so the bucket is ``(digest + t * golden) mod 2**64 mod dim``
    (sklearn ``FeatureHasher`` style without the alternating sign, keeping counts non-negative).

    Args:
        graphs: the graphs.
        steps: WL rounds ``h`` (features of rounds 0..h).
        dim: hashed feature dimension.
        tfidf: multiply by the smoothed idf ``log((1 + N) / (1 + df)) + 1`` computed over
            ``graphs`` (unsupervised; no labels used).
        sublinear_tf: use ``1 + log(count)`` instead of raw counts.

    Returns:
        ``(N, dim)`` float32 with unit-norm rows. Memory is ``4 * N * dim`` bytes: embed only the
        items you evaluate (as :func:`run_baselines` does) or lower ``dim``.

    Raises:
        ValueError: ``steps`` < 0 or ``dim`` < 1.
    """
    if steps < 0 or dim < 1:
        raise ValueError(f"steps must be >= 0 and dim >= 1, found steps={steps}, dim={dim}")
    out = np.zeros((len(graphs), dim), dtype=np.float64)
    for row, g in enumerate(graphs):
        buckets = [
            ((int(lab, 16) + t * _GOLDEN) % (1 << 64)) % dim
            for t, labels in enumerate(g.wl_labels(steps))
            for lab in labels
        ]
        if buckets:
            out[row] = np.bincount(np.asarray(buckets, dtype=np.int64), minlength=dim)
    if sublinear_tf:
        present = out > 0
        out[present] = 1.0 + np.log(out[present])
    if tfidf:
        df = (out > 0).sum(axis=0)
        out *= np.log((1.0 + len(graphs)) / (1.0 + df)) + 1.0
    return _l2_normalise(out).astype(np.float32)


# ===================================================================== evaluation
def _gnn_embeddings(conv: str, graphs: Sequence[ArchGraph], labels: Sequence[Hashable] | np.ndarray,
                    split: Split, sub_graphs: Sequence[ArchGraph], seed: int, num_threads: int | None,
                    gnn_kwargs: dict[str, Any] | None) -> np.ndarray:
    """Train a GCN/GAT on ``split.train`` and embed ``sub_graphs`` with it."""
    from nar_plugin.evaluation.gnn_baselines import gnn_embed, train_gnn_baseline
    from nar_plugin.utils.torch_context import torch_threads

    model = train_gnn_baseline(graphs, labels, split.train, conv=conv,  # type: ignore[arg-type]
                               seed=seed, num_threads=num_threads, **(gnn_kwargs or {}))
    with torch_threads(num_threads):
        return gnn_embed(model, sub_graphs)


def run_baselines(
    graphs: Sequence[ArchGraph],
    labels: Sequence[Hashable] | np.ndarray,
    split: Split,
    methods: Sequence[str] = BASELINES,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    gallery: Literal["test", "all"] = "test",
    gnn_kwargs: dict[str, Any] | None = None,
    num_threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate baselines on ``split`` with :func:`~nar_plugin.evaluation.metrics.retrieval_metrics`.

    Protocol: queries are ``split.test``; the gallery is ``split.test`` (the paper's retrieval
    within the test set; every query is excluded from its own gallery), or train + test with
    ``gallery="all"``. GNNs are trained on ``split.train`` only; histogram and WL need no
    training (WL's optional idf is computed over the embedded items, without labels).

    Args:
        graphs: the corpus, indexed like the split.
        labels: family label per graph.
        split: a :class:`~nar_plugin.evaluation.splits.Split` over ``len(graphs)`` items.
        methods: names from :data:`BASELINES`.
        seed: seed for GNN training.
        ks: metric cut-offs.
        gallery: ``"test"`` or ``"all"``.
        gnn_kwargs: extra arguments for
            :func:`~nar_plugin.evaluation.gnn_baselines.train_gnn_baseline` (``epochs``, ``hidden``...).
        num_threads: torch threads for GNN training and embedding (default: torch's setting).

    Returns:
        ``{method: metrics}`` (metrics as from ``retrieval_metrics`` plus ``"seconds"``), ready
        for :func:`~nar_plugin.evaluation.metrics.format_table`.

    Raises:
        ValueError: unknown method or gallery, or a split / labels of another size.
    """
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    if gallery not in ("test", "all"):
        raise ValueError(f"gallery must be 'test' or 'all', found {gallery!r}")
    if split.n_items != len(graphs) or len(labels) != len(graphs):
        raise ValueError(f"split ({split.n_items} items), labels ({len(labels)}) and graphs "
                         f"({len(graphs)}) must have the same size")
    items = split.test if gallery == "test" else np.arange(len(graphs))
    sub_graphs = [graphs[int(i)] for i in items]
    sub_labels = [labels[int(i)] for i in items]
    q_local = np.searchsorted(items, split.test)  # items is sorted and contains split.test
    results: dict[str, dict[str, float]] = {}
    for method in methods:
        start = time.perf_counter()
        if method == "histogram":
            emb = histogram_embed(sub_graphs)
        elif method == "wl":
            emb = wl_embed(sub_graphs)
        else:
            emb = _gnn_embeddings(method, graphs, labels, split, sub_graphs, seed, num_threads, gnn_kwargs)
        res = retrieval_metrics(emb, sub_labels, ks=ks, queries=q_local)
        res["seconds"] = time.perf_counter() - start
        results[method] = res
        logger.info("baseline %s on split %s: %s", method, split.name,
                    {k: round(v, 4) for k, v in res.items()})
    return results
