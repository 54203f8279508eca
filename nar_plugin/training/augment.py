"""Graph augmentation for style invariance: another "coding style" of the same architecture.

:func:`augment_graph` drops or duplicates activation nodes and swaps the order of nearby
independent nodes. Two views of one architecture are positives in the graph-level loss. (The
encoder itself no longer sees the re-ordering: :func:`~nar_plugin.model.features.prepare`
renumbers nodes canonically, which makes node-order invariance exact instead of learned.)
"""

from __future__ import annotations

import numpy as np

from nar_plugin.graph import ArchGraph, NodeAttrs, topological_order

__all__ = ["ACTIVATIONS", "augment_graph"]

#: Ops that :func:`augment_graph` may drop or duplicate (single-input elementwise activations).
ACTIVATIONS = frozenset({
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "mish",
    "elu", "leaky_relu", "prelu", "softplus",
})


def augment_graph(
    graph: ArchGraph,
    rng: np.random.Generator,
    p_drop: float = 0.15,
    p_dup: float = 0.05,
    jitter: float = 2.5,
) -> ArchGraph:
    """A style-perturbed copy of ``graph`` (same architecture, other "coding style").

    * each single-input activation node is dropped with probability ``p_drop`` (its consumers
      read its input instead), or duplicated with probability ``p_dup`` (``act -> act``);
    * nodes are re-ordered by a random topological order that prefers the original order
      (Kahn's algorithm with priority ``position + U(0, jitter)``), which swaps nearby
      independent branches, as a different tracer or ``forward`` would.

    Args:
        graph: the graph.
        rng: a seeded numpy generator.
        p_drop: drop probability per activation node.
        p_dup: duplication probability per (kept) activation node.
        jitter: width of the priority noise, in node positions (0 keeps the order).

    Returns:
        A new :class:`ArchGraph` (metadata copied); input/output nodes are never touched.
    """
    ops, attrs, inputs = _drop_or_duplicate(graph, rng, p_drop, p_dup)
    order = _jittered_topological_order(inputs, rng, jitter)
    pos = {v: i for i, v in enumerate(order)}
    edges = sorted({(pos[p], pos[v]) for v, ins in enumerate(inputs) for p in ins})
    return ArchGraph([ops[v] for v in order], [attrs[v] for v in order], edges,
                     metadata=dict(graph.metadata))


def _drop_or_duplicate(graph: ArchGraph, rng: np.random.Generator, p_drop: float,
                       p_dup: float) -> tuple[list[str], list[NodeAttrs], list[list[int]]]:
    """New nodes (ops, attributes, input lists) with activations dropped or duplicated."""
    new_ops: list[str] = []
    new_attrs: list[NodeAttrs] = []
    new_inputs: list[list[int]] = []
    out_of: list[int] = [-1] * graph.num_nodes  # out_of[v]: the new node that stands for v's output
    for v in range(graph.num_nodes):
        preds = sorted({out_of[p] for p in graph.predecessors(v)})
        op = graph.ops[v]
        if op in ACTIVATIONS and len(preds) == 1:
            u = rng.random()
            if u < p_drop:
                out_of[v] = preds[0]
                continue
            if u < p_drop + p_dup:
                new_ops.append(op)
                new_attrs.append(graph.attrs[v])
                new_inputs.append(preds)
                preds = [len(new_ops) - 1]
        new_ops.append(op)
        new_attrs.append(graph.attrs[v])
        new_inputs.append(preds)
        out_of[v] = len(new_ops) - 1
    return new_ops, new_attrs, new_inputs


def _jittered_topological_order(inputs: list[list[int]], rng: np.random.Generator,
                                jitter: float) -> list[int]:
    """Kahn's algorithm, ready node with the smallest ``position + U(0, jitter)`` first."""
    m = len(inputs)
    succs: list[list[int]] = [[] for _ in range(m)]
    for v, ins in enumerate(inputs):
        for p in ins:
            succs[p].append(v)
    prio = np.arange(m, dtype=np.float64) + (rng.random(m) * jitter if jitter > 0 else 0.0)
    return topological_order(succs, prio)
