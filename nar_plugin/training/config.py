"""What determines a training run: :class:`TrainConfig` (recorded in the weights JSON).

Its own module so that ``nar eval`` and the threshold calibration read the item caps (``max_nodes``,
``max_per_family``) without importing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from nar_plugin.model.encoder import EncoderConfig

__all__ = ["TrainConfig"]


# plain fields, alike in shape to other config/report dataclasses (see docs/architecture.md, "Layout decisions")
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in the weights JSON).

    Attributes:
        epochs: passes over the training items.
        seed: the one seed (parameters, batches, augmentations, subsampling, split).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        steps, max_size, min_count: motif sampling (stored in the encoder config).
        hidden: encoder width.
        motif_layers, macro_layers, node_layers: message-passing layers of Fs, Fm and the
            whole-graph node stage (see :class:`~nar_plugin.model.encoder.EncoderConfig`).
        conv: ``"gcn"``, ``"gin"`` or ``"gat"`` (see :class:`~nar_plugin.model.encoder.EncoderConfig`).
        size_weighted: motif-size-weighted readout (see :class:`~nar_plugin.model.encoder.EncoderConfig`).
        node_readout: add pooled Fs node states to the readout (see :class:`~nar_plugin.model.encoder.EncoderConfig`).
        motif_loss, graph_loss, ce_loss: ablation switches of the three losses. The
            classification head is off by default: with it, by-model MAP@20 was lower
            (0.709 vs 0.759 on the 1,539-item corpus, 20 epochs; docs/model-card.md).
        augment: add an augmented view of every item as an extra positive.
        split: ``"by_model"``, ``"by_family"`` or ``"none"`` (train on everything).
        test_frac: test fraction of the split.
        max_nodes: graphs larger than this are left out of training and evaluation.
        max_per_family: at most this many items per family (seeded subsample; 0 = all).
        batch_size: items per step (each contributes two views with ``augment``).
        per_family: items of one family drawn together into a batch.
        contexts_per_graph: context graphs per prepared graph for the motif loss.
        lr, weight_decay: AdamW.
        tau_graph, tau_motif: temperatures of the graph- and motif-level losses.
        motif_weight, ce_weight: loss weights.
        eval_every: evaluate on the test split every this many epochs (and at the end).
        num_threads: torch intra-op threads while training (1 is fastest on a shared 2-core
            CPU: the sparse products are memory bound); ``None`` keeps torch's setting.
        sources: corpus sources to load (``None``: all).
        out_dim: width of the learned part of the embedding.
        relative_widths, sketch_dim, sketch_weight, sketch_version: see
            :class:`~nar_plugin.model.encoder.EncoderConfig` (the shipped embedding is
            ``out_dim + sketch_dim`` wide).
        nas_fraction: at most this fraction of the selected items come from the NAS sources
            (whole NAS families are dropped, seeded; 0 = no cap). NAS cells are cheap to
            generate and were 75% of the items: a model trained on them learns NAS wiring.
    """

    epochs: int = 30
    seed: int = 0
    device: str = "auto"
    # the encoder architecture: defaults come from EncoderConfig (one place to change them)
    steps: int = EncoderConfig.steps
    max_size: int = EncoderConfig.max_size
    min_count: int = EncoderConfig.min_count
    hidden: int = EncoderConfig.hidden
    motif_layers: int = EncoderConfig.motif_layers
    macro_layers: int = EncoderConfig.macro_layers
    node_layers: int = EncoderConfig.node_layers
    conv: str = EncoderConfig.conv
    size_weighted: bool = EncoderConfig.size_weighted
    node_readout: bool = EncoderConfig.node_readout
    motif_loss: bool = True
    graph_loss: bool = True
    ce_loss: bool = False
    augment: bool = True
    split: str = "by_model"
    test_frac: float = 0.2
    max_nodes: int = 3000
    max_per_family: int = 40
    batch_size: int = 128
    per_family: int = 4
    contexts_per_graph: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    tau_graph: float = 0.1
    tau_motif: float = 0.2
    motif_weight: float = 0.5
    ce_weight: float = 0.5
    eval_every: int = 5
    num_threads: int | None = 1
    sources: tuple[str, ...] | None = None
    out_dim: int = 64
    relative_widths: bool = True
    sketch_dim: int = 64
    sketch_weight: float = 0.8
    sketch_version: int = 3
    nas_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not (self.motif_loss or self.graph_loss or self.ce_loss):
            raise ValueError("at least one of motif_loss, graph_loss, ce_loss must be on")
        if self.split not in ("by_model", "by_family", "none"):
            raise ValueError(f"split must be 'by_model', 'by_family' or 'none', found {self.split!r}")
        if self.epochs < 0 or self.batch_size < 2 or self.per_family < 1:
            raise ValueError(f"need epochs >= 0, batch_size >= 2, per_family >= 1; found {self}")
        if not 0.0 <= self.nas_fraction < 1.0:
            raise ValueError(f"nas_fraction must be in [0, 1), found {self.nas_fraction}")

    def encoder_config(self, num_classes: int) -> EncoderConfig:
        return EncoderConfig(hidden=self.hidden, steps=self.steps, max_size=self.max_size,
                             min_count=self.min_count, num_classes=num_classes,
                             size_weighted=self.size_weighted, node_readout=self.node_readout,
                             motif_layers=self.motif_layers, macro_layers=self.macro_layers,
                             node_layers=self.node_layers, conv=self.conv, out_dim=self.out_dim,
                             relative_widths=self.relative_widths, sketch_dim=self.sketch_dim,
                             sketch_weight=self.sketch_weight, sketch_version=self.sketch_version)
