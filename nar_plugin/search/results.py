"""What search returns: :class:`Match`, :class:`DuplicateReport`, and the :class:`Explanation`
of a match, computed from the compact description (:func:`describe_graph`) stored with every
indexed model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.graph import ArchGraph
from nar_plugin.graph.params import unmatched
from nar_plugin.motifs import MotifConfig

__all__ = ["DuplicateReport", "Explanation", "Match", "describe_graph", "explain"]


def describe_graph(graph: ArchGraph, motif_steps: int = MotifConfig.steps) -> dict[str, Any]:
    """Compact, JSON-able description stored with every indexed model (used by ``explain``).

    Holds the op histogram, the histogram of motif types (cross-graph stable keys) and the fine
    signature (``fine``: node labels with absolute widths, for the near-duplicate check and the
    rerank of :mod:`nar_plugin.evaluation.fine_structure`), so two models can be compared
    without keeping either graph. Cost: one motif sampling. Descriptions stored before ``fine``
    existed still work (the checks fall back to the op histogram).
    """
    from nar_plugin.evaluation.fine_structure import fine_signature
    from nar_plugin.motifs import sample_motifs

    mg = sample_motifs(graph, steps=motif_steps)
    motifs = Counter(mg.type_keys)
    return {
        "num_nodes": graph.num_nodes,
        "num_edges": graph.num_edges,
        "num_motifs": mg.num_instances,
        "ops": dict(graph.op_histogram()),
        "motifs": dict(motifs.most_common(64)),
        "fine": fine_signature(graph),
    }


@dataclass(frozen=True)
class Explanation:
    """Why two models are close: shared motif types and the op-level difference.

    Attributes:
        shared_motifs: motif type key -> (count in query, count in match), for shared types.
        motif_overlap: weighted Jaccard of the motif histograms, in [0, 1].
        op_diff: op -> (count in query, count in match), only where they differ.
        same_hash: the two graphs are identical architectures.
        param_diff: the parameter shapes only one side holds, ``(query's, match's)`` canonical
            tokens (:mod:`nar_plugin.graph.params`); ``None`` when either description lacks them.
    """

    shared_motifs: dict[str, tuple[int, int]]
    motif_overlap: float
    op_diff: dict[str, tuple[int, int]]
    same_hash: bool
    param_diff: tuple[dict[str, int], dict[str, int]] | None = None

    def __str__(self) -> str:
        if self.same_hash:
            return "same architecture (same graph hash)"
        parts = [f"{len(self.shared_motifs)} shared motif types (overlap {self.motif_overlap:.0%})"]
        if self.op_diff:
            diffs = sorted(self.op_diff.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:5]
            parts.append("ops differ: " + ", ".join(f"{op} {a}->{b}" for op, (a, b) in diffs))
        else:
            parts.append("same op counts")
        if self.param_diff is not None:
            parts.append(_param_text(*self.param_diff))
        return "; ".join(parts)


def _param_text(only_q: Mapping[str, int], only_m: Mapping[str, int]) -> str:
    """``parameters: ...``: which weight matrices / vectors one side has and the other lacks."""
    def side(d: Mapping[str, int]) -> str:
        mats = sorted((t for t in d if not t.startswith("v")), key=lambda t: -d[t])
        nvec = sum(n for t, n in d.items() if t.startswith("v"))
        nmat = sum(d[t] for t in mats)
        shown = ", ".join(mats[:3]) + (", ..." if len(mats) > 3 else "")
        out = [f"{nmat} weight {'matrix' if nmat == 1 else 'matrices'} ({shown})"] if nmat else []
        out += [f"{nvec} {'vector' if nvec == 1 else 'vectors'}"] if nvec else []
        return ", ".join(out) or "nothing"
    if not only_q and not only_m:
        return "same parameter shapes"
    mats = [sum(n for t, n in d.items() if not t.startswith("v")) for d in (only_q, only_m)]
    if sum(mats) > 6:  # not one network with a small change: counts say enough
        return f"parameter shapes differ: {mats[0]} / {mats[1]} weight matrices unmatched"
    return f"parameters only in the query: {side(only_q)}; only in the match: {side(only_m)}"


def explain(q: Mapping[str, Any], m: Mapping[str, Any], same_hash: bool) -> Explanation:
    """The :class:`Explanation` of two :func:`describe_graph` descriptions."""
    qm, mm = Counter(q.get("motifs") or {}), Counter(m.get("motifs") or {})
    shared = {k: (qm[k], mm[k]) for k in sorted(set(qm) & set(mm), key=lambda k: -(qm[k] + mm[k]))}
    inter = sum((qm & mm).values())
    union = sum((qm | mm).values())
    qo, mo = Counter(q.get("ops") or {}), Counter(m.get("ops") or {})
    diff = {op: (qo[op], mo[op]) for op in sorted(set(qo) | set(mo)) if qo[op] != mo[op]}
    qs, ms = ((d.get("fine") or {}).get("shapes") for d in (q, m))
    params = unmatched(qs, ms) if isinstance(qs, Mapping) and isinstance(ms, Mapping) and qs and ms else None
    return Explanation(shared, inter / union if union else 0.0, diff, same_hash, params)


@dataclass(frozen=True)
class Match:
    """One result of :func:`~nar_plugin.search.api.find_similar`.

    Attributes:
        key: index key of the match (its format belongs to whoever indexed it: ``file:...``,
            or an integration's own scheme).
        score: cosine similarity to the query, larger = closer.
        relation: ``same-weights`` / ``fine-tuned-from`` / ``same-architecture`` /
            ``near-duplicate`` / ``related`` / ``unrelated`` (see :mod:`nar_plugin.search.relations`).
        metadata: what was stored with the match (source, uri, names...), plus what folded into
            it (e.g. the registered versions of an MLflow model, see
            :mod:`nar_plugin.search.resolvers`).
        graph_hash: the match's architecture hash.
        weights: the weight evidence (a :class:`~nar_plugin.lineage.compare.WeightComparison`)
            when both models have fingerprints and their weights are related.
        lineage: for ``fine-tuned-from``: ``parent`` (the match is the query's parent),
            ``child`` (fine-tuned from the query) or ``None`` (direction unknown).
        fine: fine similarity of the two graphs (node labels with absolute widths, 1.0 = the
            same), ``None`` when either description lacks the signature.
        promoted: moved ahead of closer cosines as the structurally closest of the shortlist
            (:func:`~nar_plugin.evaluation.fine_structure.promote_first`).
    """

    key: str
    score: float
    relation: str
    metadata: dict[str, Any] = field(default_factory=dict)
    graph_hash: str | None = None
    _query: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    weights: Any = field(default=None, compare=False)
    lineage: str | None = None
    fine: float | None = field(default=None, compare=False)
    promoted: bool = field(default=False, compare=False)

    def explain(self) -> Explanation:
        """Shared motif types and op-level differences between the query and this match."""
        return explain(self._query.get("description") or {}, self.metadata.get("description") or {},
                       self.graph_hash is not None and self.graph_hash == self._query.get("graph_hash"))

    def why(self) -> str:
        """One line: the relation's evidence (weights first, then the architecture)."""
        arch = str(self.explain())
        if self.promoted and self.fine is not None:
            from nar_plugin.evaluation.fine_structure import shapes_near

            same = shapes_near(self._query.get("description"), self.metadata.get("description"))
            evidence = f"fine similarity {self.fine:.2f}" + (", parameter shapes equal up to a head" if same else "")
            arch = f"structurally closest of the shortlist ({evidence}), listed first; {arch}"
        if self.weights is None:
            return arch
        side = {"parent": "the match is the parent", "child": "the match was fine-tuned from the query"}
        extra = f"; {side[self.lineage]}" if self.lineage in side else ""
        return f"{self.weights.explain()}{extra}; {arch}"

    def to_dict(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.metadata.items() if k != "description"}
        return {"key": self.key, "score": round(self.score, 6), "relation": self.relation,
                "lineage": self.lineage, "graph_hash": self.graph_hash, "metadata": meta,
                "fine_similarity": None if self.fine is None else round(self.fine, 6),
                "promoted": self.promoted, "explanation": self.why()}


@dataclass(frozen=True)
class DuplicateReport:
    """Result of :func:`~nar_plugin.search.api.check_duplicate`.

    Attributes:
        is_duplicate: a model of the same or nearly the same architecture is already indexed
            (relation ``near-duplicate`` or stronger).
        relation: relation of the best match (``unrelated`` when the index is empty).
        best: the best match, if any: the strongest relation first (same weights, fine-tuned,
            same architecture before any higher-scoring near-duplicate).
        matches: all matches at or above ``near-duplicate``.
    """

    is_duplicate: bool
    relation: str
    best: Match | None
    matches: list[Match]
