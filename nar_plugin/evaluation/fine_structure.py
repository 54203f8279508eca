"""The fine-level structural stage (issue 16): the same network, not only the same family.

The embedding keeps relative widths only (good for family retrieval), so depth and width
variants of one design (resnet50 / resnet101 / wide_resnet50_2) score alike. This stage looks at
absolute structure *after* the embedding shortlist:

* :func:`fine_signature`: a compact signature stored in each indexed model's description
  (``description["fine"]``): the multiset of node labels *with absolute attributes* (op, kernel,
  stride, groups, input- and output-width buckets; :meth:`ArchGraph.label`) and the parameter
  count (``graph.metadata["num_params"]``, recorded by every extraction path from shapes).
  Depth shows in the counts, width in the buckets and the parameter count. A few hundred bytes of JSON (median ~640 B on the cross-library
  benchmark, largest ~1.6 KB).
* :func:`fine_similarity`: weighted Jaccard (sum of minima / sum of maxima) of two signatures,
  times the ratio of their parameter counts when both have one (a width the power-of-two
  buckets hide still shows there); ``None`` when either description lacks a signature
  (entries indexed before this stage).
* :func:`shapes_near`: the parameter shapes (``graph.metadata["param_shapes"]``, canonical
  tokens of :mod:`nar_plugin.graph.params`) agree up to a task head: one model holds every
  weight matrix of the other plus at most :data:`HEAD_MATRICES`, or each holds one matrix the
  other lacks and their node labels are equal once each side's output-side layer is set aside
  (a classifier for 10 classes instead of 1000); and at most :data:`HEAD_VECTORS` vectors
  differ. A deep stem, a patch of 32 instead of 16, BatchNorm vs
  none, 16 vs 19 layers all fail it; the same network from another library with another (or
  no) classifier passes.
* :func:`structure_check` / :func:`structure_near`: the structural half of the
  ``near-duplicate`` relation: the parameter shapes when both descriptions record them; else
  fine similarity >= a calibrated threshold; without signatures the op-histogram check of
  earlier releases (:data:`NEAR_STRUCTURE`). ``structure_check`` also says which evidence
  decided (the relation's cosine floor depends on it, :mod:`nar_plugin.search.relations`).
* :func:`promote_first`: the rerank. Among the first :data:`SHORTLIST` hits in cosine order,
  the one with the highest :func:`promote_score` (ties: the higher cosine) goes first when
  that score is at least :data:`PROMOTE_MIN`; every other hit keeps its cosine order. Only one
  hit moves, so family retrieval is barely touched (a cross-family jump costs one slot).
  :func:`promote_score` is the fine similarity, plus 1 when the parameter shapes agree up to
  a head (:func:`shapes_near`): the same network by its parameters goes before any hit that
  only shares node labels (torchvision's swin_t: timm's swin_tiny, not swin_base), plus a
  calibrated small weight (``promote_shapes``, :func:`promote_weights`) times the multiset
  Jaccard of the parameter shapes (:func:`shape_similarity`): among hits whose node labels
  agree about equally (a ViT, the DeiT that adds a distillation token, the CLIP ViT that adds a
  norm), the one whose parameters agree most. A hit below the ``related`` cosine is not moved
  above a first hit that is related.

Used by :func:`nar_plugin.search.api.find_similar` and by the NAR method of the cross-library
benchmark (:mod:`nar_plugin.evaluation.cross_library`) and its calibration
(:mod:`nar_plugin.evaluation.calibrate`): one code path. Lives in ``evaluation`` (a lower layer
than ``search``) so both can import it. Standard library only (besides the graph layer's
parameter-shape tokens and the weights folder's path).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nar_plugin.graph.params import shape_difference

if TYPE_CHECKING:
    from nar_plugin.graph import ArchGraph

__all__ = [
    "FINE_VERSION",
    "HEAD_MATRICES",
    "HEAD_VECTORS",
    "NEAR_FINE",
    "NEAR_STRUCTURE",
    "PROMOTE_MIN",
    "SHORTLIST",
    "fine_signature",
    "fine_similarity",
    "near_evidence",
    "op_overlap",
    "promote_first",
    "promote_score",
    "promote_threshold",
    "promote_weights",
    "related_threshold",
    "shape_similarity",
    "shapes_near",
    "structure_check",
    "structure_near",
]

#: Bump when the signature's tokens change (signatures of another version are ignored: the
#: check then falls back as for an entry without one).
FINE_VERSION = 1
#: Hits (in cosine order) the rerank looks at; ``find_similar`` fetches at least this many.
SHORTLIST = 30
#: Least fine similarity for a hit to be moved first, when ``thresholds.json`` records none
#: (the shipped file records ``promote_fine`` = 0.6, chosen by
#: :func:`~nar_plugin.evaluation.calibrate.calibrate_cross_library` on half the benchmark's
#: families; this default is the lowest value its grid tries).
PROMOTE_MIN = 0.3
#: Weight of the parameter-shape similarity in :func:`promote_score` when ``thresholds.json``
#: records none (``promote_shapes``, calibrated like ``promote_fine``): none, the rerank of
#: releases before it.
PROMOTE_SHAPES = 0.0
#: Default fine-similarity threshold of ``near-duplicate`` (calibrated with the cosine threshold
#: by :func:`~nar_plugin.evaluation.calibrate.calibrate_cross_library`; used when the thresholds
#: file does not record one).
NEAR_FINE = 0.813
#: Weighted Jaccard of two op histograms at or above which two graphs are "nearly equal": the
#: check for descriptions without a fine signature (earlier releases).
NEAR_STRUCTURE = 0.9
#: Weight matrices one model may add to every matrix of the other and still be "the same
#: network" (a classifier or a pooler; the side with fewer matrices must miss none). Chosen on
#: the calibration half of the cross-library benchmark's families (docs/benchmarks.md).
HEAD_MATRICES = 1
#: Vectors (biases, norm scales) that may differ: a classifier's bias and a norm's two.
HEAD_VECTORS = 3


def fine_signature(graph: ArchGraph) -> dict[str, Any]:
    """``{"v": FINE_VERSION, "nodes": {label: count}, "params": n, "shapes": {token: count},
    "head": label}``: node labels with absolute attributes, the parameter count and the
    canonical parameter shapes the extractor recorded (``graph.metadata["num_params"]`` /
    ``["param_shapes"]``, from shapes only; each left out when unknown), the label of the
    output-side weighted layer (:func:`_head_label`); ``"folded": true`` when the vectors among
    the shapes are not the module's (ONNX, BatchNorm folded into biases)."""
    sig: dict[str, Any] = {"v": FINE_VERSION, "nodes": dict(Counter(graph.label(i) for i in range(graph.num_nodes)))}
    params = graph.metadata.get("num_params")
    if isinstance(params, int) and not isinstance(params, bool) and params > 0:
        sig["params"] = params
    shapes = graph.metadata.get("param_shapes")
    if isinstance(shapes, Mapping) and shapes:
        sig["shapes"] = dict(shapes)
        if graph.metadata.get("param_vectors_folded"):
            sig["folded"] = True
    head = _head_label(graph)
    if head is not None:
        sig["head"] = head
    return sig


#: Ops whose node carries a weight matrix (what a task head is).
_WEIGHTED = frozenset({"linear", "conv", "conv_transpose", "embedding"})


def _head_label(graph: ArchGraph) -> str | None:
    """The label of the output-side weighted layer: walking back from the outputs through
    parameter-free nodes, the first ``linear`` / ``conv`` reached (a classifier, a pooler's
    projection); ``None`` when there is none."""
    outputs = [i for i, op in enumerate(graph.ops) if op == "output"]
    seen, frontier = set(outputs), list(outputs)
    while frontier:
        nxt = []
        for i in frontier:
            for p in graph.predecessors(i):
                if p in seen:
                    continue
                if graph.ops[p] in _WEIGHTED:
                    return graph.label(p)
                seen.add(p)
                nxt.append(p)
        frontier = nxt
    return None


def _weighted_jaccard(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    keys = set(a) | set(b)
    top = sum(max(int(a.get(t, 0)), int(b.get(t, 0))) for t in keys)
    if not top:
        return None
    return sum(min(int(a.get(t, 0)), int(b.get(t, 0))) for t in keys) / top


def _fine(desc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    fine = (desc or {}).get("fine")
    return fine if isinstance(fine, Mapping) and fine.get("v") == FINE_VERSION else {}


def _nodes(desc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    nodes = _fine(desc).get("nodes")
    return nodes if isinstance(nodes, Mapping) and nodes else None


def _params(desc: Mapping[str, Any] | None) -> int | None:
    n = _fine(desc).get("params")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def fine_similarity(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None) -> float | None:
    """Weighted Jaccard of the fine signatures of two descriptions (1.0 = the same node labels
    with the same counts), times the ratio of their parameter counts (smaller / larger) when
    both record one: the width buckets of the node labels are powers of two, so 96 and 128
    channels (convnext_small / convnext_base) share a label, not a parameter count. ``None``
    when either has no signature of this version."""
    qn, mn = _nodes(q), _nodes(m)
    if qn is None or mn is None:
        return None
    sim = _weighted_jaccard(qn, mn)
    pq, pm = _params(q), _params(m)
    if sim is not None and pq and pm:
        sim *= min(pq, pm) / max(pq, pm)
    return sim


def op_overlap(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None) -> float | None:
    """Weighted Jaccard of two op histograms (``description["ops"]``); ``None`` when either lacks one."""
    qo, mo = (q or {}).get("ops"), (m or {}).get("ops")
    if not qo or not mo:
        return None
    return _weighted_jaccard(qo, mo)


def shapes_near(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None) -> bool | None:
    """Do the parameter shapes of two descriptions agree up to a task head? One side holds
    every weight matrix of the other plus at most :data:`HEAD_MATRICES`, or one matrix on each
    side differs and it is the head (node labels equal but for the output-side layer,
    ``fine["head"]``); and at most :data:`HEAD_VECTORS` vectors differ (vectors are not
    compared when either side's were folded, :func:`fine_signature`). ``None`` when either
    records no shapes."""
    qf, mf = _fine(q), _fine(m)
    qs, ms = qf.get("shapes"), mf.get("shapes")
    if not isinstance(qs, Mapping) or not isinstance(ms, Mapping) or not qs or not ms:
        return None
    (fewer, more), (_, vectors) = shape_difference(qs, ms, matrices_only=bool(qf.get("folded") or mf.get("folded")))
    if vectors > HEAD_VECTORS or more > HEAD_MATRICES:
        return False
    if fewer == 0:  # one side adds a head (or a pooler) to all of the other
        return True
    return _only_heads_differ(qf, mf)  # one matrix each: the same network with another head?


def _only_heads_differ(qf: Mapping[str, Any], mf: Mapping[str, Any]) -> bool:
    """The node labels are equal once each side's output-side layer (``head``) is set aside:
    a classifier swapped for another number of classes, not a changed patch or stem."""
    qh, mh, qn, mn = qf.get("head"), mf.get("head"), qf.get("nodes"), mf.get("nodes")
    if not isinstance(qh, str) or not isinstance(mh, str) or not isinstance(qn, Mapping) or not isinstance(mn, Mapping):
        return False
    return Counter(qn) - Counter({qh: 1}) == Counter(mn) - Counter({mh: 1})


def structure_check(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None,
                    fine_min: float = NEAR_FINE) -> tuple[bool | None, str]:
    """Are two graphs nearly the same network, and on which evidence? ``(verdict, basis)``:
    ``"shapes"`` (:func:`shapes_near`) when both descriptions record parameter shapes; else
    ``"fine"``, fine similarity >= ``fine_min``; else ``"ops"``, op histograms overlapping >=
    :data:`NEAR_STRUCTURE` (earlier releases' check); else ``(None, "none")`` (the cosine
    decides)."""
    shapes = shapes_near(q, m)
    if shapes is not None:
        return shapes, "shapes"
    fine = fine_similarity(q, m)
    if fine is not None:
        return fine >= fine_min, "fine"
    overlap = op_overlap(q, m)
    return (None, "none") if overlap is None else (overlap >= NEAR_STRUCTURE, "ops")


def near_evidence(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None, *, cosine_floor: float,
                  shapes_floor: float, fine_min: float = NEAR_FINE) -> tuple[bool | None, float]:
    """``(near, floor)``: the verdict of :func:`structure_check` and the cosine a
    ``near-duplicate`` needs on its evidence: ``shapes_floor`` when the parameter shapes decided,
    else ``cosine_floor`` (the relation's rule; :func:`nar_plugin.search.relations.near_duplicate_evidence`
    passes the thresholds)."""
    near, basis = structure_check(q, m, fine_min)
    return near, (shapes_floor if basis == "shapes" else cosine_floor)


def structure_near(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None,
                   fine_min: float = NEAR_FINE) -> bool | None:
    """The verdict of :func:`structure_check` alone."""
    return structure_check(q, m, fine_min)[0]


def shape_similarity(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None) -> float | None:
    """Multiset Jaccard of the parameter-shape tokens of two descriptions (1.0 = the same
    tensors); ``None`` when either records no shapes."""
    qs, ms = _fine(q).get("shapes"), _fine(m).get("shapes")
    if not isinstance(qs, Mapping) or not isinstance(ms, Mapping) or not qs or not ms:
        return None
    a, b = Counter(qs), Counter(ms)
    return sum((a & b).values()) / sum((a | b).values())


def promote_score(q: Mapping[str, Any] | None, m: Mapping[str, Any] | None,
                  shape_weight: float = PROMOTE_SHAPES) -> float | None:
    """What :func:`promote_first` ranks a shortlisted hit by: its fine similarity, plus 1 when
    the parameter shapes of the two agree up to a head (:func:`shapes_near`), plus
    ``shape_weight`` times their :func:`shape_similarity` (0 when unknown); ``None`` when
    either description has no fine signature."""
    fine = fine_similarity(q, m)
    if fine is None:
        return None
    score = fine + (1.0 if shapes_near(q, m) else 0.0)
    if shape_weight:
        score += shape_weight * (shape_similarity(q, m) or 0.0)
    return score


def promote_first(fine: Sequence[float | None], shortlist: int = SHORTLIST,
                  min_similarity: float = PROMOTE_MIN, cosines: Sequence[float] | None = None,
                  related: float | None = None) -> int | None:
    """Which hit to move first: ``fine`` are the scores (:func:`promote_score`) of hits in
    decreasing cosine order (``None``: unknown). Returns the position (< ``shortlist``) of the highest similarity,
    the earliest among ties, when it is >= ``min_similarity``; else ``None`` (keep the order).

    With ``cosines`` (of the same hits) and ``related`` (the relation's cosine threshold), a
    hit below ``related`` is not moved above a first hit at or above it: the list never shows
    an unrelated hit before related ones (a 2-layer GPT-2 before a 4-layer BERT for a 2-layer
    BERT, on node labels alone)."""
    floor = related if cosines is not None and related is not None and cosines and cosines[0] >= related else None
    best, pos = None, None
    for i, s in enumerate(fine[:shortlist]):
        if floor is not None and cosines[i] < floor:  # type: ignore[index]
            continue
        if s is not None and (best is None or s > best):
            best, pos = s, i
    return pos if best is not None and best >= min_similarity else None


def promote_threshold(path: str | Path | None = None) -> float:
    """The calibrated least fine similarity that moves a hit first: ``promote_fine`` of the
    shipped ``weights/thresholds.json`` (or of ``path``); :data:`PROMOTE_MIN` when there is none."""
    return promote_weights(path)[0]


def _calibrated(path: str | Path | None) -> Mapping[str, Any]:
    """The shipped ``weights/thresholds.json`` (or ``path``) as a mapping; empty when missing or
    unreadable (the callers fall back to their defaults)."""
    from nar_plugin.model.weights import WEIGHTS_DIR

    try:
        doc = json.loads((Path(path) if path else WEIGHTS_DIR / "thresholds.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, Mapping) else {}


def related_threshold(path: str | Path | None = None) -> float | None:
    """The calibrated ``related`` cosine of the shipped ``weights/thresholds.json`` (or of
    ``path``), for :func:`promote_first`'s floor; ``None`` when there is none."""
    try:
        value = _calibrated(path).get("related")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def promote_weights(path: str | Path | None = None) -> tuple[float, float]:
    """The calibrated rerank: ``(promote_fine, promote_shapes)`` of the shipped
    ``weights/thresholds.json`` (or of ``path``); :data:`PROMOTE_MIN` / :data:`PROMOTE_SHAPES`
    for what it does not record."""
    doc = _calibrated(path)
    try:
        return float(doc.get("promote_fine", PROMOTE_MIN)), float(doc.get("promote_shapes", PROMOTE_SHAPES))
    except (TypeError, ValueError):
        return PROMOTE_MIN, PROMOTE_SHAPES
