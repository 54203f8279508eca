"""The NAR encoder: motif encoder Fs, context encoder Fc, macro-graph encoder Fm, heads.

Pipeline for one architecture (DESIGN.md, "Encoder and training"):

1. :func:`prepare` samples motifs (:func:`~nar_plugin.motifs.sample_motifs`) and turns the
   graph into tensors (:class:`PreparedGraph`). Every node belongs to exactly one motif
   instance, so *the batch of all motif subgraphs of a graph is the graph itself with the
   edges that cross instances removed*: no per-motif copies, no per-motif Python loop.
2. **Fs** runs message passing over those intra-instance edges and pools nodes per instance
   (mean + max, one scatter each) -> one embedding per motif instance.
3. **Fm** runs message passing over the macro graph (one node per instance, node features =
   Fs outputs) and pools per architecture (mean + max) -> MLP projection to ``out_dim`` (128)
   -> L2 normalisation.
4. **Fc** (training only) encodes context graphs (an instance plus its ``context_hops``
   neighbourhood) and pools the *neighbourhood* nodes, so that the motif-level InfoNCE asks a
   motif embedding to predict what surrounds it (distributional, as word2vec does for words).

Many graphs are processed at once by :func:`collate`, which concatenates prepared graphs with
offsets (the PyG ``Batch`` idea, done by hand because a prepared graph has four index spaces:
nodes, instances, contexts, context nodes).

Message passing is direction-aware: every layer has one GCNConv along data flow and one
against it, summed (a data-flow graph is a DAG; a symmetric GCN would not tell a producer from
a consumer), with a residual connection.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv
from torch_geometric.utils import scatter

from nar_plugin.graph import OPS, VOCAB_VERSION, ArchGraph
from nar_plugin.motifs import MOTIF_VERSION, MotifGraph, sample_motifs

__all__ = [
    "ATTR_BINS",
    "EncoderConfig",
    "PreparedGraph",
    "PreparedBatch",
    "prepare",
    "collate",
    "NAREncoder",
    "config_hash",
]

#: Embedding-table sizes of the attribute columns 1..5 of :meth:`ArchGraph.feature_matrix`
#: (kernel, stride, groups, width_in bucket, width_out bucket); larger values are clipped.
ATTR_BINS: tuple[int, ...] = (16, 8, 3, 32, 32)

#: Message-passing layers :class:`EncoderConfig` accepts.
CONVS: tuple[str, ...] = ("gcn", "gin", "gat")
_GAT_HEADS = 4


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of :class:`NAREncoder` and of the featurisation it expects.

    Attributes:
        hidden: width of node, motif and macro-node features.
        out_dim: embedding dimension (128).
        motif_layers: message-passing layers of Fs.
        context_layers: message-passing layers of Fc.
        macro_layers: message-passing layers of Fm.
        conv: message-passing layer of every stage: ``"gcn"`` (GCNConv with symmetric
            normalisation, as in the paper) or ``"gin"`` (GINConv: sum aggregation and an MLP,
            as expressive as the WL test, so two wirings of the same ops stay apart) or
            ``"gat"`` (GATConv, 4 heads: attention over neighbours; ``hidden`` divisible by 4).
        node_layers: message-passing layers over the *whole* graph before Fs (0 = the paper's
            design, where a node sees only its own motif instance). With them, a motif
            instance's embedding knows how it is wired to its neighbours.
        num_classes: size of the family classification head (0 = none).
        steps: WL steps of motif sampling (part of the config: embeddings depend on it).
        min_count: ``min_count`` of motif sampling.
        max_size: largest motif instance.
        context_hops: radius of context graphs (training only).
        size_weighted: the architecture readout averages macro nodes weighted by their motif's
            node count (else a plain mean over macro nodes); max pooling is added either way.
        node_readout: also pool Fs's node states per architecture (mean + max) and concatenate
            them to the macro readout (a skip connection around Fm).
    """

    hidden: int = 64
    out_dim: int = 128
    motif_layers: int = 2
    context_layers: int = 2
    macro_layers: int = 2
    conv: str = "gin"
    node_layers: int = 4
    num_classes: int = 0
    steps: int = 2
    min_count: int = 2
    max_size: int = 32
    context_hops: int = 1
    size_weighted: bool = True
    node_readout: bool = True

    def __post_init__(self) -> None:
        if self.conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, found {self.conv!r}")
        if self.conv == "gat" and self.hidden % _GAT_HEADS:
            raise ValueError(f"conv 'gat' needs hidden divisible by {_GAT_HEADS}, found {self.hidden}")
        if self.node_layers < 0:
            raise ValueError(f"node_layers must be >= 0, found {self.node_layers}")
        for name in ("hidden", "out_dim", "motif_layers", "macro_layers", "max_size", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.steps < 0 or self.context_hops < 1 or self.context_layers < 1 or self.num_classes < 0:
            raise ValueError("steps must be >= 0, context_hops and context_layers >= 1, "
                             f"num_classes >= 0; found {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Rebuild a config; every field must be present (a missing one would silently take
        today's default, which may not be what the weights were trained with)."""
        known = set(cls.__dataclass_fields__)
        unknown, missing = sorted(set(data) - known), sorted(known - set(data))
        if unknown or missing:
            raise ValueError(f"encoder config does not match this nar-plugin: unknown keys {unknown}, "
                             f"missing keys {missing}")
        return cls(**data)


def config_hash(config: EncoderConfig) -> str:
    """Short stable hash of the parts of the config that change embeddings (not the head)."""
    d = config.to_dict()
    d.pop("num_classes")  # the classification head is training-only
    d.pop("context_layers")
    d.pop("context_hops")
    text = json.dumps({"vocab": VOCAB_VERSION, "motif": MOTIF_VERSION, **d}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


# ===================================================================== featurisation
@dataclass
class PreparedGraph:
    """Tensors of one architecture, ready for :func:`collate` (all on CPU, all ``long``).

    Attributes:
        x: ``[N, 6]`` node features (op index, clipped attributes).
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
    steps: int = 2,
    max_size: int = 32,
    min_count: int = 2,
    contexts: int = 0,
    context_hops: int = 1,
    seed: int = 0,
    motifs: MotifGraph | None = None,
) -> PreparedGraph:
    """Featurise ``graph`` for :class:`NAREncoder`: motif sampling + index tensors.

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
    n = graph.num_nodes
    feats = np.asarray(graph.feature_matrix(), dtype=np.int64).reshape(n, 6)
    for col, bins in enumerate(ATTR_BINS, start=1):
        np.clip(feats[:, col], 0, bins - 1, out=feats[:, col])
    owner = np.asarray(mg.node_to_instance, dtype=np.int64)
    edges = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    inside = edges[owner[edges[:, 0]] == owner[edges[:, 1]]] if edges.size else edges
    type_ids = torch.tensor([int(k[:15], 16) for k in mg.type_keys], dtype=torch.long)
    prep = PreparedGraph(
        x=torch.from_numpy(feats),
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


@dataclass
class PreparedBatch:
    """Several :class:`PreparedGraph` concatenated with offsets (see :func:`collate`).

    Extra attributes over :class:`PreparedGraph`: ``instance_to_graph`` ``[M]`` and
    ``num_graphs``; ``ctx_nodes`` index the batch's nodes, ``ctx_instance`` its instances.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    node_to_instance: torch.Tensor
    num_instances: int
    macro_edge_index: torch.Tensor
    type_ids: torch.Tensor
    instance_to_graph: torch.Tensor
    num_graphs: int
    graph_edge_index: torch.Tensor
    ctx_instance: torch.Tensor
    ctx_nodes: torch.Tensor
    ctx_owner: torch.Tensor
    ctx_edge_index: torch.Tensor
    ctx_ring: torch.Tensor

    _adj: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def num_contexts(self) -> int:
        return int(self.ctx_instance.numel())

    def adjacency(self, which: str, conv: str = "gcn") -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, backward) CSR adjacency of ``"motif"``, ``"graph"``, ``"context"`` or
        ``"macro"`` edges for layer type ``conv`` (GCN-normalised with self loops for
        ``"gcn"``, plain 0/1 for ``"gin"``; ``[2, E]`` edge lists for ``"gat"``), built on
        first use and cached on the batch."""
        hit = self._adj.get((which, conv))
        if hit is None:
            if which == "motif":
                edges, n = self.edge_index, int(self.x.shape[0])
            elif which == "graph":
                edges, n = self.graph_edge_index, int(self.x.shape[0])
            elif which == "context":
                edges, n = self.ctx_edge_index, int(self.ctx_nodes.numel())
            elif which == "macro":
                edges, n = self.macro_edge_index, self.num_instances
            else:
                raise ValueError(f"unknown adjacency {which!r}")
            if conv == "gat":  # GATConv takes edge lists (it adds self loops itself)
                hit = (edges, edges.flip(0))
            else:
                hit = _direction_adj(edges, n, normalise=conv == "gcn")
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


# ===================================================================== layers
def _direction_adj(edge_index: torch.Tensor, num_nodes: int,
                   normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjacencies along and against data flow, as CSR ``[dst, src]`` (PyG's ``adj_t``).

    With ``normalise`` (GCN): self loops added and ``fwd[dst, src] = d(dst)^-1/2 d(src)^-1/2``
    with ``d`` the in-degree + 1 (PyG's ``gcn_norm`` for messages ``src -> dst``). Without (GIN):
    plain 0/1 entries, no self loops (the layer adds ``(1 + eps) x`` itself). ``bwd`` is the
    same for the reversed edges. Built once per batch so that the layers only run sparse-dense
    products (single-threaded CSR spmm is about 3x faster than edge-list scatter on CPU, and
    deterministic).
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


def _gin_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))


class _DirLayer(nn.Module):
    """One direction-aware message-passing layer: a conv along edges + one against them.

    ``x' = x + relu(conv_fwd(x, A_fwd) + conv_bwd(x, A_bwd))`` with the adjacencies from
    :func:`_direction_adj` (GCNConv with ``normalize=False``: the adjacency is normalised
    already; GINConv with a trainable ``eps`` and a 2-layer MLP; GATConv with 4 heads).
    """

    def __init__(self, hidden: int, conv: str = "gcn") -> None:
        super().__init__()
        if conv == "gcn":
            self.fwd: nn.Module = GCNConv(hidden, hidden, normalize=False)
            self.bwd: nn.Module = GCNConv(hidden, hidden, normalize=False)
        elif conv == "gin":
            self.fwd = GINConv(_gin_mlp(hidden), train_eps=True)
            self.bwd = GINConv(_gin_mlp(hidden), train_eps=True)
        else:
            self.fwd = GATConv(hidden, hidden // _GAT_HEADS, heads=_GAT_HEADS)
            self.bwd = GATConv(hidden, hidden // _GAT_HEADS, heads=_GAT_HEADS)

    def reset_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()

    def forward(self, x: torch.Tensor, adj: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return x + F.relu(self.fwd(x, adj[0]) + self.bwd(x, adj[1]))


class _GNN(nn.Module):
    """A stack of :class:`_DirLayer` (one shape for the node stage, Fs, Fc and Fm)."""

    def __init__(self, hidden: int, layers: int, conv: str = "gcn") -> None:
        super().__init__()
        self.layers = nn.ModuleList(_DirLayer(hidden, conv) for _ in range(layers))

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: torch.Tensor, adj: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, adj)
        return x


def _mean_max(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat([scatter(x, index, 0, dim_size=size, reduce="mean"),
                      scatter(x, index, 0, dim_size=size, reduce="max")], dim=1)


class NAREncoder(nn.Module):
    """Multi-level NAR encoder (Fs motif encoder, Fc context encoder, Fm macro encoder).

    Args:
        config: an :class:`EncoderConfig` (keyword overrides allowed: ``NAREncoder(hidden=32)``).

    Shapes:
        input: a :class:`PreparedBatch` (``collate([prepare(g) ...])``).
        :meth:`forward`: ``[num_graphs, out_dim]`` unit-norm embeddings.
        :meth:`encode_motifs`: ``[num_instances, hidden]``.
        :meth:`encode_contexts`: ``[num_contexts, hidden]``.

    Example:
        >>> enc = NAREncoder(EncoderConfig()).eval()
        >>> emb = enc(collate([prepare(g) for g in graphs]))
    """

    def __init__(self, config: EncoderConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or EncoderConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        h = cfg.hidden
        self.op_emb = nn.Embedding(len(OPS), h)
        self.attr_emb = nn.ModuleList(nn.Embedding(bins, h) for bins in ATTR_BINS)
        self.fn = _GNN(h, cfg.node_layers, cfg.conv)
        self.fs = _GNN(h, cfg.motif_layers, cfg.conv)
        self.fs_out = nn.Linear(2 * h, h)
        self.fc = _GNN(h, cfg.context_layers, cfg.conv)
        self.fc_out = nn.Linear(2 * h, h)
        self.fm = _GNN(h, cfg.macro_layers, cfg.conv)
        readout = 4 * h if cfg.node_readout else 2 * h
        self.proj = nn.Sequential(nn.Linear(readout, h), nn.ReLU(), nn.Linear(h, cfg.out_dim))
        self.classifier = nn.Linear(cfg.out_dim, cfg.num_classes) if cfg.num_classes > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.op_emb.reset_parameters()
        for emb in self.attr_emb:
            emb.reset_parameters()
        for module in (self.fn, self.fs, self.fs_out, self.fc, self.fc_out, self.fm):
            module.reset_parameters()
        for layer in self.proj:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.classifier is not None:
            self.classifier.reset_parameters()

    # ----------------------------------------------------------------- parts
    def node_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 6]`` long -> ``[N, hidden]``: op embedding + attribute embeddings."""
        h = self.op_emb(x[:, 0])
        for col, emb in enumerate(self.attr_emb, start=1):
            h = h + emb(x[:, col])
        return h

    def motif_node_states(self, batch: PreparedBatch, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Fs's node states: ``node_layers`` of message passing over the whole graph (none by
        default), then Fs's layers over the intra-instance edges only."""
        h = self.node_features(batch.x) if nodes is None else nodes
        if self.config.node_layers:
            h = self.fn(h, batch.adjacency("graph", self.config.conv))
        return self.fs(h, batch.adjacency("motif", self.config.conv))

    def encode_motifs(self, batch: PreparedBatch, nodes: torch.Tensor | None = None,
                      states: torch.Tensor | None = None) -> torch.Tensor:
        """Fs: message passing inside instances, mean+max pooled per instance."""
        h = self.motif_node_states(batch, nodes) if states is None else states
        return self.fs_out(_mean_max(h, batch.node_to_instance, batch.num_instances))

    def encode_contexts(self, batch: PreparedBatch, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Fc: message passing over context graphs, pooled over each context's neighbourhood."""
        h = self.node_features(batch.x) if nodes is None else nodes
        h = self.fc(h[batch.ctx_nodes], batch.adjacency("context", self.config.conv))
        ring = batch.ctx_ring
        return self.fc_out(_mean_max(h[ring], batch.ctx_owner[ring], batch.num_contexts))

    def project(self, batch: PreparedBatch, motif_emb: torch.Tensor | None = None,
                states: torch.Tensor | None = None) -> torch.Tensor:
        """Fm + projection head: un-normalised ``[num_graphs, out_dim]``.

        ``states`` (Fs node states) are reused when given; with ``node_readout`` they are
        pooled per graph and concatenated to the macro readout.
        """
        if states is None and (motif_emb is None or self.config.node_readout):
            states = self.motif_node_states(batch)
        m = self.encode_motifs(batch, states=states) if motif_emb is None else motif_emb
        m = self.fm(m, batch.adjacency("macro", self.config.conv))
        g = batch.instance_to_graph
        if self.config.size_weighted:
            # mean weighted by motif size: a 30-node block counts 30x a 1-node glue segment, so
            # the readout keeps the op mix of the whole graph (what a histogram sees) too
            w = torch.bincount(batch.node_to_instance, minlength=batch.num_instances).to(m.dtype)[:, None]
            mean = scatter(m * w, g, 0, dim_size=batch.num_graphs, reduce="sum")
            mean = mean / scatter(w, g, 0, dim_size=batch.num_graphs, reduce="sum").clamp(min=1)
            parts = [mean, scatter(m, g, 0, dim_size=batch.num_graphs, reduce="max")]
        else:
            parts = [_mean_max(m, g, batch.num_graphs)]
        if self.config.node_readout:
            assert states is not None
            parts.append(_mean_max(states, g[batch.node_to_instance], batch.num_graphs))
        return self.proj(torch.cat(parts, dim=1))

    def forward(self, batch: PreparedBatch) -> torch.Tensor:
        return F.normalize(self.project(batch), dim=1)

    def training_outputs(self, batch: PreparedBatch) -> dict[str, torch.Tensor]:
        """Everything the losses need in one pass: ``proj``, ``motif``, ``context``, ``logits``.

        ``motif`` holds the Fs embeddings of the instances that have contexts, row-aligned with
        ``context``; ``logits`` is absent without a classification head.
        """
        nodes = self.node_features(batch.x)
        states = self.motif_node_states(batch, nodes)
        motif = self.encode_motifs(batch, states=states)
        proj = self.project(batch, motif, states)
        out = {"proj": proj}
        if batch.num_contexts:
            out["motif"] = motif[batch.ctx_instance]
            out["context"] = self.encode_contexts(batch, nodes)
            out["motif_type"] = batch.type_ids[batch.ctx_instance]
        if self.classifier is not None:
            out["logits"] = self.classifier(proj)
        return out

    def __repr__(self) -> str:
        c = self.config
        return (f"{self.__class__.__name__}(hidden={c.hidden}, out_dim={c.out_dim}, conv={c.conv!r}, "
                f"layers=(node={c.node_layers}, Fs={c.motif_layers}, Fc={c.context_layers}, "
                f"Fm={c.macro_layers}), "
                f"steps={c.steps}, max_size={c.max_size}, num_classes={c.num_classes})")
