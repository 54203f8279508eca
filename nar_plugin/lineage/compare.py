"""Two fingerprints -> how the weights relate: the same, one fine-tuned from the other, or unrelated;
and many fingerprints -> a model tree.

**Similarity.** Tensors are matched by name and shape. For the informative ones (float, at least
two dimensions, at least :data:`MIN_NUMEL` elements: the weight matrices and kernels, where an
independent initialisation leaves no trace of the other model), the squared distance of the
centred tensors is estimated from the sketches (exactly 0 when their hashes are equal) and

    similarity = 1 - sum_t |(x_t - mean x_t) - (y_t - mean y_t)|^2 / sum_t n_t (var x_t + var y_t)

which is the element-weighted cosine of the centred tensors: about 0 for two independently
initialised models of one architecture, about 1 for a model and its fine-tune (the update is
small next to the weights), exactly 1 for a partial (LoRA-style) update's frozen tensors.

**Direction**, two kinds of evidence, the first that speaks decides:

1. *Training-step counters* (:data:`COUNTER_NAMES`: BatchNorm's ``num_batches_tracked``, an
   integer buffer every forward pass in train mode increments, kept in every state dict). A
   fine-tune in train mode leaves the child's counters above the parent's: when every counter
   that differs moved the same way, that is the direction (exact, whatever the size of the
   update). Counters that move both ways, or none at all (a fine-tune with BatchNorm frozen, an
   ONNX export, a model without BatchNorm), say nothing.
2. *Kurtosis* (after MoTHer, Horwitz et al. 2024, arXiv 2405.18432: weight kurtosis changes
   monotonically with training): over the tensors that differ, the median of
   ``kurtosis(child) - kurtosis(parent)`` is positive. The sign was calibrated on the generated
   tree of ``benchmarks/lineage.py`` (CNNs and transformers, full and partial updates;
   docs/lineage.md) and is the constant :data:`KURTOSIS_GROWS`. A small update moves the
   kurtosis too little to tell (below :attr:`LineageThresholds.direction_margin`).

Otherwise the direction is unknown (``None``), and callers that know which model is older (a
registry) use that.

**Tree.** :func:`reconstruct_tree`: the maximum branching (after MoTHer's directed spanning tree)
of the arcs the step counters allow, preferring pairs that share the most byte-identical
tensors, then the most similar ones (a parent is closer than a sibling or a grandparent), each
tree oriented from the root that agrees with most pairwise direction votes (a counter vote
weighs :data:`COUNTER_VOTE` kurtosis votes): one wrong vote among many does not flip an edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nar_plugin.lineage.fingerprint import WeightFingerprint
from nar_plugin.lineage.sketch import TensorStats, ones_sketch

__all__ = [
    "COUNTER_NAMES",
    "COUNTER_VOTE",
    "counter_direction",
    "counters_allow_adjacency",
    "KURTOSIS_GROWS",
    "MIN_NUMEL",
    "Edge",
    "LineageThresholds",
    "WeightComparison",
    "compare",
    "reconstruct_tree",
    "weight_relation",
]

#: the smallest tensor that counts as evidence (smaller ones are biases, norms, scalars)
MIN_NUMEL = 64
#: fine-tuning raises weight kurtosis (calibrated, see the module docstring)
KURTOSIS_GROWS = True
#: last name component of the integer buffers that count training steps (BatchNorm's)
COUNTER_NAMES = frozenset({"num_batches_tracked"})
#: weight of a counter-based direction in a tree's orientation vote (a kurtosis vote weighs 1)
COUNTER_VOTE = 4
#: in the tree, sharing byte-identical tensors outweighs any similarity difference
_SHARED = 10.0
#: the older-first bias that makes ties deterministic (far below any similarity difference)
_TIE = 1e-9


@dataclass(frozen=True)
class LineageThresholds:
    """When weights count as related (similarity is larger = closer, in [-1, 1]).

    Attributes:
        fine_tuned: similarity at or above which one model is fine-tuned from the other.
        min_matched: share of the larger model's elements that must be matched by name and
            shape for any weight relation (below: too little in common to say).
        direction_margin: a median kurtosis change at or below this leaves the direction unknown
            (calibrated on the generated tree of ``benchmarks/lineage.py``: above 0.002 the sign
            was right every time; below, about a coin flip).
        direction_min_tensors: fewer differing informative tensors than this: direction unknown
            (a median of three is one tensor's word).
        direction_agreement: share of the differing tensors whose kurtosis moves the median's
            way, below which the direction is unknown.
    """

    fine_tuned: float = 0.5
    min_matched: float = 0.8
    direction_margin: float = 0.002
    direction_min_tensors: int = 4
    direction_agreement: float = 0.6


@dataclass(frozen=True)
class WeightComparison:
    """How the weights of ``a`` and ``b`` relate (see :func:`compare`).

    Attributes:
        same_weights: every tensor byte-identical (equal weights hashes).
        matched: share of the larger model's elements in tensors matched by name and shape.
        similarity: see the module docstring (``None``: no informative tensor to compare).
        changed: share of the compared elements in tensors that differ.
        kurtosis_delta: median over the differing tensors of kurtosis(b) - kurtosis(a).
        norm_delta: median over the differing tensors of log(std(b) / std(a)).
        direction: ``"a->b"`` (a is the parent), ``"b->a"``, or ``None`` (unknown).
        compared: number of informative tensors compared.
        evidence: what decided ``direction``: ``"counters"``, ``"kurtosis"`` or ``None``.
        steps_delta: median over the differing step counters of counter(b) - counter(a)
            (0: none differ).
        adjacent: whether one can be the other's parent at all: false when a BatchNorm's
            running statistics differ while its step counter does not (they only move together,
            in train mode: two such models are relatives, e.g. siblings, never parent and child).
    """

    same_weights: bool
    matched: float
    similarity: float | None
    changed: float
    kurtosis_delta: float
    direction: str | None
    compared: int
    norm_delta: float = 0.0
    evidence: str | None = None
    steps_delta: float = 0.0
    adjacent: bool = True

    def explain(self) -> str:
        """One line: similarity, share changed, direction evidence."""
        if self.same_weights:
            return "same weights (every tensor hash equal)"
        if self.similarity is None:
            return f"weights not comparable ({self.matched:.0%} of elements matched by name and shape)"
        parts = [f"weight similarity {self.similarity:.3f}", f"{self.changed:.0%} of weights changed"]
        if self.evidence == "counters":
            parts.append(f"BatchNorm step counters rise {_arrow(self.direction, self.steps_delta)}"
                         f" ({abs(self.steps_delta):.0f} steps)")
        elif self.direction:
            parts.append(f"kurtosis {'rises' if self.kurtosis_delta > 0 else 'falls'} {self.direction.replace('->', ' -> ')}"
                         f" (median change {self.kurtosis_delta:+.4f})")
        return ", ".join(parts)


def _arrow(direction: str | None, delta: float) -> str:
    """``a -> b`` when b's counters are ahead (``delta > 0``), else ``b -> a``."""
    return (direction or ("a->b" if delta > 0 else "b->a")).replace("->", " -> ")


def _is_counter(t: TensorStats) -> bool:
    return not t.is_float and t.numel == 1 and t.name.rsplit(".", 1)[-1] in COUNTER_NAMES


def counters_allow_adjacency(pairs: list[tuple[TensorStats, TensorStats]]) -> bool:
    """False when some BatchNorm's running statistics differ but its step counter is equal: in
    train mode both move, in eval mode neither, so no single fine-tune leads from one to the other."""
    by_name = {ta.name: (ta, tb) for ta, tb in pairs}
    for ta, tb in pairs:
        if _is_counter(ta) and ta.sha256 == tb.sha256:
            prefix = ta.name.rsplit(".", 1)[0] + "." if "." in ta.name else ""
            stats = (by_name.get(prefix + s) for s in ("running_mean", "running_var"))
            if any(st is not None and st[0].sha256 != st[1].sha256 for st in stats):
                return False
    return True


def counter_direction(pairs: list[tuple[TensorStats, TensorStats]]) -> tuple[str | None, float]:
    """Direction from the step counters of matched tensor pairs (an integer scalar's stored
    ``mean`` is its value): ``("a->b", delta)`` when every counter that differs grew from a to b,
    ``("b->a", delta)`` when every one shrank, else ``(None, delta)``; ``delta`` is the median
    change (0.0 when no counter differs)."""
    deltas = [tb.mean - ta.mean for ta, tb in pairs if _is_counter(ta) and ta.sha256 != tb.sha256]
    if not deltas:
        return None, 0.0
    delta = float(np.median(deltas))
    if all(d > 0 for d in deltas):
        return "a->b", delta
    if all(d < 0 for d in deltas):
        return "b->a", delta
    return None, delta


def _informative(t: TensorStats) -> bool:
    return t.is_float and len(t.shape) >= 2 and t.numel >= MIN_NUMEL


def compare(a: WeightFingerprint, b: WeightFingerprint,
            thresholds: LineageThresholds | None = None) -> WeightComparison:
    """Compare two fingerprints (cost: one 64-wide vector operation per matched tensor).

    Example:
        >>> c = compare(fingerprint_module(base), fingerprint_module(finetuned))
        >>> c.similarity > 0.9, c.direction
        (True, 'a->b')
    """
    th = thresholds or LineageThresholds()
    if a.weights_hash == b.weights_hash:
        return WeightComparison(True, 1.0, 1.0, 0.0, 0.0, None, len(a))
    pairs = [(ta, tb) for ta in a.tensors if (tb := b.get(ta.name)) is not None
             and tb.shape == ta.shape and tb.dtype == ta.dtype]
    total = max(a.numel, b.numel, 1)
    matched = sum(ta.numel for ta, _ in pairs) / total
    useful = [p for p in pairs if _informative(p[0])] or [p for p in pairs if p[0].is_float and p[0].numel > 1]
    if not useful:
        return WeightComparison(False, matched, None, 0.0, 0.0, None, 0)
    dist = denom = 0.0
    changed_numel = all_numel = 0
    deltas, growth = [], []
    for ta, tb in useful:
        n = ta.numel
        all_numel += n
        denom += n * (ta.std ** 2 + tb.std ** 2)
        if ta.sha256 == tb.sha256:
            continue
        changed_numel += n
        diff = ta.sketch.astype(np.float64) - tb.sketch - (ta.mean - tb.mean) * ones_sketch(n)
        dist += float(diff @ diff)
        deltas.append(tb.kurtosis - ta.kurtosis)
        if ta.std > 0 and tb.std > 0:
            growth.append(float(np.log(tb.std / ta.std)))
    similarity = 1.0 - dist / denom if denom > 0 else (1.0 if dist == 0 else 0.0)
    delta = float(np.median(deltas)) if deltas else 0.0
    direction, steps = counter_direction(pairs)
    evidence = "counters" if direction else None
    agree = sum(1 for d in deltas if (d > 0) == (delta > 0) and d != 0) / max(len(deltas), 1)
    if direction is None and abs(delta) > th.direction_margin and len(deltas) >= th.direction_min_tensors \
            and agree >= th.direction_agreement:
        direction, evidence = ("a->b" if (delta > 0) == KURTOSIS_GROWS else "b->a"), "kurtosis"
    return WeightComparison(False, matched, max(-1.0, min(1.0, similarity)), changed_numel / max(all_numel, 1),
                            delta, direction, len(useful), float(np.median(growth)) if growth else 0.0,
                            evidence, steps, counters_allow_adjacency(pairs))


def weight_relation(c: WeightComparison, thresholds: LineageThresholds | None = None) -> str | None:
    """``same-weights``, ``fine-tuned-from`` (either direction; see ``c.direction``) or ``None``."""
    th = thresholds or LineageThresholds()
    if c.same_weights:
        return "same-weights"
    if c.similarity is not None and c.matched >= th.min_matched and c.similarity >= th.fine_tuned:
        return "fine-tuned-from"
    return None


@dataclass(frozen=True)
class Edge:
    """``child`` was fine-tuned from ``parent`` (keys of the fingerprints given).

    ``directed``: the orientation rests on the weights (the direction votes of its tree, or
    without an ``order`` its weak kurtosis votes); false when the ``order`` given (older first)
    or the key order decided."""

    parent: str
    child: str
    similarity: float
    directed: bool


def reconstruct_tree(fingerprints: Mapping[str, WeightFingerprint],
                     thresholds: LineageThresholds | None = None,
                     order: Mapping[str, float] | None = None) -> list[Edge]:
    """The model trees of ``fingerprints`` (key -> fingerprint), after MoTHer: one :class:`Edge`
    per model that has a parent among them. Exact copies (same weights) are one model: the
    first key stands for them.

    1. Structure: the maximum branching (Edmonds: every model at most one parent) over the
       arcs parent -> child of the pairs at or above ``thresholds.fine_tuned``, weighted first by
       the share of byte-identical weights (exact: a frozen tensor is shared history), then by
       similarity (siblings and a grandparent are less similar than a parent, whose update is
       one step, not two). Step counters prune arcs: none against a counter's direction, none
       between models whose BatchNorm statistics moved without their counters
       (:attr:`WeightComparison.adjacent`).
    2. Directed: in each tree, the root whose orientation agrees with most pairwise direction
       votes (:func:`compare`'s ``direction``; a counter vote weighs :data:`COUNTER_VOTE`). A
       tie goes to the oldest by ``order`` (e.g. registration time) when one is given; without
       one, to the root that agrees with most *weak* votes (the sign of every kurtosis change,
       even one too small to be decisive: right for 78-89 % of the generated trees' edges),
       then to the first key.

    Cost: one :func:`compare` per pair (quadratic; meant for the models of one architecture).
    """
    import networkx as nx

    th = thresholds or LineageThresholds()
    keys: list[str] = []
    seen: dict[str, str] = {}
    for k, fp in fingerprints.items():  # exact copies: one node
        if fp.weights_hash not in seen:
            seen[fp.weights_hash] = k
            keys.append(k)
    rank = {k: i for i, k in enumerate(keys)}
    arcs = nx.DiGraph()
    arcs.add_nodes_from(keys)
    pairs: dict[frozenset[str], tuple[float, int, int]] = {}
    for i, ka in enumerate(keys):
        for kb in keys[i + 1:]:
            c = compare(fingerprints[ka], fingerprints[kb], th)
            if weight_relation(c, th) != "fine-tuned-from" or not c.adjacent:
                continue
            sim = float(c.similarity or 0.0)
            vote = {"a->b": 1, "b->a": -1}.get(c.direction or "", 0) * (COUNTER_VOTE if c.evidence == "counters" else 1)
            weak = int(np.sign(c.kurtosis_delta)) * (1 if KURTOSIS_GROWS else -1)  # even a change too small to decide
            pairs[frozenset((ka, kb))] = (sim, vote, weak)
            # byte-identical tensors are exact shared history and come first, then similarity; a
            # tiny older-first bias makes ties deterministic
            weight = _SHARED * (1.0 - c.changed) + sim
            for u, v in ((ka, kb), (kb, ka)):
                if c.evidence == "counters" and c.direction != ("a->b" if u == ka else "b->a"):
                    continue  # a step counter never runs backwards
                arcs.add_edge(u, v, weight=weight + _TIE * (rank[v] - rank[u]) / max(len(keys), 1))
    branching = nx.maximum_branching(arcs, attr="weight") if arcs.number_of_edges() else arcs
    adj: dict[str, list[tuple[str, float, int, int]]] = {k: [] for k in keys}
    for u, v in branching.edges():
        sim, vote, weak = pairs[frozenset((u, v))]
        ka, kb = (u, v) if rank[u] < rank[v] else (v, u)
        adj[ka].append((kb, sim, vote, weak))  # votes > 0: ka is kb's parent
        adj[kb].append((ka, sim, -vote, -weak))
    edges: list[Edge] = []
    done: set[str] = set()
    for start in keys:
        if start in done or not adj[start]:
            continue
        comp = _component(adj, start)
        done.update(comp)
        scores = {r: _agreement(adj, r) for r in comp}
        best = max(strong for strong, _ in scores.values())
        tied = [r for r in comp if scores[r][0] == best]
        if order is not None:  # the registry's order before the weak votes
            root = min(tied, key=lambda r: (order.get(r, float("inf")), -scores[r][1], rank[r]))
            directed = len(tied) == 1
        else:
            root = min(tied, key=lambda r: (-scores[r][1], rank[r]))
            directed = sum(1 for r in tied if scores[r][1] == scores[root][1]) == 1
        stack, parent_of = [root], {root: None}
        while stack:
            u = stack.pop()
            for v, sim, _, _ in adj[u]:
                if v not in parent_of:
                    parent_of[v] = u
                    edges.append(Edge(u, v, sim, directed))
                    stack.append(v)
    return sorted(edges, key=lambda e: (e.parent, e.child))


def _component(adj: Mapping[str, list[tuple[str, float, int, int]]], start: str) -> list[str]:
    comp, stack, seen = [], [start], {start}
    while stack:
        u = stack.pop()
        comp.append(u)
        for v, *_ in adj[u]:
            if v not in seen:
                seen.add(v)
                stack.append(v)
    return comp


def _agreement(adj: Mapping[str, list[tuple[str, float, int, int]]], root: str) -> tuple[int, int]:
    """Decisive and weak pairwise votes, each agreeing minus disagreeing with the tree oriented
    away from ``root``."""
    strong = weak = 0
    stack, seen = [root], {root}
    while stack:
        u = stack.pop()
        for v, _, vote, w in adj[u]:
            if v not in seen:
                seen.add(v)
                strong, weak = strong + vote, weak + w  # > 0: u is v's parent, as this orientation says
                stack.append(v)
    return strong, weak
