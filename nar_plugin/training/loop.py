"""Training of the NAR encoder (multi-level contrastive learning): ``nar train``.

``train(corpus_dir, out_dir, ...)`` reproduces the shipped weights:

1. Load the corpus (:func:`~nar_plugin.training.data.load_training_corpus`), keep graphs of
   ``2..max_nodes`` nodes, at most ``max_per_family`` per family (seeded subsample), and split
   it (:func:`~nar_plugin.training.data.make_split`). Only train items are trained on; test
   items are only embedded for the periodic evaluation.
2. Prepare every training graph once (:func:`~nar_plugin.model.features.prepare`: motif
   sampling, index tensors, ``contexts_per_graph`` context graphs) plus one augmented "other
   coding style" view (:func:`~nar_plugin.training.augment.augment_graph`).
3. Each step takes a batch of families x members (so anchors have positives), both views of
   every item, and minimises

   ``L = L_graph (SupCon over family labels; the two views of one item are positives too)
   + motif_weight * L_motif (InfoNCE motif vs. its context) + ce_weight * L_ce``.

4. Write the weights with :func:`~nar_plugin.model.weights.save_weights`.

Deterministic on CPU for a given ``seed``: parameters come from ``torch.manual_seed(seed)``
inside ``torch.random.fork_rng`` (the caller's RNG state is restored), batches and
augmentations from local ``numpy`` generators, and CPU sparse products are deterministic.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nar_plugin.evaluation.metrics import evaluate_split
from nar_plugin.evaluation.splits import Split
from nar_plugin.graph import ArchGraph
from nar_plugin.model.encoder import EncoderConfig, NAREncoder
from nar_plugin.model.features import PreparedGraph, collate, prepare
from nar_plugin.model.inference import embed_prepared
from nar_plugin.model.weights import save_weights
from nar_plugin.training.augment import augment_graph
from nar_plugin.training.config import TrainConfig
from nar_plugin.training.data import CorpusDirs, CorpusEntry, load_training_corpus, make_split, pk_batches, select_items
from nar_plugin.training.losses import motif_info_nce, supcon_loss
from nar_plugin.utils.io import atomic_writer
from nar_plugin.utils.progress import Progress
from nar_plugin.utils.torch_context import resolve_device, seeded, torch_threads

__all__ = ["TrainResult", "train", "train_command"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        weights_path: the state dict (``nar-encoder.pt``).
        card_path: the JSON beside it (config, versions, corpus stats, metrics).
        encoder_version: version string of the trained weights.
        metrics: ``{split name: retrieval metrics}`` of the final evaluation.
        history: one dict per epoch (losses, seconds, and metrics on evaluation epochs).
        seconds: wall time of the whole run (loading and preparation included).
        num_train, num_test: item counts.
        config: the :class:`TrainConfig`.
    """

    weights_path: Path
    card_path: Path
    encoder_version: str
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float
    num_train: int
    num_test: int
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class _Run:
    """The data of one run, prepared once (motif sampling dominates; never repeated per epoch)."""

    items: list[CorpusEntry]
    split: Split
    train_fams: list[str]
    codes: np.ndarray  # family code of each training item, in split.train order
    views: list[list[PreparedGraph]]  # the prepared views of each training item
    test_prepared: list[PreparedGraph]
    items_in_corpus: int
    prepare_seconds: float

    @property
    def labels(self) -> list[str]:
        return [e.family for e in self.items]


def _load_run(cfg: TrainConfig, corpus_dir: CorpusDirs | None, entries: Sequence[CorpusEntry] | None) -> _Run:
    if entries is None:
        if corpus_dir is None:
            raise ValueError("give corpus_dir or entries")
        entries = load_training_corpus(corpus_dir, cfg.sources)
    items = select_items(entries, cfg.max_nodes, cfg.max_per_family, cfg.seed, cfg.nas_fraction)
    split = make_split(items, cfg.split, cfg.seed, cfg.test_frac)
    if split.train.size < 2:
        raise ValueError(f"need at least 2 training items, found {split.train.size}")
    train_fams = sorted({items[int(i)].family for i in split.train})
    fam_code = {f: i for i, f in enumerate(train_fams)}
    codes = np.asarray([fam_code[items[int(i)].family] for i in split.train], dtype=np.int64)
    logger.info("training on %d items (%d families), testing on %d; %d items in corpus",
                split.train.size, len(train_fams), split.test.size, len(entries))
    t = time.perf_counter()
    views, test_prepared = _prepare_views(cfg, items, split)
    seconds = time.perf_counter() - t
    logger.info("prepared %d graphs in %.1fs", sum(len(v) for v in views) + len(test_prepared), seconds)
    return _Run(items, split, train_fams, codes, views, test_prepared, len(entries), seconds)


def _prepare_views(cfg: TrainConfig, items: Sequence[CorpusEntry],
                   split: Split) -> tuple[list[list[PreparedGraph]], list[PreparedGraph]]:
    """The prepared views of every training item (itself + an augmented copy) and the test items."""
    aug_rng = np.random.default_rng(cfg.seed + 1)
    ctx = cfg.contexts_per_graph if cfg.motif_loss else 0

    def prep(g: ArchGraph, s: int, contexts: int) -> PreparedGraph:
        return prepare(g, steps=cfg.steps, max_size=cfg.max_size, min_count=cfg.min_count,
                       contexts=contexts, seed=s)

    views: list[list[PreparedGraph]] = []
    for j, i in enumerate(split.train):
        g = items[int(i)].graph
        v = [prep(g, cfg.seed + j, ctx)]
        if cfg.augment:
            v.append(prep(augment_graph(g, aug_rng), cfg.seed + j + 7919, ctx))
        views.append(v)
    return views, [prep(items[int(i)].graph, 0, 0) for i in split.test]


def _step_losses(model: NAREncoder, cfg: TrainConfig, graphs: list[PreparedGraph], y: torch.Tensor,
                 gen: torch.Generator, dev: torch.device) -> dict[str, torch.Tensor]:
    """The switched-on losses of one batch, weighted (their sum is minimised)."""
    outs = model.training_outputs(collate(graphs).to(dev))
    losses: dict[str, torch.Tensor] = {}
    if cfg.graph_loss:
        losses["graph"] = supcon_loss(outs["proj"], y, cfg.tau_graph)
    if cfg.ce_loss and "logits" in outs:
        losses["ce"] = cfg.ce_weight * F.cross_entropy(outs["logits"], y)
    if cfg.motif_loss and "motif" in outs:
        losses["motif"] = cfg.motif_weight * motif_info_nce(
            outs["motif"], outs["context"], cfg.tau_motif, outs["motif_type"], generator=gen)
    return losses


def _train_epoch(model: NAREncoder, opt: torch.optim.Optimizer, cfg: TrainConfig, run: _Run,
                 batch_rng: np.random.Generator, gen: torch.Generator, dev: torch.device) -> dict[str, float]:
    """One pass over the training items; returns the mean of each loss over the batches."""
    model.train()
    sums: Counter[str] = Counter()
    nb = 0
    for idx in pk_batches(run.codes, cfg.per_family, cfg.batch_size, batch_rng):
        graphs = [v for i in idx for v in run.views[int(i)]]
        # every item contributes all its views, in order: repeat its family code as often
        y = torch.as_tensor(np.repeat(run.codes[idx], len(run.views[int(idx[0])])), device=dev)
        losses = _step_losses(model, cfg, graphs, y, gen, dev)
        loss: torch.Tensor = sum(losses.values())  # type: ignore[assignment]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sums["loss"] += float(loss.detach())
        for k, v in losses.items():
            sums[k] += float(v.detach())
        nb += 1
    return {k: v / max(nb, 1) for k, v in sums.items()}


def _save_checkpoint(path: Path, epoch: int, model: NAREncoder, opt: torch.optim.Optimizer,
                     cfg: TrainConfig) -> None:
    with atomic_writer(path, "wb", durable=False) as fh:  # a throw-away checkpoint: no fsync
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "config": asdict(cfg)}, fh)


def _fit(model: NAREncoder, cfg: TrainConfig, run: _Run, dev: torch.device, out: Path, progress: bool,
         save_checkpoints: bool) -> tuple[list[dict[str, float]], dict[str, dict[str, float]]]:
    """The epochs: train, evaluate every ``eval_every`` epochs and at the end, checkpoint."""
    history: list[dict[str, float]] = []
    metrics: dict[str, dict[str, float]] = {}
    batch_rng = np.random.default_rng(cfg.seed + 2)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    with Progress("epoch", total=cfg.epochs, enabled=None if progress else False) as bar:
        for epoch in range(1, cfg.epochs + 1):
            te = time.perf_counter()
            row: dict[str, float] = _train_epoch(model, opt, cfg, run, batch_rng, gen, dev)
            sched.step()
            row["epoch"] = epoch
            row["seconds"] = time.perf_counter() - te
            if run.split.test.size and (epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0)):
                learned = embed_prepared(model, run.test_prepared, device=dev)
                res = evaluate_split(learned, run.labels, run.split)
                row.update({f"test_{k}": v for k, v in res.items() if k in ("MAP@20", "MRR@20", "NDCG@20")})
                metrics[run.split.name] = res
                if epoch == cfg.epochs and cfg.sketch_dim:  # the shipped embedding: + the sketch
                    metrics[f"{run.split.name}+sketch"] = _composed_metrics(model, run, learned)
                if save_checkpoints:
                    _save_checkpoint(out / "checkpoint.pt", epoch, model, opt, cfg)
            history.append(row)
            logger.info("epoch %d/%d %s", epoch, cfg.epochs, {k: round(v, 4) for k, v in row.items()})
            desc = f"loss {row.get('loss', float('nan')):.3f}"
            if "test_MAP@20" in row:
                desc += f" MAP@20 {row['test_MAP@20']:.3f}"
            bar.update(description=desc)
            bar.advance()
    model.eval()
    return history, metrics


def _composed_metrics(model: NAREncoder, run: _Run, learned: np.ndarray) -> dict[str, float]:
    """Test metrics of the shipped embedding: ``learned`` (the test items' learned parts) +
    the structural sketch."""
    from nar_plugin.model.sketch import compose

    cfg = model.config
    emb = compose(learned, [run.items[int(i)].graph for i in run.split.test], cfg.sketch_dim, cfg.sketch_weight,
                  cfg.sketch_version)
    return evaluate_split(emb, run.labels, run.split)


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {platform.platform()}"


def _card(cfg: TrainConfig, run: _Run, corpus_dir: CorpusDirs | None, command: str | None,
          history: list[dict[str, float]], metrics: dict[str, dict[str, float]], seconds: float,
          dev: torch.device) -> dict[str, Any]:
    """The training card recorded in the weights JSON (after the format fields)."""
    if corpus_dir is None or isinstance(corpus_dir, (str, os.PathLike)):
        corpus: str | list[str] | None = None if corpus_dir is None else str(corpus_dir)
    else:
        corpus = [str(d) for d in corpus_dir]
    split = run.split
    return {
        "seed": cfg.seed,
        "command": command if command is not None else " ".join(sys.argv),
        "train_config": {**asdict(cfg), "sources": list(cfg.sources) if cfg.sources else None},
        "families_trained": run.train_fams,
        "corpus": {
            "dir": corpus,
            "items_in_corpus": run.items_in_corpus,
            "items_used": len(run.items),
            "families_used": len(set(run.labels)),
            "by_source": dict(sorted(Counter(e.source for e in run.items).items())),
            "split": {"name": split.name, "train": int(split.train.size), "test": int(split.test.size),
                      "keys_hash": split.keys_hash},
        },
        "metrics": metrics,
        "history": history,
        "training_seconds": round(seconds, 1),
        "prepare_seconds": round(run.prepare_seconds, 1),
        "hardware": _hardware(),
        "device": str(dev),
        "num_threads": cfg.num_threads,
    }


def train(
    corpus_dir: CorpusDirs | None,
    out_dir: str | os.PathLike[str],
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    steps: int = EncoderConfig.steps,
    max_size: int = EncoderConfig.max_size,
    motif_loss: bool = True,
    graph_loss: bool = True,
    ce_loss: bool = False,
    *,
    entries: Sequence[CorpusEntry] | None = None,
    progress: bool = True,
    save_checkpoints: bool = True,
    keep_checkpoint: bool = False,
    command: str | None = None,
    **options: Any,
) -> TrainResult:
    """Train the NAR encoder and write ``nar-encoder.pt`` + ``nar-encoder.json`` to ``out_dir``.

    Args:
        corpus_dir: corpus directory or directories (see
            :func:`~nar_plugin.training.data.load_training_corpus`); ignored with ``entries``.
        out_dir: where weights, JSON and ``checkpoint.pt`` go.
        epochs, seed, device, steps, max_size, motif_loss, graph_loss, ce_loss: see
            :class:`TrainConfig` (the ablation switches are the three ``*_loss`` flags and
            ``steps``).
        entries: use these items instead of loading ``corpus_dir`` (tests, custom corpora).
        progress: show a progress bar (on a terminal).
        save_checkpoints: write ``out_dir/checkpoint.pt`` (model + optimiser + epoch) at every
            evaluation.
        keep_checkpoint: keep ``checkpoint.pt`` after a successful run (by default it is
            removed, so that training into ``nar_plugin/weights`` leaves only the shipped files).
        command: the command line recorded in the JSON (default: ``sys.argv``).
        **options: other :class:`TrainConfig` fields (``max_per_family``, ``split``...).

    Returns:
        A :class:`TrainResult`.

    Raises:
        FileNotFoundError: no corpus at ``corpus_dir``.
        ValueError: an invalid option, or fewer than two training items.
    """
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, seed=seed, device=device, steps=steps, max_size=max_size,
                      motif_loss=motif_loss, graph_loss=graph_loss, ce_loss=ce_loss, **options)
    dev = resolve_device(cfg.device)
    run = _load_run(cfg, corpus_dir, entries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(cfg.num_threads), seeded(cfg.seed, dev):
        model = NAREncoder(cfg.encoder_config(len(run.train_fams) if cfg.ce_loss else 0)).to(dev)
        history, metrics = _fit(model, cfg, run, dev, out, progress, save_checkpoints)
    seconds = time.perf_counter() - t0
    card = _card(cfg, run, corpus_dir, command, history, metrics, seconds, dev)
    wpath, jpath, version = save_weights(model, out, card)
    if not keep_checkpoint:
        (out / "checkpoint.pt").unlink(missing_ok=True)
    logger.info("wrote %s (%s) in %.1fs", wpath, version, seconds)
    return TrainResult(wpath, jpath, version, metrics, history, seconds,
                       int(run.split.train.size), int(run.split.test.size), cfg)


def train_command(corpus: str | os.PathLike[str] | None, out: str | os.PathLike[str],
                  epochs: int = 30, seed: int = 0, device: str = "auto", sketch_table: bool = True,
                  **options: Any) -> TrainResult:
    """Entry point for ``nar train``: train with the shipped defaults and record the command.

    Args:
        corpus: corpus directory (default: :func:`nar_plugin.corpus.default_corpus_dir`).
        out: output directory (``nar_plugin/weights`` reproduces the shipped files).
        epochs, seed, device: see :func:`train`.
        sketch_table: then fit the sketch's token table and attach it (sketch version 4,
            :mod:`nar_plugin.training.sketch_table`).
        **options: further :class:`TrainConfig` fields.
    """
    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    cmd = f"nar train --corpus {corpus} --out {out} --epochs {epochs} --seed {seed} --device {device}"
    cmd += "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(options.items()))
    res = train(corpus, out, epochs=epochs, seed=seed, device=device, command=cmd, **options)
    if res.config.sketch_dim and sketch_table:
        # the shipped sketch weighs tokens by a table fitted on the training data (sketch
        # version 4); training itself evaluates with the config's unweighted version
        from dataclasses import replace

        from nar_plugin.training.sketch_table import write_sketch_weights

        version = write_sketch_weights(out, corpus, sources=options.get("sources"))
        res = replace(res, encoder_version=version)
    return res
