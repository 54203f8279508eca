"""Layers of the NAR encoder: node embedding, direction-aware message passing, pooling.

Message passing is direction-aware: every layer has one conv along data flow and one against
it, summed (a data-flow graph is a DAG; a symmetric GCN would not tell a producer from a
consumer), with a residual connection. The adjacencies come from
:meth:`~nar_plugin.model.features.PreparedBatch.adjacency`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv
from torch_geometric.utils import scatter

from nar_plugin.graph import ATTR_BINS, OPS

__all__ = ["CONVS", "GAT_HEADS", "GNN", "DirLayer", "embed_nodes", "mean_max", "node_embedding_tables"]

#: Message-passing layers :class:`DirLayer` (and the encoder config) accept.
CONVS: tuple[str, ...] = ("gcn", "gin", "gat")
#: Attention heads of ``"gat"`` layers (``hidden`` must be divisible by it).
GAT_HEADS = 4


def node_embedding_tables(hidden: int) -> tuple[nn.Embedding, nn.ModuleList]:
    """``(op_emb, attr_emb)``: a ``len(OPS) x hidden`` table and one ``bins x hidden`` table
    per attribute column of :data:`~nar_plugin.graph.ATTR_BINS`.

    The owning module keeps them as ``op_emb`` / ``attr_emb`` (the state-dict keys of the
    shipped weights); the encoder and the GNN baselines embed nodes the same way.
    """
    return nn.Embedding(len(OPS), hidden), nn.ModuleList(nn.Embedding(bins, hidden) for bins in ATTR_BINS)


def embed_nodes(x: torch.Tensor, op_emb: nn.Embedding, attr_emb: nn.ModuleList) -> torch.Tensor:
    """Sum of the op embedding and the attribute embeddings.

    Shapes:
        x: ``[N, 6]`` long (:func:`~nar_plugin.model.features.node_feature_matrix`);
        returns ``[N, hidden]``.
    """
    h = op_emb(x[:, 0])
    for col, emb in enumerate(attr_emb, start=1):
        h = h + emb(x[:, col])
    return h


def reset_modules(*modules: nn.Module | None) -> None:
    """Re-initialise ``modules`` in the order given (``None`` skipped).

    A module with ``reset_parameters`` resets itself; a container without one (``Sequential``,
    ``ModuleList``) resets its children, recursively. The order is the order in which the
    seeded generator is drawn from: keep it, or a seeded run gives other weights.
    """
    for m in modules:
        if m is None:
            continue
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        else:
            reset_modules(*m.children())


def _gin_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))


class DirLayer(nn.Module):
    """One direction-aware message-passing layer: a conv along edges + one against them.

    ``x' = x + relu(conv_fwd(x, A_fwd) + conv_bwd(x, A_bwd))`` (GCNConv with
    ``normalize=False``: the adjacency is normalised already; GINConv with a trainable ``eps``
    and a 2-layer MLP; GATConv with :data:`GAT_HEADS` heads).

    Args:
        hidden: feature width (in = out).
        conv: one of :data:`CONVS`.

    Shapes:
        input: ``x`` ``[N, hidden]``, ``adj`` a (forward, backward) pair from
        :meth:`~nar_plugin.model.features.PreparedBatch.adjacency` for the same ``conv``.
        output: ``[N, hidden]``.
    """

    def __init__(self, hidden: int, conv: str = "gcn") -> None:
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, found {conv!r}")
        self.hidden, self.conv = hidden, conv
        if conv == "gcn":
            self.fwd: nn.Module = GCNConv(hidden, hidden, normalize=False)
            self.bwd: nn.Module = GCNConv(hidden, hidden, normalize=False)
        elif conv == "gin":
            self.fwd = GINConv(_gin_mlp(hidden), train_eps=True)
            self.bwd = GINConv(_gin_mlp(hidden), train_eps=True)
        else:
            self.fwd = GATConv(hidden, hidden // GAT_HEADS, heads=GAT_HEADS)
            self.bwd = GATConv(hidden, hidden // GAT_HEADS, heads=GAT_HEADS)

    def reset_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()

    def forward(self, x: torch.Tensor, adj: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return x + F.relu(self.fwd(x, adj[0]) + self.bwd(x, adj[1]))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden}, conv={self.conv!r})"


class GNN(nn.Module):
    """A stack of :class:`DirLayer` (one shape for the node stage, Fs, Fc and Fm)."""

    def __init__(self, hidden: int, layers: int, conv: str = "gcn") -> None:
        super().__init__()
        self.layers = nn.ModuleList(DirLayer(hidden, conv) for _ in range(layers))

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: torch.Tensor, adj: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, adj)
        return x


def mean_max(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Mean and max of the rows of ``x`` per group ``index``: ``[size, 2 * D]``."""
    return torch.cat([scatter(x, index, 0, dim_size=size, reduce="mean"),
                      scatter(x, index, 0, dim_size=size, reduce="max")], dim=1)
