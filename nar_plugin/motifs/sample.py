"""Motif sampling entry point: :func:`sample_motifs` and its result, :class:`MotifGraph`.

The pipeline (``docs/motifs.md`` gives the reasoning and the measurements):

1. neighbour encoding (:mod:`~nar_plugin.motifs.labels`): ``steps`` WL rounds;
2. BPE over the topological sequence, fine to coarse (:mod:`~nar_plugin.motifs.bpe`);
3. re-tiling, canonical phase and glue (:mod:`~nar_plugin.motifs.tiling`);
4. types: an instance's type is its pattern, keyed across graphs
   (:mod:`~nar_plugin.motifs.patterns`).

Every instance is a contiguous run of the topological order, hence the macro graph (one node per
instance, an edge wherever an original edge crosses two instances) is a DAG in topological order,
and every instance is weakly connected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.graph import ArchGraph
from nar_plugin.motifs.bpe import bpe
from nar_plugin.motifs.config import MOTIF_VERSION, MotifConfig
from nar_plugin.motifs.labels import label_rounds
from nar_plugin.motifs.patterns import Patterns
from nar_plugin.motifs.tiling import retile

__all__ = ["MotifGraph", "sample_motifs"]


@dataclass(frozen=True)
class MotifGraph:
    """A graph partitioned into motif instances, with the motif vocabulary and the macro graph.

    Build it with :func:`sample_motifs`. The lists are not copied; treat them as read-only.

    Attributes:
        graph: the partitioned :class:`ArchGraph`.
        instances: node indices of each instance, each list sorted; instances ordered by their
            first node (which is also a topological order of the macro graph).
        types: motif type id per instance. Equal ids mean equal patterns: induced subgraphs
            with equal node labels (op + attributes) and equal WL hash, which for the small
            DAGs motifs are means isomorphic. Ids are numbered in order of first appearance.
        type_keys: per instance, a hex key of its pattern (:func:`motif_key`), stable across
            graphs, processes and releases with the same :data:`MOTIF_VERSION` and
            vocabulary version; compare motif types of two graphs with these, not ``types``.
        vocabulary: type id -> readable pattern string: the nodes in a canonical order (by
            depth in the motif, label, WL colour) rendered as ``op(k3,s2,dw,w7>8)``
            (kernel, stride, depthwise/grouped, log2 width buckets), then ``|`` and the
            internal edges ``i>j`` between those positions.
        macro_edges: directed ``(src, dst)`` instance pairs where an original edge crosses two
            instances; sorted, de-duplicated, always ``src < dst``.
        node_to_instance: instance index of each graph node.
        steps: WL rounds used for the BPE tokens.
        min_count: minimum number of occurrences for a merge.
        max_size: maximum number of nodes in an instance.
        glue: whether non-repeated leftovers were merged into glue segments.
        version: :data:`MOTIF_VERSION` of the algorithm that made it.
    """

    graph: ArchGraph
    instances: list[list[int]]
    types: list[int]
    type_keys: list[str]
    vocabulary: dict[int, str]
    macro_edges: list[tuple[int, int]]
    node_to_instance: list[int]
    steps: int
    min_count: int
    max_size: int
    glue: bool = True
    version: int = MOTIF_VERSION
    _previews: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------- sizes
    # one-line size properties, alike in shape to ArchGraph's (shape-alike pairs listed by `duplicates` are deliberate: see docs/architecture.md, "Layout decisions")
    @property
    def num_instances(self) -> int:
        """Number of motif instances (= macro-graph nodes)."""
        return len(self.instances)

    @property
    def num_types(self) -> int:
        """Number of distinct motif types in this graph."""
        return len(self.vocabulary)

    @property
    def reduction_ratio(self) -> float:
        """Graph nodes per macro node (``>= 1``; ``1.0`` for an empty graph)."""
        if not self.instances:
            return 1.0
        return self.graph.num_nodes / len(self.instances)

    def type_counts(self) -> Counter[int]:
        """Number of instances of each type id."""
        return Counter(self.types)

    # ----------------------------------------------------------------- views
    def instance_subgraph(self, i: int) -> ArchGraph:
        """The induced subgraph of instance ``i`` (the input of the motif encoder Fs).

        ``O(size * deg)`` per call, so that encoding every motif of a graph stays linear.
        """
        return self.graph.subgraph(self.instances[i])

    def context_nodes(self, i: int, hops: int = 1) -> tuple[list[int], list[bool]]:
        """Instance ``i``'s nodes plus every node within ``hops`` undirected hops of them.

        Args:
            i: instance index.
            hops: neighbourhood radius (``0`` gives the instance itself).

        Returns:
            ``(nodes, center_mask)``: the sorted node indices, and per node whether it belongs
            to the instance itself. ``nodes`` is also the node order of :meth:`context`.

        Complexity: ``O(size of the neighbourhood * deg)``.
        """
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops}")
        g = self.graph
        center = self.instances[i]
        seen = set(center)
        frontier = list(center)
        for _ in range(hops):
            nxt: list[int] = []
            for v in frontier:
                for u in g.predecessors(v):
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
                for u in g.successors(v):
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
            frontier = nxt
        nodes = sorted(seen)
        own = set(center)
        return nodes, [v in own for v in nodes]

    def context(self, i: int, hops: int = 1) -> ArchGraph:
        """The context graph of instance ``i``: the subgraph induced by :meth:`context_nodes`.

        Its nodes are in the order of ``context_nodes(i, hops)[0]``; use the mask from that call
        to tell the instance's own nodes from the neighbourhood.
        """
        nodes, _ = self.context_nodes(i, hops)
        return self.graph.subgraph(nodes)

    def preview(self, type_id: int) -> str:
        """Short human-readable op sequence of a motif type (for CLI tables)."""
        return self._previews.get(type_id, self.vocabulary[type_id])

    def summary(self) -> dict[str, Any]:
        """Plain-data summary: sizes, reduction ratio, and per-type counts (most frequent first).

        ``repeated_coverage`` is the fraction of graph nodes inside instances of a type that
        occurs at least twice.
        """
        counts = self.type_counts()
        size_of: dict[int, int] = {}
        key_of: dict[int, str] = {}
        for nodes, t, k in zip(self.instances, self.types, self.type_keys):
            size_of.setdefault(t, len(nodes))
            key_of.setdefault(t, k)
        per_type = [
            {
                "type": t,
                "key": key_of[t],
                "count": counts[t],
                "size": size_of[t],
                "nodes": counts[t] * size_of[t],
                "pattern": self.vocabulary[t],
            }
            for t in sorted(counts, key=lambda t: (-counts[t], -size_of[t], t))
        ]
        n = self.graph.num_nodes
        repeated = sum(row["nodes"] for row in per_type if row["count"] >= 2)
        return {
            "nodes": n,
            "edges": self.graph.num_edges,
            "instances": self.num_instances,
            "types": self.num_types,
            "repeated_types": sum(1 for c in counts.values() if c >= 2),
            "macro_nodes": self.num_instances,
            "macro_edges": len(self.macro_edges),
            "reduction_ratio": self.reduction_ratio,
            "repeated_coverage": repeated / n if n else 0.0,
            "params": {"steps": self.steps, "min_count": self.min_count, "max_size": self.max_size,
                       "glue": self.glue, "version": self.version},
            "per_type": per_type,
        }

    def __repr__(self) -> str:
        return (
            f"MotifGraph(nodes={self.graph.num_nodes}, instances={self.num_instances}, "
            f"types={self.num_types}, macro_edges={len(self.macro_edges)}, "
            f"reduction={self.reduction_ratio:.1f}x, steps={self.steps}, "
            f"min_count={self.min_count}, max_size={self.max_size})"
        )


def sample_motifs(
    graph: ArchGraph,
    steps: int = MotifConfig.steps,
    min_count: int = MotifConfig.min_count,
    max_size: int = MotifConfig.max_size,
    *,
    glue: bool = MotifConfig.glue,
) -> MotifGraph:
    """Partition ``graph`` into motif instances and build the macro graph.

    Args:
        graph: the architecture graph.
        steps: rounds of neighbour encoding before BPE (``0`` = op type + attributes only).
            Larger values make merges more context-aware; the fragments they leave near the
            graph's boundaries are completed by the coarser BPE rounds and the re-tiling, so
            on the benchmark models steps 0-3 give the same layer motifs.
        min_count: a pair of segments is merged only while it occurs at least this often,
            and a pattern counts as repeated (claims windows, escapes glue) only with at least
            this many copies; ``2`` mines every repetition.
        max_size: no instance has more than this many nodes.
        glue: merge adjacent non-repeated leftovers into connected glue segments (of at most
            ``max_size`` nodes); ``False`` leaves them as BPE left them (often singletons).

    Defaults come from :class:`~nar_plugin.motifs.config.MotifConfig`.

    Returns:
        A :class:`MotifGraph`: every node in exactly one instance, instances ordered by first
        node, types numbered by first appearance. Deterministic: the same graph gives the same
        result in every process.

    Raises:
        ValueError: ``steps < 0``, ``min_count < 1`` or ``max_size < 1``.

    Complexity: ``O((N + E) * steps + steps * N * max_size * deg)``; see the module docstring.

    Example:
        >>> mg = sample_motifs(graph, steps=2)
        >>> mg.num_instances, mg.reduction_ratio
    """
    cfg = MotifConfig(steps=steps, min_count=min_count, max_size=max_size, glue=glue)
    patterns = Patterns(graph)
    segments = bpe(label_rounds(graph, cfg.steps), patterns.preds, cfg.min_count, cfg.max_size)
    return _assemble(graph, retile(segments, patterns, cfg.min_count, cfg.max_size, cfg.glue), patterns, cfg)


def _assemble(graph: ArchGraph, segments: list[tuple[int, int]], patterns: Patterns, cfg: MotifConfig) -> MotifGraph:
    """The :class:`MotifGraph` of the final ``segments``: types by first appearance, macro edges."""
    n = graph.num_nodes
    instances: list[list[int]] = []
    types: list[int] = []
    type_keys: list[str] = []
    vocabulary: dict[int, str] = {}
    previews: dict[int, str] = {}
    type_of: dict[str, int] = {}
    node_to_instance = [0] * n
    for idx, (s, e) in enumerate(segments):
        key, pattern, preview = patterns.key(s, e)
        t = type_of.get(key)
        if t is None:
            t = type_of[key] = len(type_of)
            vocabulary[t] = pattern
            previews[t] = preview
        instances.append(list(range(s, e)))
        types.append(t)
        type_keys.append(key)
        for v in range(s, e):
            node_to_instance[v] = idx
    macro = sorted({
        (node_to_instance[p], node_to_instance[v])
        for v in range(n) for p in patterns.preds[v]
        if node_to_instance[p] != node_to_instance[v]
    })
    return MotifGraph(
        graph=graph,
        instances=instances,
        types=types,
        type_keys=type_keys,
        vocabulary=vocabulary,
        macro_edges=macro,
        node_to_instance=node_to_instance,
        steps=cfg.steps,
        min_count=cfg.min_count,
        max_size=cfg.max_size,
        glue=cfg.glue,
        _previews=previews,
    )
