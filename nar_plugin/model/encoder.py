"""The NAR encoder: motif encoder Fs, context encoder Fc, macro-graph encoder Fm, heads.

Pipeline for one architecture (DESIGN.md, "Encoder and training"):

1. :func:`~nar_plugin.model.features.prepare` samples motifs and turns the graph into index
   tensors; :func:`~nar_plugin.model.features.collate` batches them.
2. An optional node stage (``node_layers``) runs message passing over the whole graph, so that
   a motif instance's embedding knows how it is wired to its neighbours.
3. **Fs** runs message passing over the intra-instance edges and pools nodes per instance
   (mean + max, one scatter each) -> one embedding per motif instance.
4. **Fm** runs message passing over the macro graph (one node per instance, node features =
   Fs outputs) and pools per architecture (mean + max) -> MLP projection to ``out_dim`` (128)
   -> L2 normalisation.
5. **Fc** (training only) encodes context graphs (an instance plus its ``context_hops``
   neighbourhood) and pools the *neighbourhood* nodes, so that the motif-level InfoNCE asks a
   motif embedding to predict what surrounds it (distributional, as word2vec does for words).

Layers are in :mod:`nar_plugin.model.layers`, the weights file in :mod:`nar_plugin.model.weights`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.utils import scatter

from nar_plugin.graph import VOCAB_VERSION
from nar_plugin.model.features import PreparedBatch
from nar_plugin.model.layers import (
    CONVS,
    GAT_HEADS,
    GNN,
    embed_nodes,
    mean_max,
    node_embedding_tables,
    reset_modules,
)
from nar_plugin.motifs import MOTIF_VERSION, MotifConfig

__all__ = ["EncoderConfig", "NAREncoder", "config_hash", "relative_width_columns"]


def relative_width_columns(x: torch.Tensor) -> torch.Tensor:
    """Node features with the width columns made relative: column 4 (``width_in`` bucket)
    becomes ``16 + width_out - width_in`` (log2 ratio, clipped to ``1..31``; 0 when either width
    is unknown) and column 5 (``width_out``) becomes 0. A copy; ``x`` is unchanged."""
    out = x.clone()
    wi, wo = x[:, 4], x[:, 5]
    known = (wi > 0) & (wo > 0)
    out[:, 4] = torch.where(known, (16 + wo - wi).clamp(1, 31), torch.zeros_like(wi))
    out[:, 5] = 0
    return out


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
        relative_widths: embed each conv/linear's width *change* (``log2(out / in)``) instead
            of its absolute input and output widths. Absolute widths split families whose
            members differ in width (the common case: ``mobilenet_v2_075`` / ``_100``) and make
            a re-implementation with another stem width a stranger; the ratios (a bottleneck's
            x4, an MBConv's x6) are what the design fixes.
        sketch_dim: dimensions of the structural sketch appended to the learned vector
            (:mod:`nar_plugin.model.sketch`; 0 = none). The shipped embedding is then
            ``out_dim + sketch_dim`` wide: the learned part and the sketch, each unit norm,
            weighted by ``sqrt(1 - sketch_weight)`` and ``sqrt(sketch_weight)``, so that the
            cosine of two embeddings is ``(1 - w) * cos_learned + w * cos_sketch``.
        sketch_weight: ``w`` above.
        sketch_version: which token definition the sketch uses
            (:data:`~nar_plugin.model.sketch.SKETCH_VERSIONS`; 1 for weights written before the
            field existed, so an index keeps comparing like with like).
        sketch_weights: SHA-256 (hex prefix) of the sketch's token table
            (:mod:`nar_plugin.model.token_weights`, ``nar-sketch-weights.json`` next to the
            weights); sketch version 4 and later weigh tokens by it ("" before).
    """

    hidden: int = 64
    out_dim: int = 128
    motif_layers: int = 2
    context_layers: int = 2
    macro_layers: int = 2
    conv: str = "gin"
    node_layers: int = 4
    num_classes: int = 0
    steps: int = MotifConfig.steps
    min_count: int = MotifConfig.min_count
    max_size: int = MotifConfig.max_size
    context_hops: int = 1
    size_weighted: bool = True
    node_readout: bool = True
    relative_widths: bool = False
    sketch_dim: int = 0
    sketch_weight: float = 0.0
    sketch_version: int = 1
    sketch_weights: str = ""

    @property
    def embedding_dim(self) -> int:
        """Width of the shipped embedding: the learned part plus the sketch."""
        return self.out_dim + self.sketch_dim

    def __post_init__(self) -> None:
        if self.conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, found {self.conv!r}")
        if self.conv == "gat" and self.hidden % GAT_HEADS:
            raise ValueError(f"conv 'gat' needs hidden divisible by {GAT_HEADS}, found {self.hidden}")
        if self.node_layers < 0:
            raise ValueError(f"node_layers must be >= 0, found {self.node_layers}")
        for name in ("hidden", "out_dim", "motif_layers", "macro_layers", "max_size", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.sketch_dim < 0 or self.sketch_dim % 2 or not 0.0 <= self.sketch_weight < 1.0:
            raise ValueError("sketch_dim must be even and >= 0, sketch_weight in [0, 1); "
                             f"found {self.sketch_dim}, {self.sketch_weight}")
        if self.sketch_weight and not self.sketch_dim:
            raise ValueError("sketch_weight needs sketch_dim > 0")
        from nar_plugin.model.sketch import SKETCH_VERSIONS

        if self.sketch_version not in SKETCH_VERSIONS:
            raise ValueError(f"sketch_version must be one of {SKETCH_VERSIONS}, found {self.sketch_version}")
        if self.sketch_dim and self.sketch_version >= 4 and not self.sketch_weights:
            raise ValueError(f"sketch_version {self.sketch_version} needs sketch_weights (its token table's SHA-256)")
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
        data = {**_ADDED_LATER, **data}  # weights written before these fields existed
        unknown, missing = sorted(set(data) - known), sorted(known - set(data))
        if unknown or missing:
            raise ValueError(f"encoder config does not match this nar-plugin: unknown keys {unknown}, "
                             f"missing keys {missing}")
        return cls(**data)


#: Fields added after the first shipped weights, with the value that reproduces those weights'
#: behaviour: a weights JSON without them loads as before, and its config hash is unchanged.
_ADDED_LATER: dict[str, Any] = {"relative_widths": False, "sketch_dim": 0, "sketch_weight": 0.0,
                                "sketch_version": 1, "sketch_weights": ""}


def config_hash(config: EncoderConfig) -> str:
    """Short stable hash of the parts of the config that change embeddings (not the head)."""
    d = config.to_dict()
    d.pop("num_classes")  # the classification head is training-only
    d.pop("context_layers")
    d.pop("context_hops")
    for k, legacy in _ADDED_LATER.items():
        if d[k] == legacy:
            d.pop(k)
    text = json.dumps({"vocab": VOCAB_VERSION, "motif": MOTIF_VERSION, **d}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class NAREncoder(nn.Module):
    """Multi-level NAR encoder (Fs motif encoder, Fc context encoder, Fm macro encoder).

    Args:
        config: an :class:`EncoderConfig` (keyword overrides allowed: ``NAREncoder(hidden=32)``).

    Shapes:
        input: a :class:`~nar_plugin.model.features.PreparedBatch` (``collate([prepare(g) ...])``).
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
        self.op_emb, self.attr_emb = node_embedding_tables(h)
        self.fn = GNN(h, cfg.node_layers, cfg.conv)
        self.fs = GNN(h, cfg.motif_layers, cfg.conv)
        self.fs_out = nn.Linear(2 * h, h)
        self.fc = GNN(h, cfg.context_layers, cfg.conv)
        self.fc_out = nn.Linear(2 * h, h)
        self.fm = GNN(h, cfg.macro_layers, cfg.conv)
        readout = 4 * h if cfg.node_readout else 2 * h
        self.proj = nn.Sequential(nn.Linear(readout, h), nn.ReLU(), nn.Linear(h, cfg.out_dim))
        self.classifier = nn.Linear(cfg.out_dim, cfg.num_classes) if cfg.num_classes > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_modules(self.op_emb, self.attr_emb, self.fn, self.fs, self.fs_out, self.fc, self.fc_out, self.fm,
                      self.proj, self.classifier)

    # ----------------------------------------------------------------- parts
    def node_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 6]`` long -> ``[N, hidden]``: op embedding + attribute embeddings (with
        ``relative_widths``, the width columns first become :func:`relative_width_columns`)."""
        if self.config.relative_widths:
            x = relative_width_columns(x)
        return embed_nodes(x, self.op_emb, self.attr_emb)

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
        return self.fs_out(mean_max(h, batch.node_to_instance, batch.num_instances))

    def encode_contexts(self, batch: PreparedBatch, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Fc: message passing over context graphs, pooled over each context's neighbourhood."""
        h = self.node_features(batch.x) if nodes is None else nodes
        h = self.fc(h[batch.ctx_nodes], batch.adjacency("context", self.config.conv))
        ring = batch.ctx_ring
        return self.fc_out(mean_max(h[ring], batch.ctx_owner[ring], batch.num_contexts))

    def _macro_readout(self, batch: PreparedBatch, m: torch.Tensor) -> torch.Tensor:
        """Pool Fm's macro-node states per graph: ``[num_graphs, 2 * hidden]``."""
        g = batch.instance_to_graph
        if not self.config.size_weighted:
            return mean_max(m, g, batch.num_graphs)
        # mean weighted by motif size: a 30-node block counts 30x a 1-node glue segment, so
        # the readout keeps the op mix of the whole graph (what a histogram sees) too
        w = torch.bincount(batch.node_to_instance, minlength=batch.num_instances).to(m.dtype)[:, None]
        mean = scatter(m * w, g, 0, dim_size=batch.num_graphs, reduce="sum")
        mean = mean / scatter(w, g, 0, dim_size=batch.num_graphs, reduce="sum").clamp(min=1)
        return torch.cat([mean, scatter(m, g, 0, dim_size=batch.num_graphs, reduce="max")], dim=1)

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
        parts = [self._macro_readout(batch, m)]
        if self.config.node_readout:
            assert states is not None  # computed above whenever node_readout is on
            parts.append(mean_max(states, batch.instance_to_graph[batch.node_to_instance], batch.num_graphs))
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
