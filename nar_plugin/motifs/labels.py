"""Neighbour encoding: the per-node tokens motif sampling works on.

``label_0(v)`` is the node's op type plus attributes (:meth:`ArchGraph.label`); ``label_t(v)``
hashes ``label_{t-1}(v)`` with the multisets of its in- and out-neighbours' labels
(:meth:`ArchGraph.wl_labels`), so ``label_s`` encodes the radius-``s`` receptive field. BPE and
re-tiling compare labels only within one graph, so they use small integer ids numbered in order
of first appearance: deterministic and independent of hash order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from nar_plugin.graph import ArchGraph

__all__ = ["first_appearance_ids", "label_rounds", "node_labels"]


def first_appearance_ids(labels: Sequence[Hashable]) -> list[int]:
    """Replace each label by a small int: ``0`` for the first distinct label, ``1`` for the next."""
    seen: dict[Hashable, int] = {}
    return [seen.setdefault(x, len(seen)) for x in labels]


def label_rounds(graph: ArchGraph, steps: int) -> list[list[int]]:
    """Label ids per WL round ``0..steps`` (``[]`` for an empty graph).

    Complexity: ``O((N + E) * steps)``.
    """
    if not graph.num_nodes:
        return []
    return [first_appearance_ids(labels) for labels in graph.wl_labels(steps)]


def node_labels(graph: ArchGraph) -> tuple[list[str], list[int]]:
    """``(labels, ids)``: each node's initial label (op + attributes) and its id."""
    labels = [graph.label(v) for v in range(graph.num_nodes)]
    return labels, first_appearance_ids(labels)
