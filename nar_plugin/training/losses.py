"""Training losses of the NAR encoder and the graph augmentation used for style invariance.

* :func:`motif_info_nce` -- motif level: a motif embedding against its own context embedding
  (positive) and the other motifs' contexts in the batch (negatives). Negatives with the same
  motif pattern (``type_ids``) are masked out: two copies of a ResNet bottleneck in one batch
  are not a contrast the encoder should learn.
* :func:`supcon_loss` -- graph level, supervised contrastive over family labels (re-exported
  from :mod:`nar_plugin.evaluation.baselines`, where the GNN baselines use the same function).
* :func:`augment_graph` -- a cheap "coding style" perturbation of an ArchGraph: drop or
  duplicate activation nodes and swap the order of nearby independent nodes. Two views of one
  architecture are positives in the graph-level loss. (The encoder itself no longer sees the
  re-ordering: :func:`~nar_plugin.model.encoder.prepare` renumbers nodes canonically, which makes
  node-order invariance exact instead of learned.)
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
import torch.nn.functional as F

from nar_plugin.evaluation.baselines import info_nce, supcon_loss
from nar_plugin.graph import ArchGraph

__all__ = ["supcon_loss", "info_nce", "motif_info_nce", "augment_graph", "ACTIVATIONS"]

#: Ops that :func:`augment_graph` may drop or duplicate (single-input elementwise activations).
ACTIVATIONS = frozenset({
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "mish",
    "elu", "leaky_relu", "prelu", "softplus",
})


def motif_info_nce(
    motif: torch.Tensor,
    context: torch.Tensor,
    temperature: float = 0.2,
    type_ids: torch.Tensor | None = None,
    max_items: int | None = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE between motifs and their own contexts, other contexts as negatives.

    Args:
        motif: ``[C, D]`` motif embeddings (Fs).
        context: ``[C, D]`` context embeddings (Fc), row-aligned with ``motif``.
        temperature: softmax temperature (> 0).
        type_ids: ``[C]`` pattern ids; off-diagonal pairs with equal ids are not negatives.
        max_items: subsample at most this many rows (the logits matrix is ``C x C``).
        generator: generator for the subsample (deterministic training).

    Returns:
        Scalar tensor (symmetric mean cross-entropy); ``0`` attached to the graph when
        ``C < 2``.

    Raises:
        ValueError: shapes disagree or ``temperature`` <= 0.
    """
    if motif.dim() != 2 or motif.shape != context.shape:
        raise ValueError(f"expected two [C, D] tensors of one shape, found {tuple(motif.shape)} "
                         f"and {tuple(context.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature}")
    c = motif.shape[0]
    if c < 2:
        return motif.sum() * 0.0 + context.sum() * 0.0
    if max_items is not None and c > max_items:
        keep = torch.randperm(c, generator=generator)[:max_items].to(motif.device)
        motif, context = motif[keep], context[keep]
        type_ids = type_ids[keep] if type_ids is not None else None
        c = max_items
    logits = F.normalize(motif, dim=1) @ F.normalize(context, dim=1).T / temperature
    if type_ids is not None:
        same = type_ids[:, None] == type_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(c, device=motif.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


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
    n = graph.num_nodes
    # replacement[v]: the list of new-node ids that stand for v's output
    new_ops: list[str] = []
    new_attrs = []
    new_inputs: list[list[int]] = []
    out_of: list[int] = [-1] * n
    for v in range(n):
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
    m = len(new_ops)
    succs: list[list[int]] = [[] for _ in range(m)]
    indeg = [0] * m
    for v, ins in enumerate(new_inputs):
        for p in ins:
            succs[p].append(v)
        indeg[v] = len(ins)
    prio = np.arange(m, dtype=np.float64) + (rng.random(m) * jitter if jitter > 0 else 0.0)
    heap = [(prio[v], v) for v in range(m) if indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        order.append(v)
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (prio[w], w))
    pos = {v: i for i, v in enumerate(order)}
    edges = sorted({(pos[p], pos[v]) for v, ins in enumerate(new_inputs) for p in ins})
    return ArchGraph([new_ops[v] for v in order], [new_attrs[v] for v in order], edges,
                     metadata=dict(graph.metadata))
