"""GCN and GAT retrieval baselines on raw ArchGraphs (no motifs), as in the paper.

A 3-layer GCNConv / GATConv network embeds a graph; it is trained with the supervised
contrastive loss over family labels (:func:`~nar_plugin.training.losses.supcon_loss`) on the
training split only, with the same family-packed batches as the NAR encoder
(:func:`~nar_plugin.training.data.pk_batches`) and the same node featurisation
(:func:`~nar_plugin.model.features.node_feature_matrix`,
:func:`~nar_plugin.model.layers.embed_nodes`). :func:`~nar_plugin.evaluation.baselines.run_baselines`
evaluates them next to the histogram and WL baselines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, GCNConv

from nar_plugin.graph import ArchGraph
from nar_plugin.model.features import node_feature_matrix
from nar_plugin.model.layers import embed_nodes, mean_max, node_embedding_tables, reset_modules
from nar_plugin.training.data import pk_batches
from nar_plugin.training.losses import supcon_loss
from nar_plugin.utils.torch_context import seeded, torch_threads

__all__ = ["GNNBaseline", "gnn_embed", "graph_data", "train_gnn_baseline"]

logger = logging.getLogger(__name__)


def graph_data(g: ArchGraph, label: int = -1) -> Data:
    """PyG ``Data`` for the GNN baselines: clipped features, edges in both directions.

    Message passing along data flow only would leave early nodes blind to what consumes them;
    the reverse edges give every node both its producers and its consumers.

    Args:
        g: the graph.
        label: integer family code stored as ``y`` (``-1``: none).

    Returns:
        ``Data`` with ``x`` long ``[N, 6]`` (:func:`~nar_plugin.model.features.node_feature_matrix`),
        ``edge_index`` long ``[2, 2E]``, ``y`` long ``[1]``.
    """
    data = g.to_pyg()
    data.x = torch.from_numpy(node_feature_matrix(g))
    data.edge_index = torch.cat([data.edge_index, data.edge_index.flip(0)], dim=1)
    data.y = torch.tensor([label], dtype=torch.long)
    return data


class GNNBaseline(nn.Module):
    """GCN/GAT baseline network on raw ArchGraphs.

    Node features: sum of embeddings of the op index and of the clipped attribute values;
    ``num_layers`` GCNConv or GATConv (``heads`` heads concatenated) layers with ReLU and
    residual connections; global mean + max pooling; MLP projection to ``out_dim``; L2 norm.

    Args:
        conv: ``"gcn"`` or ``"gat"``.
        hidden: node feature width.
        out_dim: embedding dimension (128).
        num_layers: message-passing layers (3).
        heads: attention heads (GAT only; ``hidden`` must be divisible by it).
        num_classes: size of the optional classification head on the projection (0 = none).

    Shapes:
        input: a PyG ``Batch`` with ``x`` long ``[N, 6]`` (see :func:`graph_data`),
        ``edge_index`` long ``[2, E]``, ``batch`` long ``[N]``.
        output: ``[num_graphs, out_dim]`` unit-norm embeddings.

    Raises:
        ValueError: unknown ``conv`` or ``hidden`` not divisible by ``heads``.
    """

    def __init__(
        self,
        conv: Literal["gcn", "gat"] = "gcn",
        hidden: int = 64,
        out_dim: int = 128,
        num_layers: int = 3,
        heads: int = 4,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if conv not in ("gcn", "gat"):
            raise ValueError(f"conv must be 'gcn' or 'gat', found {conv!r}")
        if conv == "gat" and hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.conv_type, self.hidden, self.out_dim = conv, hidden, out_dim
        self.num_layers, self.heads, self.num_classes = num_layers, heads, num_classes
        self.history: list[float] = []
        self.op_emb, self.attr_emb = node_embedding_tables(hidden)
        self.convs = nn.ModuleList(
            GCNConv(hidden, hidden) if conv == "gcn"
            else GATConv(hidden, hidden // heads, heads=heads)
            for _ in range(num_layers)
        )
        self.proj = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.classifier = nn.Linear(out_dim, num_classes) if num_classes > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_modules(self.op_emb, self.attr_emb, self.convs, self.proj, self.classifier)

    def project(self, batch: Batch) -> torch.Tensor:
        """Un-normalised graph projection ``[num_graphs, out_dim]``."""
        x = embed_nodes(batch.x, self.op_emb, self.attr_emb)
        for conv in self.convs:
            # residual: keeps node identity through the layers (less over-smoothing)
            x = x + F.relu(conv(x, batch.edge_index))
        return self.proj(mean_max(x, batch.batch, batch.num_graphs))

    def forward(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.project(batch), dim=1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(conv={self.conv_type!r}, hidden={self.hidden}, "
                f"out_dim={self.out_dim}, num_layers={self.num_layers}, heads={self.heads}, "
                f"num_classes={self.num_classes})")


def _train_epoch(model: GNNBaseline, opt: torch.optim.Optimizer, data: list[Data],
                 batches: list[np.ndarray], device: str, temperature: float, ce_weight: float) -> float:
    """One pass over ``batches``; returns the mean loss per graph."""
    total, count = 0.0, 0
    for batch in DataLoader(data, batch_sampler=[b.tolist() for b in batches]):
        batch = batch.to(device)
        proj = model.project(batch)
        loss = supcon_loss(proj, batch.y, temperature)
        if model.classifier is not None:
            loss = loss + ce_weight * F.cross_entropy(model.classifier(proj), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * batch.num_graphs
        count += batch.num_graphs
    return total / max(count, 1)


def train_gnn_baseline(
    graphs: Sequence[ArchGraph],
    labels: Sequence[Hashable] | np.ndarray,
    train_idx: Sequence[int] | np.ndarray,
    conv: Literal["gcn", "gat"] = "gcn",
    epochs: int = 30,
    seed: int = 0,
    device: str = "cpu",
    hidden: int = 64,
    out_dim: int = 128,
    batch_size: int = 128,
    per_family: int = 4,
    lr: float = 2e-3,
    temperature: float = 0.1,
    ce_weight: float = 0.0,
    num_threads: int | None = None,
) -> GNNBaseline:
    """Train a GCN/GAT baseline with supervised contrastive loss on the training items only.

    Deterministic given ``seed`` on CPU (on CUDA, scatter atomics make it approximately so):
    parameters are initialised from the seeded torch generator inside ``torch.random.fork_rng``
    (the caller's global RNG state is restored afterwards), and batches come from a local
    ``np.random.default_rng(seed)``.

    Args:
        graphs: all graphs (only ``train_idx`` are used).
        labels: family label per graph.
        train_idx: indices of the training graphs.
        conv: ``"gcn"`` or ``"gat"``.
        epochs: passes over the training graphs.
        seed: seed for initialisation and batch order.
        device: torch device string.
        hidden: node feature width.
        out_dim: embedding dimension.
        batch_size: graphs per batch (approximate: family chunks are not split).
        per_family: graphs of one family put next to each other in a batch (positives).
        lr: Adam learning rate.
        temperature: SupCon temperature.
        ce_weight: weight of an extra cross-entropy loss over the training families (0 = off).
        num_threads: torch intra-op threads during training (default: leave torch's setting).

    Returns:
        The trained module (eval mode, on ``device``); ``model.history`` lists the mean loss per
        epoch.

    Raises:
        ValueError: ``labels`` and ``graphs`` differ in length, ``train_idx`` is empty or out of
            range, or a model argument is invalid.
    """
    if len(labels) != len(graphs):
        raise ValueError(f"expected one label per graph ({len(graphs)}), found {len(labels)}")
    idx = np.asarray(train_idx, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= len(graphs):
        raise ValueError(f"train_idx must be non-empty indices in [0, {len(graphs)})")
    fams: dict[Hashable, int] = {}
    codes = np.asarray([fams.setdefault(labels[int(i)], len(fams)) for i in idx], dtype=np.int64)
    data = [graph_data(graphs[int(i)], int(c)) for i, c in zip(idx, codes)]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with torch_threads(num_threads), seeded(seed, device):
        model = GNNBaseline(conv=conv, hidden=hidden, out_dim=out_dim,
                            num_classes=len(fams) if ce_weight > 0 else 0).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for epoch in range(epochs):
            batches = pk_batches(codes, per_family, batch_size, rng)
            model.history.append(_train_epoch(model, opt, data, batches, device, temperature, ce_weight))
            logger.debug("%s epoch %d/%d: loss %.4f", conv, epoch + 1, epochs, model.history[-1])
    model.eval()
    logger.info("trained %r on %d graphs in %.1fs (final loss %.4f)", model, idx.size,
                time.perf_counter() - start, model.history[-1] if model.history else float("nan"))
    return model


def gnn_embed(
    model: GNNBaseline, graphs: Sequence[ArchGraph], batch_size: int = 64, device: str | None = None
) -> np.ndarray:
    """Embed graphs with a model from :func:`train_gnn_baseline`.

    Args:
        model: the trained (or untrained) :class:`GNNBaseline` module.
        graphs: graphs to embed.
        batch_size: graphs per forward pass.
        device: where to run (default: where the model's parameters are).

    Returns:
        ``(N, out_dim)`` float32, unit-norm rows, in the order of ``graphs``.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for batch in DataLoader([graph_data(g) for g in graphs], batch_size=batch_size):
                out.append(model(batch.to(dev)).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.out_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
