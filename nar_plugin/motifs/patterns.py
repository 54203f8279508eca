"""Motif patterns: keys and readable strings of contiguous windows of the topological order.

An instance's type is its *pattern*: the induced subgraph with its node labels (op type +
attributes). Its key is a WL hash of that subgraph, invariant to node order, so the same pattern
in another graph, process or release (same :data:`MOTIF_VERSION`) has the same key.
"""

from __future__ import annotations

from nar_plugin.graph import ArchGraph, NodeAttrs, digest, wl_refine
from nar_plugin.motifs.config import MOTIF_VERSION
from nar_plugin.motifs.labels import node_labels

__all__ = ["Patterns", "Signature", "motif_key", "render_node"]

#: A window's label ids and internal edges, both relative to its start.
Signature = tuple[tuple[int, ...], tuple[tuple[int, int], ...]]


def render_node(op: str, a: NodeAttrs) -> str:
    """Compact, readable node label: ``conv(k3,s2,dw,w7>8)``; widths are log2 buckets."""
    parts = []
    if a.kernel:
        parts.append(f"k{a.kernel}")
    if a.stride:
        parts.append(f"s{a.stride}")
    if a.groups:
        parts.append({1: "dw", 2: "grp"}.get(a.groups, f"g{a.groups}"))
    if a.width_in or a.width_out:
        parts.append(f"w{a.width_in}>{a.width_out}")
    return f"{op}({','.join(parts)})" if parts else op


class Patterns:
    """Pattern keys and strings of contiguous windows ``[s, e)`` of a graph's topological order.

    A window's *signature* (its label ids and its internal edges, both relative to ``s``) is
    cheap to build and identifies the pattern exactly for windows of the same graph; the
    expensive part (WL hash, canonical string) is computed once per distinct signature.

    Args:
        graph: the graph.

    Attributes:
        preds: sorted predecessors per node.
        label_ids: initial label id per node (:func:`~nar_plugin.motifs.labels.node_labels`).
    """

    def __init__(self, graph: ArchGraph) -> None:
        self.graph = graph
        self.preds = [sorted(graph.predecessors(v)) for v in range(graph.num_nodes)]
        self.labels, self.label_ids = node_labels(graph)
        self._cache: dict[Signature, tuple[str, str, str]] = {}

    def signature(self, s: int, e: int) -> Signature:
        """The signature of the window ``[s, e)``; ``O((e - s) * deg)``."""
        edges = tuple((p - s, v - s) for v in range(s, e) for p in self.preds[v] if p >= s)
        return tuple(self.label_ids[s:e]), edges

    def key(self, s: int, e: int) -> tuple[str, str, str]:
        """``(key, canonical pattern string, op preview)`` of the window ``[s, e)``."""
        sig = self.signature(s, e)
        hit = self._cache.get(sig)
        if hit is None:
            hit = self._describe(s, e, sig[1])
            self._cache[sig] = hit
        return hit

    def _describe(self, s: int, e: int, edges: tuple[tuple[int, int], ...]) -> tuple[str, str, str]:
        m = e - s
        ins: list[list[int]] = [[] for _ in range(m)]
        outs: list[list[int]] = [[] for _ in range(m)]
        for a, b in edges:
            outs[a].append(b)
            ins[b].append(a)
        base = [self.labels[v] for v in range(s, e)]
        # WL refinement on the motif alone, until the colour partition is stable: node-order
        # invariant, so the same pattern in any graph (or any position) gets the same key.
        colours = wl_refine(base, ins, outs, m, until_stable=True)[-1]
        key = digest(f"motif-v{MOTIF_VERSION}|{m}|{len(edges)}|" + "|".join(sorted(colours)))
        # Canonical order: by depth (longest path from a motif source), then label, then WL
        # colour. Ties left are WL-equivalent nodes, interchangeable in every DAG a model gives.
        depth = [0] * m
        for i in range(m):  # relative order is topological
            for j in ins[i]:
                depth[i] = max(depth[i], depth[j] + 1)
        order = sorted(range(m), key=lambda i: (depth[i], base[i], colours[i], i))
        rank = {i: r for r, i in enumerate(order)}
        rendered = [render_node(self.graph.ops[s + i], self.graph.attrs[s + i]) for i in order]
        edge_txt = " ".join(f"{x}>{y}" for x, y in sorted((rank[a], rank[b]) for a, b in edges))
        pattern = " ".join(rendered) + " | " + edge_txt
        preview = " ".join(self.graph.ops[s + i] for i in order)
        return key, pattern, preview


def motif_key(pattern: ArchGraph) -> str:
    """The cross-graph key of ``pattern`` taken as one motif.

    Equal to the ``type_keys`` entry of every instance whose induced subgraph is isomorphic to
    ``pattern`` (node labels included), in any graph and whatever the node order; use it to
    look a motif up across graphs, e.g. ``motif_key(mg.instance_subgraph(i)) == mg.type_keys[i]``.

    Complexity: ``O(n * E)`` worst case for the WL rounds; motifs are small.
    """
    return Patterns(pattern).key(0, pattern.num_nodes)[0]
