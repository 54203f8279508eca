"""Featurisation for :class:`~nar_plugin.model.encoder.NAREncoder`: graphs -> index tensors.

:func:`prepare` samples motifs (:func:`~nar_plugin.motifs.sample_motifs`) and turns one graph
into a :class:`PreparedGraph`. Every node belongs to exactly one motif instance, so *the batch
of all motif subgraphs of a graph is the graph itself with the edges that cross instances
removed*: no per-motif copies, no per-motif Python loop. :func:`collate` concatenates prepared
graphs with offsets (the PyG ``Batch`` idea, done by hand because a prepared graph has four
index spaces: nodes, instances, contexts, context nodes) into a :class:`PreparedBatch`, which
builds and caches the adjacencies the layers multiply with (:func:`direction_adjacency`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nar_plugin.graph import ATTR_BINS, ArchGraph
from nar_plugin.motifs import MotifConfig, MotifGraph, sample_motifs

__all__ = [
    "PreparedBatch",
    "PreparedGraph",
    "collate",
    "direction_adjacency",
    "node_feature_matrix",
    "prepare",
]

def node_feature_matrix(graph: ArchGraph) -> np.ndarray:
    """``[N, 6]`` int64: op index, then the attributes clipped to
    :data:`~nar_plugin.graph.ATTR_BINS`.

    The one featurisation of nodes: the encoder and the GNN baselines both embed these columns.
    """
    feats = np.asarray(graph.feature_matrix(), dtype=np.int64).reshape(graph.num_nodes, 6)
    for col, bins in enumerate(ATTR_BINS, start=1):
        np.clip(feats[:, col], 0, bins - 1, out=feats[:, col])
    return feats


@dataclass
class PreparedGraph:
    """Tensors of one architecture, ready for :func:`collate` (all on CPU, all ``long``).

    Attributes:
        x: ``[N, 6]`` node features (:func:`node_feature_matrix`).
        edge_index: ``[2, E_in]`` data-flow edges inside motif instances (node ids).
        graph_edge_index: ``[2, E]`` all data-flow edges (for ``node_layers``).
        node_to_instance: ``[N]`` instance id of each node.
        num_instances: ``M``.
        macro_edge_index: ``[2, E_macro]`` macro-graph edges (instance ids).
        type_ids: ``[M]`` 60-bit integer form of each instance's cross-graph ``type_key``
            (used to drop same-pattern false negatives in the motif-level loss).
        ctx_instance: ``[C]`` instance ids that have a context graph (training only).
        ctx_nodes: ``[Nc]`` graph node id of each context node.
        ctx_owner: ``[Nc]`` context index (``0..C-1``) of each context node.
        ctx_edge_index: ``[2, Ec]`` edges between context nodes (indices into ``ctx_nodes``).
        ctx_ring: ``[Nc]`` bool, True for neighbourhood nodes (outside the instance).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    node_to_instance: torch.Tensor
    num_instances: int
    macro_edge_index: torch.Tensor
    type_ids: torch.Tensor
    graph_edge_index: torch.Tensor = field(default_factory=lambda: torch.zeros((2, 0), dtype=torch.long))
    ctx_instance: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    ctx_nodes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    ctx_owner: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    ctx_edge_index: torch.Tensor = field(default_factory=lambda: torch.zeros((2, 0), dtype=torch.long))
    ctx_ring: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_contexts(self) -> int:
        return int(self.ctx_instance.numel())


def _edge_tensor(pairs: Sequence[tuple[int, int]] | np.ndarray) -> torch.Tensor:
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr.T))


def prepare(
    graph: ArchGraph,
    steps: int = MotifConfig.steps,
    max_size: int = MotifConfig.max_size,
    min_count: int = MotifConfig.min_count,
    contexts: int = 0,
    context_hops: int = 1,
    seed: int = 0,
    motifs: MotifGraph | None = None,
) -> PreparedGraph:
    """Featurise ``graph`` for :class:`~nar_plugin.model.encoder.NAREncoder`: motif sampling +
    index tensors.

    Args:
        graph: the architecture.
        steps, max_size, min_count: motif-sampling parameters (must match the encoder config).
        contexts: how many context graphs to build (training only; 0 for embedding). One
            instance per motif type is drawn (so negatives in the motif loss are mostly other
            patterns), at most ``contexts`` of them.
        context_hops: radius of the context graphs.
        seed: seed of the local generator that picks the context instances.
        motifs: an already sampled :class:`MotifGraph` of ``graph`` (skips sampling and the
            canonical renumbering: the caller's node order is kept).

    Returns:
        A :class:`PreparedGraph`. Cost: one :func:`sample_motifs` call plus ``O(N + E)``
        tensor building; contexts add ``O(contexts * context size)``.
    """
    if motifs is None:
        # motif sampling breaks ties by node index: renumber first, so that two traces of one
        # model (branches listed in another order) get the same motifs and the same embedding
        graph = graph.canonical_order()
    mg = motifs if motifs is not None else sample_motifs(graph, steps=steps, min_count=min_count, max_size=max_size)
    owner = np.asarray(mg.node_to_instance, dtype=np.int64)
    edges = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    inside = edges[owner[edges[:, 0]] == owner[edges[:, 1]]] if edges.size else edges
    type_ids = torch.tensor([int(k[:15], 16) for k in mg.type_keys], dtype=torch.long)
    prep = PreparedGraph(
        x=torch.from_numpy(node_feature_matrix(graph)),
        edge_index=_edge_tensor(inside),
        node_to_instance=torch.from_numpy(owner),
        num_instances=mg.num_instances,
        macro_edge_index=_edge_tensor(mg.macro_edges),
        type_ids=type_ids,
        graph_edge_index=_edge_tensor(edges),
    )
    if contexts > 0 and mg.num_instances > 1:
        _add_contexts(prep, mg, contexts, context_hops, np.random.default_rng(seed))
    return prep


def _add_contexts(prep: PreparedGraph, mg: MotifGraph, contexts: int, hops: int,
                  rng: np.random.Generator) -> None:
    by_type: dict[int, list[int]] = {}
    for i, t in enumerate(mg.types):
        by_type.setdefault(t, []).append(i)
    picks = [int(members[rng.integers(len(members))]) for members in by_type.values()]
    if len(picks) > contexts:
        picks = sorted(rng.choice(np.asarray(picks), size=contexts, replace=False).tolist())
    g = mg.graph
    chosen, nodes_all, owner_all, ring_all, edges_all = [], [], [], [], []
    offset = 0
    for i in picks:
        nodes, center = mg.context_nodes(i, hops)
        if all(center):  # no neighbourhood: nothing to predict
            continue
        pos = {v: j for j, v in enumerate(nodes)}
        for j, v in enumerate(nodes):
            for p in g.predecessors(v):
                q = pos.get(p)
                if q is not None:
                    edges_all.append((q + offset, j + offset))
        owner_all.extend([len(chosen)] * len(nodes))
        chosen.append(i)
        nodes_all.extend(nodes)
        ring_all.extend(not c for c in center)
        offset += len(nodes)
    if not chosen:
        return
    prep.ctx_instance = torch.tensor(chosen, dtype=torch.long)
    prep.ctx_nodes = torch.tensor(nodes_all, dtype=torch.long)
    prep.ctx_owner = torch.tensor(owner_all, dtype=torch.long)
    prep.ctx_edge_index = _edge_tensor(edges_all)
    prep.ctx_ring = torch.tensor(ring_all, dtype=torch.bool)


@dataclass(kw_only=True)
class PreparedBatch(PreparedGraph):
    """Several :class:`PreparedGraph` concatenated with offsets (see :func:`collate`): one
    prepared graph made of disjoint parts (as a PyG ``Batch`` is a ``Data``).

    Extra attributes: ``instance_to_graph`` ``[M]`` (the part of each instance) and
    ``num_graphs``; ``ctx_nodes`` index the batch's nodes, ``ctx_instance`` its instances.
    Adjacencies are built on first use and cached (:meth:`adjacency`).
    """

    instance_to_graph: torch.Tensor
    num_graphs: int
    _adj: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def _edges(self, which: str) -> tuple[torch.Tensor, int]:
        if which == "motif":
            return self.edge_index, int(self.x.shape[0])
        if which == "graph":
            return self.graph_edge_index, int(self.x.shape[0])
        if which == "context":
            return self.ctx_edge_index, int(self.ctx_nodes.numel())
        if which == "macro":
            return self.macro_edge_index, self.num_instances
        raise ValueError(f"unknown adjacency {which!r}: expected 'motif', 'graph', 'context' or 'macro'")

    def adjacency(self, which: str, conv: str = "gcn") -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, backward) adjacency of ``"motif"``, ``"graph"``, ``"context"`` or
        ``"macro"`` edges for layer type ``conv`` (GCN-normalised CSR with self loops for
        ``"gcn"``, plain 0/1 CSR for ``"gin"``; ``[2, E]`` edge lists for ``"gat"``), built on
        first use and cached on the batch."""
        hit = self._adj.get((which, conv))
        if hit is None:
            edges, n = self._edges(which)
            if conv == "gat":  # GATConv takes edge lists (it adds self loops itself)
                hit = (edges, edges.flip(0))
            else:
                hit = direction_adjacency(edges, n, normalise=conv == "gcn")
            self._adj[(which, conv)] = hit
        return hit

    def to(self, device: torch.device | str) -> PreparedBatch:
        """A copy with every tensor on ``device`` (adjacencies are rebuilt there)."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items() if k != "_adj"}
        return PreparedBatch(**moved)


def collate(graphs: Sequence[PreparedGraph]) -> PreparedBatch:
    """Concatenate prepared graphs into one batch (node, instance and context ids offset).

    Raises:
        ValueError: ``graphs`` is empty.
    """
    if not graphs:
        raise ValueError("collate needs at least one prepared graph")
    node_off = inst_off = ctx_off = cnode_off = 0
    ei, gei, n2i, mei, i2g, cinst, cnodes, cowner, cei = [], [], [], [], [], [], [], [], []
    for gi, p in enumerate(graphs):
        ei.append(p.edge_index + node_off)
        gei.append(p.graph_edge_index + node_off)
        n2i.append(p.node_to_instance + inst_off)
        mei.append(p.macro_edge_index + inst_off)
        i2g.append(torch.full((p.num_instances,), gi, dtype=torch.long))
        if p.num_contexts:
            cinst.append(p.ctx_instance + inst_off)
            cnodes.append(p.ctx_nodes + node_off)
            cowner.append(p.ctx_owner + ctx_off)
            cei.append(p.ctx_edge_index + cnode_off)
            ctx_off += p.num_contexts
            cnode_off += int(p.ctx_nodes.numel())
        node_off += p.num_nodes
        inst_off += p.num_instances
    empty = torch.zeros(0, dtype=torch.long)
    return PreparedBatch(
        x=torch.cat([p.x for p in graphs]),
        edge_index=torch.cat(ei, dim=1),
        node_to_instance=torch.cat(n2i),
        num_instances=inst_off,
        macro_edge_index=torch.cat(mei, dim=1),
        type_ids=torch.cat([p.type_ids for p in graphs]),
        instance_to_graph=torch.cat(i2g),
        num_graphs=len(graphs),
        graph_edge_index=torch.cat(gei, dim=1),
        ctx_instance=torch.cat(cinst) if cinst else empty,
        ctx_nodes=torch.cat(cnodes) if cnodes else empty,
        ctx_owner=torch.cat(cowner) if cowner else empty,
        ctx_edge_index=torch.cat(cei, dim=1) if cei else torch.zeros((2, 0), dtype=torch.long),
        ctx_ring=torch.cat([p.ctx_ring for p in graphs if p.num_contexts]) if cinst
        else torch.zeros(0, dtype=torch.bool),
    )


def direction_adjacency(edge_index: torch.Tensor, num_nodes: int,
                        normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjacencies along and against data flow, as CSR ``[dst, src]`` (PyG's ``adj_t``).

    With ``normalise`` (GCN): self loops added and ``fwd[dst, src] = d(dst)^-1/2 d(src)^-1/2``
    with ``d`` the in-degree + 1 (PyG's ``gcn_norm`` for messages ``src -> dst``). Without (GIN):
    plain 0/1 entries, no self loops (the layer adds ``(1 + eps) x`` itself). ``bwd`` is the
    same for the reversed edges. Built once per batch so that the layers only run sparse-dense
    products (single-threaded CSR spmm is about 3x faster than edge-list scatter on CPU, and
    deterministic).

    Shapes:
        edge_index: ``[2, E]`` long (``src``, ``dst``); returns two ``[N, N]`` sparse CSR.
    """
    loops = torch.arange(num_nodes, dtype=torch.long, device=edge_index.device)

    def one(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        if normalise:
            src = torch.cat([src, loops])
            dst = torch.cat([dst, loops])
            deg = torch.bincount(dst, minlength=num_nodes).to(torch.float32)
            inv = deg.pow(-0.5)
            w = inv[src] * inv[dst]
        else:
            w = torch.ones(src.numel(), dtype=torch.float32, device=src.device)
        order = torch.argsort(dst * num_nodes + src)
        dst, src, w = dst[order], src[order], w[order]
        crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        crow[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": used as documented
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, src, w, (num_nodes, num_nodes))

    return one(edge_index[0], edge_index[1]), one(edge_index[1], edge_index[0])
