"""Retrieval baselines, evaluated by the same code and split as the NAR encoder.

Four baselines (DESIGN.md, "Corpus and evaluation"):

* ``histogram`` -- :func:`histogram_embed`: normalised op-type counts over :data:`~nar_plugin.graph.OPS`
  (optionally plus attribute-bucket counts), compared by cosine.
* ``wl`` -- :func:`wl_embed`: Weisfeiler-Lehman subtree features (labels of rounds ``0..steps``
  from :meth:`ArchGraph.wl_labels`) hashed into a fixed-size count vector, optionally tf-idf
  weighted, L2-normalised: cosine on it is the normalised WL subtree kernel.
* ``gcn`` / ``gat`` -- :func:`train_gnn_baseline` + :func:`gnn_embed`: a 3-layer GCNConv / GATConv
  network on the raw ArchGraph (no motifs), as in the paper's baselines, trained with the
  supervised contrastive loss over family labels on the training split only.

:func:`run_baselines` evaluates them with :func:`nar_plugin.evaluation.metrics.retrieval_metrics` on a
:class:`~nar_plugin.evaluation.splits.Split`. Protocol (the paper's): queries = test items, gallery = test
items (each query excluded from its own gallery); ``gallery="all"`` ranks train + test instead.

:func:`supcon_loss` and :func:`info_nce` live here until the encoder's ``losses.py`` exists; they
are written to be moved there unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, GCNConv, global_max_pool, global_mean_pool

from nar_plugin.evaluation.metrics import DEFAULT_KS, retrieval_metrics
from nar_plugin.graph import OP_INDEX, OPS, ArchGraph
from nar_plugin.utils.torch_context import seeded as _seeded
from nar_plugin.utils.torch_context import torch_threads as _torch_threads

if TYPE_CHECKING:
    from nar_plugin.evaluation.splits import Split

__all__ = [
    "BASELINES",
    "histogram_embed",
    "wl_embed",
    "supcon_loss",
    "info_nce",
    "GNNBaseline",
    "graph_data",
    "train_gnn_baseline",
    "gnn_embed",
    "run_baselines",
]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`run_baselines`, in table order.
BASELINES: tuple[str, ...] = ("histogram", "wl", "gcn", "gat")

# Attribute buckets (values above the last bucket are clipped into it). Index 0 is "n/a".
_KERNEL_BINS, _STRIDE_BINS, _GROUP_BINS, _WIDTH_BINS = 16, 8, 3, 32
#: Embedding-table sizes of the attribute columns 1..5 of :meth:`ArchGraph.feature_matrix`.
_ATTR_BINS = (_KERNEL_BINS, _STRIDE_BINS, _GROUP_BINS, _WIDTH_BINS, _WIDTH_BINS)


# ===================================================================== histogram
def histogram_embed(graphs: Sequence[ArchGraph], attributes: bool = False) -> np.ndarray:
    """Op-type histogram embeddings.

    Each block of counts is divided by its total (so graph size does not matter), the blocks are
    concatenated, and the row is L2-normalised (inner product = cosine).

    Args:
        graphs: the graphs.
        attributes: also append count blocks of the known (non-zero) kernel sizes, strides,
            group kinds and output-width buckets, each normalised like the op block.

    Returns:
        ``(N, len(OPS))`` float32, or ``(N, len(OPS) + 16 + 8 + 3 + 32)`` with ``attributes``;
        unit-norm rows (an empty graph gives a zero row).
    """
    width = len(OPS) + (_KERNEL_BINS + _STRIDE_BINS + _GROUP_BINS + _WIDTH_BINS if attributes else 0)
    out = np.zeros((len(graphs), width), dtype=np.float64)
    for row, g in enumerate(graphs):
        blocks = [np.bincount([OP_INDEX[o] for o in g.ops], minlength=len(OPS)).astype(np.float64)]
        if attributes:
            feats = np.asarray(g.feature_matrix(), dtype=np.int64).reshape(-1, 6)
            for col, bins in ((1, _KERNEL_BINS), (2, _STRIDE_BINS), (3, _GROUP_BINS),
                              (5, _WIDTH_BINS)):
                vals = feats[:, col]
                # groups: 0 = dense is a real value for convs; others: 0 = unknown, skipped
                known = vals[feats[:, 1] > 0] if col == 3 else vals[vals > 0]
                blocks.append(np.bincount(np.minimum(known, bins - 1), minlength=bins)
                              .astype(np.float64))
        for b in blocks:
            total = b.sum()
            if total > 0:
                b /= total
        out[row] = np.concatenate(blocks)
    return _l2_normalise(out).astype(np.float32)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


# ===================================================================== WL subtree features
_GOLDEN = 0x9E3779B97F4A7C15  # mixes the round number into the label's hash


def wl_embed(
    graphs: Sequence[ArchGraph],
    steps: int = 3,
    dim: int = 2**14,
    tfidf: bool = False,
    sublinear_tf: bool = False,
) -> np.ndarray:
    """Hashed Weisfeiler-Lehman subtree features.

    Feature ``(t, label)`` counts the nodes whose round-``t`` WL label (over in- and
    out-neighbours, see :meth:`ArchGraph.wl_labels`) is ``label``, for ``t = 0..steps``. Labels
    are 64-bit digests already, so the bucket is ``(digest + t * golden) mod 2**64 mod dim``
    (sklearn ``FeatureHasher`` style without the alternating sign, keeping counts non-negative).

    Args:
        graphs: the graphs.
        steps: WL rounds ``h`` (features of rounds 0..h).
        dim: hashed feature dimension.
        tfidf: multiply by the smoothed idf ``log((1 + N) / (1 + df)) + 1`` computed over
            ``graphs`` (unsupervised; no labels used).
        sublinear_tf: use ``1 + log(count)`` instead of raw counts.

    Returns:
        ``(N, dim)`` float32 with unit-norm rows. Memory is ``4 * N * dim`` bytes: embed only the
        items you evaluate (as :func:`run_baselines` does) or lower ``dim``.

    Raises:
        ValueError: ``steps`` < 0 or ``dim`` < 1.
    """
    if steps < 0 or dim < 1:
        raise ValueError(f"steps must be >= 0 and dim >= 1, found steps={steps}, dim={dim}")
    out = np.zeros((len(graphs), dim), dtype=np.float64)
    for row, g in enumerate(graphs):
        buckets = [
            ((int(lab, 16) + t * _GOLDEN) % (1 << 64)) % dim
            for t, labels in enumerate(g.wl_labels(steps))
            for lab in labels
        ]
        if buckets:
            out[row] = np.bincount(np.asarray(buckets, dtype=np.int64), minlength=dim)
    if sublinear_tf:
        present = out > 0
        out[present] = 1.0 + np.log(out[present])
    if tfidf:
        df = (out > 0).sum(axis=0)
        out *= np.log((1.0 + len(graphs)) / (1.0 + df)) + 1.0
    return _l2_normalise(out).astype(np.float32)


# ===================================================================== losses
def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form).

    For each anchor ``i`` with at least one positive (another row with the same label):
    ``-mean_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )``; averaged over
    those anchors. Rows are L2-normalised inside. (Will move to ``nar_plugin.training.losses``.)

    Args:
        emb: ``[B, D]`` embeddings.
        labels: ``[B]`` integer labels.
        temperature: softmax temperature ``T`` (> 0).

    Returns:
        Scalar tensor; ``0`` (still attached to the graph) when no anchor has a positive.

    Raises:
        ValueError: shapes disagree or ``temperature`` <= 0.
    """
    if emb.dim() != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"expected emb [B, D] and labels [B], found {tuple(emb.shape)} and "
                         f"{tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature}")
    z = F.normalize(emb, dim=1)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    if not bool(valid.any()):
        return emb.sum() * 0.0
    per_anchor = -log_prob.masked_fill(~pos, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return per_anchor[valid].mean()


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1, symmetric: bool = False
) -> torch.Tensor:
    """InfoNCE: ``a[i]`` should match ``b[i]`` against every other ``b[j]`` (in-batch negatives).

    Rows are L2-normalised inside. Used for motif-vs-context pairs by the encoder (will move
    to ``nar_plugin.training.losses``).

    Args:
        a: ``[B, D]`` anchors.
        b: ``[B, D]`` positives, row-aligned with ``a``.
        temperature: softmax temperature (> 0).
        symmetric: average with the ``b -> a`` direction.

    Returns:
        Scalar tensor (mean cross-entropy).

    Raises:
        ValueError: shapes disagree or ``temperature`` <= 0.
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [B, D] tensors of one shape, found {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


# ===================================================================== GNN baselines
def graph_data(g: ArchGraph, label: int = -1) -> Data:
    """PyG ``Data`` for the GNN baselines: clipped features, edges in both directions.

    Message passing along data flow only would leave early nodes blind to what consumes them;
    the reverse edges give every node both its producers and its consumers.

    Args:
        g: the graph.
        label: integer family code stored as ``y`` (``-1``: none).

    Returns:
        ``Data`` with ``x`` long ``[N, 6]`` (attribute columns clipped to the embedding
        tables), ``edge_index`` long ``[2, 2E]``, ``y`` long ``[1]``.
    """
    data = g.to_pyg()
    x = data.x.clone()
    for col, bins in enumerate(_ATTR_BINS, start=1):
        x[:, col] = x[:, col].clamp(0, bins - 1)
    data.x = x
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
        self.op_emb = nn.Embedding(len(OPS), hidden)
        self.attr_emb = nn.ModuleList(nn.Embedding(bins, hidden) for bins in _ATTR_BINS)
        self.convs = nn.ModuleList(
            GCNConv(hidden, hidden) if conv == "gcn"
            else GATConv(hidden, hidden // heads, heads=heads)
            for _ in range(num_layers)
        )
        self.proj = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.classifier = nn.Linear(out_dim, num_classes) if num_classes > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.op_emb.reset_parameters()
        for emb in self.attr_emb:
            emb.reset_parameters()
        for c in self.convs:
            c.reset_parameters()
        for layer in self.proj:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.classifier is not None:
            self.classifier.reset_parameters()

    def project(self, batch: Batch) -> torch.Tensor:
        """Un-normalised graph projection ``[num_graphs, out_dim]``."""
        x = self.op_emb(batch.x[:, 0])
        for col, emb in enumerate(self.attr_emb, start=1):
            x = x + emb(batch.x[:, col])
        for conv in self.convs:
            # residual: keeps node identity through the layers (less over-smoothing)
            x = x + F.relu(conv(x, batch.edge_index))
        pooled = torch.cat([global_mean_pool(x, batch.batch), global_max_pool(x, batch.batch)], dim=1)
        return self.proj(pooled)

    def forward(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.project(batch), dim=1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(conv={self.conv_type!r}, hidden={self.hidden}, "
                f"out_dim={self.out_dim}, num_layers={self.num_layers}, heads={self.heads}, "
                f"num_classes={self.num_classes})")


def _pk_batches(
    codes: np.ndarray, per_family: int, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """One epoch of batches built from same-family chunks so that anchors have positives.

    Each family's (shuffled) members are cut into chunks of ``per_family``; chunks are shuffled
    and packed into batches of about ``batch_size``. Every item appears exactly once per epoch.
    """
    chunks: list[np.ndarray] = []
    for fam in np.unique(codes):
        members = np.flatnonzero(codes == fam)
        members = members[rng.permutation(members.size)]
        chunks.extend(members[i:i + per_family] for i in range(0, members.size, per_family))
    batches: list[list[int]] = []
    cur: list[int] = []
    for ci in rng.permutation(len(chunks)):
        cur.extend(chunks[ci].tolist())
        if len(cur) >= batch_size:
            batches.append(cur)
            cur = []
    if cur:
        batches.append(cur)
    return batches




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
    with _torch_threads(num_threads), _seeded(seed, device):
        model = GNNBaseline(conv=conv, hidden=hidden, out_dim=out_dim,
                            num_classes=len(fams) if ce_weight > 0 else 0).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        history: list[float] = []
        model.train()
        for epoch in range(epochs):
            batches = _pk_batches(codes, per_family, batch_size, rng)
            total, count = 0.0, 0
            for batch in DataLoader(data, batch_sampler=batches):
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
            history.append(total / max(count, 1))
            logger.debug("%s epoch %d/%d: loss %.4f", conv, epoch + 1, epochs, history[-1])
    model.eval()
    model.history = history
    logger.info("trained %r on %d graphs in %.1fs (final loss %.4f)", model, idx.size,
                time.perf_counter() - start, history[-1] if history else float("nan"))
    return model


def gnn_embed(
    model: GNNBaseline, graphs: Sequence[ArchGraph], batch_size: int = 64, device: str | None = None
) -> np.ndarray:
    """Embed graphs with a model from :func:`train_gnn_baseline`.

    Args:
        model: the trained (or untrained) :func:`GNNBaseline` module.
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
        with torch.no_grad():
            for batch in DataLoader([graph_data(g) for g in graphs], batch_size=batch_size):
                out.append(model(batch.to(dev)).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.out_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


# ===================================================================== evaluation
def run_baselines(
    graphs: Sequence[ArchGraph],
    labels: Sequence[Hashable] | np.ndarray,
    split: Split,
    methods: Sequence[str] = BASELINES,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    gallery: Literal["test", "all"] = "test",
    gnn_kwargs: dict[str, Any] | None = None,
    num_threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate baselines on ``split`` with :func:`~nar_plugin.evaluation.metrics.retrieval_metrics`.

    Protocol: queries are ``split.test``; the gallery is ``split.test`` (the paper's retrieval
    within the test set; every query is excluded from its own gallery), or train + test with
    ``gallery="all"``. GNNs are trained on ``split.train`` only; histogram and WL need no
    training (WL's optional idf is computed over the embedded items, without labels).

    Args:
        graphs: the corpus, indexed like the split.
        labels: family label per graph.
        split: a :class:`~nar_plugin.evaluation.splits.Split` over ``len(graphs)`` items.
        methods: names from :data:`BASELINES`.
        seed: seed for GNN training.
        ks: metric cut-offs.
        gallery: ``"test"`` or ``"all"``.
        gnn_kwargs: extra arguments for :func:`train_gnn_baseline` (``epochs``, ``hidden``...).
        num_threads: torch threads for GNN training and embedding (default: torch's setting).

    Returns:
        ``{method: metrics}`` (metrics as from ``retrieval_metrics`` plus ``"seconds"``), ready
        for :func:`~nar_plugin.evaluation.metrics.format_table`.

    Raises:
        ValueError: unknown method or gallery, or a split / labels of another size.
    """
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    if gallery not in ("test", "all"):
        raise ValueError(f"gallery must be 'test' or 'all', found {gallery!r}")
    if split.n_items != len(graphs) or len(labels) != len(graphs):
        raise ValueError(f"split ({split.n_items} items), labels ({len(labels)}) and graphs "
                         f"({len(graphs)}) must have the same size")
    items = split.test if gallery == "test" else np.arange(len(graphs))
    sub_graphs = [graphs[int(i)] for i in items]
    sub_labels = [labels[int(i)] for i in items]
    q_local = np.searchsorted(items, split.test)  # items is sorted and contains split.test
    results: dict[str, dict[str, float]] = {}
    for method in methods:
        start = time.perf_counter()
        if method == "histogram":
            emb = histogram_embed(sub_graphs)
        elif method == "wl":
            emb = wl_embed(sub_graphs)
        else:
            model = train_gnn_baseline(graphs, labels, split.train, conv=method,  # type: ignore[arg-type]
                                       seed=seed, num_threads=num_threads, **(gnn_kwargs or {}))
            with _torch_threads(num_threads):
                emb = gnn_embed(model, sub_graphs)
        res = retrieval_metrics(emb, sub_labels, ks=ks, queries=q_local)
        res["seconds"] = time.perf_counter() - start
        results[method] = res
        logger.info("baseline %s on split %s: %s", method, split.name,
                    {k: round(v, 4) for k, v in res.items()})
    return results
