"""Training of the NAR encoder (multi-level contrastive learning) and its held-out evaluation.

``train(corpus_dir, out_dir, ...)`` reproduces the shipped weights (``nar train``):

1. Load the corpus (:func:`nar_plugin.corpus.load_corpus`; a directory of ``*.jsonl`` records
   with ``key``/``family``/``graph`` also works), keep graphs of ``2..max_nodes`` nodes, at most
   ``max_per_family`` per family (seeded subsample), and split it with
   :func:`~nar_plugin.evaluation.splits.split_by_model` (or ``split_by_family``). Only train items are
   trained on; test items are only embedded for the periodic evaluation.
2. Prepare every training graph once (:func:`~nar_plugin.model.encoder.prepare`: motif sampling,
   index tensors, ``contexts_per_graph`` context graphs) plus one augmented "other coding
   style" view (:func:`~nar_plugin.training.losses.augment_graph`).
3. Each step takes a batch of families x members (so anchors have positives), both views of
   every item, and minimises

   ``L = L_graph (SupCon over family labels; the two views of one item are positives too)
   + motif_weight * L_motif (InfoNCE motif vs. its context) + ce_weight * L_ce``.

Deterministic on CPU for a given ``seed``: parameters come from ``torch.manual_seed(seed)``
inside ``torch.random.fork_rng`` (the caller's RNG state is restored), batches and
augmentations from local ``numpy`` generators, and CPU sparse products are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nar_plugin.model.encoder import EncoderConfig, NAREncoder, PreparedGraph, collate, prepare
from nar_plugin.evaluation.metrics import DEFAULT_KS, retrieval_metrics
from nar_plugin.graph import VOCAB_VERSION, ArchGraph
from nar_plugin.training.losses import augment_graph, motif_info_nce, supcon_loss
from nar_plugin.motifs import MOTIF_VERSION
from nar_plugin.evaluation.splits import Split, split_by_family, split_by_model
from nar_plugin.utils.torch_context import seeded as _seeded
from nar_plugin.utils.torch_context import torch_threads as _threads

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "TrainConfig",
    "TrainResult",
    "CorpusEntry",
    "load_training_corpus",
    "select_items",
    "make_split",
    "embed_prepared",
    "evaluate_split",
    "save_weights",
    "train",
    "train_command",
    "compare_with_baselines",
]

logger = logging.getLogger(__name__)

WEIGHTS_FORMAT = "nar-encoder"
#: Bump when the layout of ``nar-encoder.json`` / the state-dict keys change.
WEIGHTS_FORMAT_VERSION = 1


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
            whole-graph node stage (see :class:`EncoderConfig`).
        conv: ``"gcn"`` or ``"gin"`` (see :class:`EncoderConfig`).
        size_weighted: motif-size-weighted readout (see :class:`EncoderConfig`).
        node_readout: add pooled Fs node states to the readout (see :class:`EncoderConfig`).
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

    def __post_init__(self) -> None:
        if not (self.motif_loss or self.graph_loss or self.ce_loss):
            raise ValueError("at least one of motif_loss, graph_loss, ce_loss must be on")
        if self.split not in ("by_model", "by_family", "none"):
            raise ValueError(f"split must be 'by_model', 'by_family' or 'none', found {self.split!r}")
        if self.epochs < 0 or self.batch_size < 2 or self.per_family < 1:
            raise ValueError(f"need epochs >= 0, batch_size >= 2, per_family >= 1; found {self}")

    def encoder_config(self, num_classes: int) -> EncoderConfig:
        return EncoderConfig(hidden=self.hidden, steps=self.steps, max_size=self.max_size,
                             min_count=self.min_count, num_classes=num_classes,
                             size_weighted=self.size_weighted, node_readout=self.node_readout,
                             motif_layers=self.motif_layers, macro_layers=self.macro_layers,
                             node_layers=self.node_layers, conv=self.conv)


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


@dataclass(frozen=True)
class CorpusEntry:
    """The three fields training needs from a corpus item."""

    key: str
    family: str
    graph: ArchGraph
    source: str = ""


# ===================================================================== data
def load_training_corpus(corpus_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                         sources: Sequence[str] | None = None) -> list[CorpusEntry]:
    """Load a corpus (or several: a list of directories) as :class:`CorpusEntry` items, sorted
    by key; a key present in two directories is kept once (first directory wins).

    A directory with the corpus ``manifest.json`` is read with
    :func:`nar_plugin.corpus.load_corpus` (``dedupe=True``: one copy of an identical graph per
    family); otherwise every ``*.jsonl`` file in it is read as records with ``key``, ``family``
    and ``graph`` (an :meth:`ArchGraph.to_dict`), optionally ``source`` and ``status``.

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    if not isinstance(corpus_dir, (str, os.PathLike)):
        merged: dict[str, CorpusEntry] = {}
        for d in corpus_dir:
            for e in load_training_corpus(d, sources):
                merged.setdefault(e.key, e)
        return sorted(merged.values(), key=lambda e: e.key)
    root = Path(corpus_dir)
    if (root / "manifest.json").is_file():
        from nar_plugin.corpus import load_corpus

        items = load_corpus(root, sources, dedupe=True)
        out = [CorpusEntry(it.key, it.family, it.graph, it.source) for it in items]
    else:
        files = sorted(root.glob("*.jsonl")) if root.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no corpus at {root}: expected manifest.json (nar corpus build) "
                                    "or *.jsonl records")
        out = []
        for f in files:
            with f.open() as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    rec = json.loads(line)
                    if rec.get("status", "ok") != "ok":
                        continue
                    src = str(rec.get("source", ""))
                    if sources is not None and src not in sources:
                        continue
                    out.append(CorpusEntry(str(rec["key"]), str(rec["family"]),
                                           ArchGraph.from_dict(rec["graph"]), src))
    out.sort(key=lambda e: e.key)
    return out


def select_items(entries: Sequence[CorpusEntry], max_nodes: int, max_per_family: int,
                 seed: int) -> list[CorpusEntry]:
    """Keep graphs with ``2..max_nodes`` nodes and at most ``max_per_family`` per family.

    The per-family subsample is drawn with ``np.random.default_rng(seed)`` from the key-sorted
    members; the result is sorted by key.
    """
    fams: dict[str, list[CorpusEntry]] = {}
    for e in sorted(entries, key=lambda e: e.key):
        if 2 <= e.graph.num_nodes <= max_nodes:
            fams.setdefault(e.family, []).append(e)
    rng = np.random.default_rng(seed)
    out: list[CorpusEntry] = []
    for fam in sorted(fams):
        members = fams[fam]
        if max_per_family and len(members) > max_per_family:
            pick = np.sort(rng.choice(len(members), size=max_per_family, replace=False))
            members = [members[int(i)] for i in pick]
        out.extend(members)
    out.sort(key=lambda e: e.key)
    return out


def make_split(entries: Sequence[CorpusEntry], name: str, seed: int, test_frac: float = 0.2) -> Split:
    """:func:`split_by_model` / :func:`split_by_family` over ``entries`` (keys recorded)."""
    families = [e.family for e in entries]
    keys = [e.key for e in entries]
    if name == "by_model":
        return split_by_model(families, test_frac=test_frac, seed=seed, keys=keys)
    if name == "by_family":
        return split_by_family(families, test_frac=test_frac, seed=seed, keys=keys)
    if name == "none":
        return Split("none", np.arange(len(entries)), np.zeros(0, dtype=np.int64), seed,
                     len(entries), "", {})
    raise ValueError(f"unknown split {name!r}")


# ===================================================================== helpers
def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)




def _pk_batches(codes: np.ndarray, per_family: int, batch_size: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches packed from same-family chunks (every item once)."""
    chunks: list[np.ndarray] = []
    for fam in np.unique(codes):
        members = np.flatnonzero(codes == fam)
        members = members[rng.permutation(members.size)]
        chunks.extend(members[i:i + per_family] for i in range(0, members.size, per_family))
    batches: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    size = 0
    for ci in rng.permutation(len(chunks)):
        cur.append(chunks[ci])
        size += chunks[ci].size
        if size >= batch_size:
            batches.append(np.concatenate(cur))
            cur, size = [], 0
    if cur:
        batches.append(np.concatenate(cur))
    return batches


def embed_prepared(model: NAREncoder, prepared: Sequence[PreparedGraph], batch_size: int = 64,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Embed prepared graphs in batches with ``model`` in eval mode: ``(N, out_dim)`` float32."""
    was = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for i in range(0, len(prepared), batch_size):
                batch = collate(prepared[i:i + batch_size]).to(device)
                out.append(model(batch).float().cpu().numpy())
    finally:
        model.train(was)
    if not out:
        return np.zeros((0, model.config.out_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def evaluate_split(emb: np.ndarray, labels: Sequence[Hashable], split: Split,
                   ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Retrieval metrics with the baselines' protocol: queries = gallery = ``split.test``.

    Args:
        emb: ``(len(split.test), D)`` embeddings of the test items, in ``split.test`` order.
        labels: family labels of *all* items (indexed like the split).
        split: the split.
        ks: metric cut-offs.
    """
    test_labels = [labels[int(i)] for i in split.test]
    return retrieval_metrics(emb, test_labels, ks=ks)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(model: NAREncoder, out_dir: str | os.PathLike[str], card: dict[str, Any],
                 name: str = "nar-encoder") -> tuple[Path, Path, str]:
    """Write ``<name>.pt`` (inference state dict, no classification head) and ``<name>.json``.

    The JSON gets the format/vocabulary/motif versions, the inference config, the weights'
    SHA-256 and the :func:`~nar_plugin.model.inference.make_encoder_version` string on top of ``card``.

    Returns:
        ``(weights path, json path, encoder version)``.
    """
    from nar_plugin.model.inference import make_encoder_version

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if not k.startswith("classifier.")}
    cfg = replace(model.config, num_classes=0)
    wpath, jpath = out / f"{name}.pt", out / f"{name}.json"
    tmp = wpath.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, wpath)
    digest = _sha256(wpath)
    version = make_encoder_version(cfg, digest)
    meta = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "vocab_version": VOCAB_VERSION,
        "motif_version": MOTIF_VERSION,
        "config": cfg.to_dict(),
        "weights_file": wpath.name,
        "weights_sha256": digest,
        "encoder_version": version,
        **card,
    }
    tmpj = jpath.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    os.replace(tmpj, jpath)
    return wpath, jpath, version


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {platform.platform()}"


# ===================================================================== training
def train(
    corpus_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    out_dir: str | os.PathLike[str],
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    steps: int = 2,
    max_size: int = 32,
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
        corpus_dir: corpus directory (see :func:`load_training_corpus`); ignored with ``entries``.
        out_dir: where weights, JSON and ``checkpoint.pt`` go.
        epochs, seed, device, steps, max_size, motif_loss, graph_loss, ce_loss: see
            :class:`TrainConfig` (the ablation switches are the three ``*_loss`` flags and
            ``steps``).
        entries: use these items instead of loading ``corpus_dir`` (tests, custom corpora).
        progress: show a rich progress bar.
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
    if entries is None:
        if corpus_dir is None:
            raise ValueError("give corpus_dir or entries")
        entries = load_training_corpus(corpus_dir, cfg.sources)
    all_count = len(entries)
    items = select_items(entries, cfg.max_nodes, cfg.max_per_family, cfg.seed)
    split = make_split(items, cfg.split, cfg.seed, cfg.test_frac)
    if split.train.size < 2:
        raise ValueError(f"need at least 2 training items, found {split.train.size}")
    labels = [e.family for e in items]
    train_fams = sorted({labels[int(i)] for i in split.train})
    fam_code = {f: i for i, f in enumerate(train_fams)}
    codes = np.asarray([fam_code[labels[int(i)]] for i in split.train], dtype=np.int64)
    enc_cfg = cfg.encoder_config(len(train_fams) if cfg.ce_loss else 0)
    logger.info("training on %d items (%d families), testing on %d; %d items in corpus",
                split.train.size, len(train_fams), split.test.size, all_count)

    # ---- prepare once (motif sampling dominates; never repeated per epoch)
    tp = time.perf_counter()
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
    test_prepared = [prep(items[int(i)].graph, 0, 0) for i in split.test]
    prep_seconds = time.perf_counter() - tp
    logger.info("prepared %d graphs in %.1fs", sum(len(v) for v in views) + len(test_prepared), prep_seconds)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    metrics: dict[str, dict[str, float]] = {}
    batch_rng = np.random.default_rng(cfg.seed + 2)
    with _threads(cfg.num_threads), _seeded(cfg.seed, dev):
        model = NAREncoder(enc_cfg).to(dev)
        gen = torch.Generator().manual_seed(cfg.seed + 3)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
        bar = _progress(progress)
        with bar:
            task = bar.add_task("train", total=cfg.epochs) if bar is not None else None
            for epoch in range(cfg.epochs):
                te = time.perf_counter()
                model.train()
                sums: Counter[str] = Counter()
                nb = 0
                for idx in _pk_batches(codes, cfg.per_family, cfg.batch_size, batch_rng):
                    graphs = [v for i in idx for v in views[int(i)]]
                    y = torch.as_tensor(np.repeat(codes[idx], len(views[int(idx[0])])), device=dev)
                    outs = model.training_outputs(collate(graphs).to(dev))
                    losses: dict[str, torch.Tensor] = {}
                    if cfg.graph_loss:
                        losses["graph"] = supcon_loss(outs["proj"], y, cfg.tau_graph)
                    if cfg.ce_loss and "logits" in outs:
                        losses["ce"] = cfg.ce_weight * F.cross_entropy(outs["logits"], y)
                    if cfg.motif_loss and "motif" in outs:
                        losses["motif"] = cfg.motif_weight * motif_info_nce(
                            outs["motif"], outs["context"], cfg.tau_motif, outs["motif_type"],
                            generator=gen)
                    loss = sum(losses.values())
                    opt.zero_grad()
                    loss.backward()  # type: ignore[union-attr]
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                    opt.step()
                    sums["loss"] += float(loss.detach())  # type: ignore[union-attr]
                    for k, v in losses.items():
                        sums[k] += float(v.detach())
                    nb += 1
                sched.step()
                row = {k: v / max(nb, 1) for k, v in sums.items()}
                row["epoch"] = epoch + 1
                row["seconds"] = time.perf_counter() - te
                last = epoch + 1 == cfg.epochs
                if split.test.size and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
                    emb = embed_prepared(model, test_prepared, device=dev)
                    res = evaluate_split(emb, labels, split)
                    row.update({f"test_{k}": v for k, v in res.items() if k in ("MAP@20", "MRR@20", "NDCG@20")})
                    metrics[split.name] = res
                    if save_checkpoints:
                        torch.save({"epoch": epoch + 1, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(), "config": asdict(cfg)},
                                   out / "checkpoint.pt")
                history.append(row)
                logger.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                            {k: round(v, 4) for k, v in row.items()})
                if bar is not None and task is not None:
                    desc = f"loss {row.get('loss', float('nan')):.3f}"
                    if "test_MAP@20" in row:
                        desc += f" MAP@20 {row['test_MAP@20']:.3f}"
                    bar.update(task, advance=1, description=desc)
        model.eval()
    seconds = time.perf_counter() - t0
    src_counts = Counter(e.source for e in items)
    card = {
        "seed": cfg.seed,
        "command": command if command is not None else " ".join(sys.argv),
        "train_config": {**asdict(cfg), "sources": list(cfg.sources) if cfg.sources else None},
        "families_trained": train_fams,
        "corpus": {
            "dir": (None if corpus_dir is None else str(corpus_dir) if isinstance(corpus_dir, (str, os.PathLike))
                    else [str(d) for d in corpus_dir]),
            "items_in_corpus": all_count,
            "items_used": len(items),
            "families_used": len(set(labels)),
            "by_source": dict(sorted(src_counts.items())),
            "split": {"name": split.name, "train": int(split.train.size), "test": int(split.test.size),
                      "keys_hash": split.keys_hash},
        },
        "metrics": metrics,
        "history": history,
        "training_seconds": round(seconds, 1),
        "prepare_seconds": round(prep_seconds, 1),
        "hardware": _hardware(),
        "device": str(dev),
        "num_threads": cfg.num_threads,
    }
    wpath, jpath, version = save_weights(model, out, card)
    if not keep_checkpoint:
        (out / "checkpoint.pt").unlink(missing_ok=True)
    logger.info("wrote %s (%s) in %.1fs", wpath, version, seconds)
    return TrainResult(wpath, jpath, version, metrics, history, seconds,
                       int(split.train.size), int(split.test.size), cfg)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _Quiet()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(),
                    TextColumn("{task.description}"), TimeElapsedColumn(), transient=False)


class _Quiet(_NoBar):
    """Stand-in for a rich Progress when the bar is off."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def train_command(corpus: str | os.PathLike[str] | None, out: str | os.PathLike[str],
                  epochs: int = 30, seed: int = 0, device: str = "auto", **options: Any) -> TrainResult:
    """Entry point for ``nar train``: train with the shipped defaults and record the command.

    Args:
        corpus: corpus directory (default: :func:`nar_plugin.corpus.default_corpus_dir`).
        out: output directory (``nar_plugin/weights`` reproduces the shipped files).
        epochs, seed, device: see :func:`train`.
        **options: further :class:`TrainConfig` fields.
    """
    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    cmd = f"nar train --corpus {corpus} --out {out} --epochs {epochs} --seed {seed} --device {device}"
    cmd += "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(options.items()))
    return train(corpus, out, epochs=epochs, seed=seed, device=device, command=cmd, **options)


def compare_with_baselines(
    corpus_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    split: str = "by_model",
    epochs: int = 30,
    seed: int = 0,
    baselines: Sequence[str] = ("histogram", "wl", "gcn", "gat"),
    gnn_epochs: int = 30,
    **options: Any,
) -> dict[str, Any]:
    """Train NAR on ``split``'s training items and evaluate it next to the baselines.

    Every method sees the same items (:func:`select_items` with the run's ``max_nodes``,
    ``max_per_family`` and ``seed``) and the same split; queries = gallery = test items
    (:func:`~nar_plugin.evaluation.baselines.run_baselines`' protocol). Writes ``results_<split>.json``
    to ``out_dir`` and returns the same dict (``results``: ``{method: metrics}``).

    Args:
        corpus_dir: corpus directory or directories.
        out_dir: where the NAR run and the results go.
        split: ``"by_model"`` or ``"by_family"``.
        epochs: NAR epochs.
        seed: the seed of everything.
        baselines: names from :data:`nar_plugin.evaluation.baselines.BASELINES`.
        gnn_epochs: epochs of the GCN/GAT baselines.
        **options: further :class:`TrainConfig` fields for NAR.
    """
    from nar_plugin.evaluation.baselines import run_baselines

    cfg = TrainConfig(epochs=epochs, seed=seed, split=split, **options)
    entries = load_training_corpus(corpus_dir, cfg.sources)
    items = select_items(entries, cfg.max_nodes, cfg.max_per_family, seed)
    sp = make_split(items, split, seed, cfg.test_frac)
    res = train(None, out_dir, epochs=epochs, seed=seed, entries=entries, split=split,
                progress=False, command=f"compare_with_baselines(split={split!r}, epochs={epochs}, "
                f"seed={seed}, options={options!r})", **{k: v for k, v in options.items()})
    results: dict[str, dict[str, float]] = {"nar": {**res.metrics[sp.name], "seconds": res.seconds}}
    if baselines:
        results.update(run_baselines([e.graph for e in items], [e.family for e in items], sp,
                                     methods=baselines, seed=seed, gnn_kwargs={"epochs": gnn_epochs},
                                     num_threads=cfg.num_threads))
    report = {
        "split": split, "seed": seed, "items": len(items), "families": len({e.family for e in items}),
        "train": int(sp.train.size), "test": int(sp.test.size), "epochs": epochs,
        "gnn_epochs": gnn_epochs, "options": {k: v for k, v in options.items()},
        "by_source": dict(sorted(Counter(e.source for e in items).items())),
        "results": results, "nar_history": res.history, "encoder_version": res.encoder_version,
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"results_{split}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
