"""``nar eval``: NAR and the baselines on the same corpus, the same splits, the same metrics.

Protocol (both splits): the corpus items are selected as for training
(:func:`nar_plugin.training.data.select_items` with the training config's caps and seed); queries =
gallery = the split's test items, self excluded, relevant = same family
(:func:`nar_plugin.evaluation.metrics.retrieval_metrics`). GCN/GAT baselines are trained on the split's
train items only. For ``nar`` the encoder must not have seen the test families of the
held-out-family split, so unless ``weights`` are given per split, the encoder is trained on each
split's train items with the shipped training config (``retrain_nar=True``, the default for
``by_family``); the shipped weights themselves were trained on the by-model split's train items.
An encoder trained here gets the fitted sketch token table (sketch version 4) fitted on the same
train items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nar_plugin.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "run_eval"]

METHODS = ("nar", "histogram", "wl", "gcn", "gat")


def _nar_metrics(entries: Sequence[Any], split: Any, seed: int, retrain: bool, epochs: int | None,
                 log: Callable[[str], None]) -> dict[str, float]:
    import tempfile

    from nar_plugin.evaluation.metrics import evaluate_split
    from nar_plugin.model.inference import embed_many, load_encoder
    from nar_plugin.training.loop import train

    labels = [e.family for e in entries]
    test_graphs = [entries[int(i)].graph for i in split.test]
    if not retrain:
        return evaluate_split(embed_many(test_graphs), labels, split)
    t = time.time()
    kwargs: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    with tempfile.TemporaryDirectory(prefix=f"nar-eval-{split.name}-") as out:
        # train() selects and splits `entries` exactly as here (same caps, same seed)
        train(None, out, seed=seed, entries=list(entries), split=split.name, progress=False,
              save_checkpoints=False, **kwargs)
        log(f"  trained NAR on the {split.name} train items in {time.time() - t:.0f} s")
        if load_encoder().config.sketch_version >= 4:
            _fit_sketch_table(out, entries, split)
        enc = load_encoder(out, reload=True)
    return evaluate_split(embed_many(test_graphs, encoder=enc), labels, split)


def _fit_sketch_table(out: str, entries: Sequence[Any], split: Any) -> None:
    """Give an encoder trained on ``split.train`` the shipped sketch's fitted token table, fitted
    on those train items only (the shipped table's cross-library rows hold the test families)."""
    from nar_plugin.model.token_weights import token_row
    from nar_plugin.training.data import NAS_SOURCES
    from nar_plugin.training.sketch_table import write_sketch_weights

    train = (entries[int(i)] for i in split.train)
    write_sketch_weights(out, rows=[token_row(e.graph, e.family, e.source, 4) for e in train
                                    if e.source not in NAS_SOURCES])


def run_eval(corpus: str | Path | None = None, methods: Sequence[str] = METHODS,
             splits: Sequence[str] = ("by_model", "by_family"), seed: int = 0, gnn_epochs: int = 20,
             retrain_nar: bool | None = None, nar_epochs: int | None = None, out: str | Path | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate ``methods`` on ``splits``; returns ``{split: {method: metrics}}`` and writes the
    Markdown tables to ``out`` when given.

    Args:
        corpus: corpus directory (default: the built corpus).
        methods: any of ``nar``, ``histogram``, ``wl``, ``gcn``, ``gat``.
        splits: ``by_model`` and/or ``by_family``.
        seed: seed of item selection, splits and baseline training.
        gnn_epochs: epochs of the GCN/GAT baselines.
        retrain_nar: train NAR per split (default: only for ``by_family``).
        nar_epochs: epochs when retraining NAR (default: the training config's).
        out: Markdown file to write.
        log: where progress lines and tables go (default: this module's logger, INFO).
    """
    from nar_plugin.evaluation.baselines import run_baselines
    from nar_plugin.evaluation.metrics import format_table
    from nar_plugin.training.config import TrainConfig
    from nar_plugin.training.data import load_training_corpus, make_split, select_items

    log = log or logger.info
    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    cfg = TrainConfig()
    entries = select_items(load_training_corpus(corpus), cfg.max_nodes, cfg.max_per_family, seed, cfg.nas_fraction)
    labels = [e.family for e in entries]
    graphs = [e.graph for e in entries]
    log(f"{len(entries)} items, {len(set(labels))} families from {corpus}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    md = []
    for name in splits:
        split = make_split(entries, name, seed)
        log(f"split {name}: {len(split.train)} train, {len(split.test)} test")
        res: dict[str, dict[str, float]] = {}
        if "nar" in methods:
            t = time.time()
            retrain = retrain_nar if retrain_nar is not None else name != "by_model"
            res["NAR"] = _nar_metrics(entries, split, seed, retrain, nar_epochs, log)
            log(f"  NAR: MAP@20 {res['NAR'].get('MAP@20', float('nan')):.4f} ({time.time() - t:.0f} s)")
        base = [m for m in methods if m != "nar"]
        if base:
            t = time.time()
            got = run_baselines(graphs, labels, split, methods=tuple(base), seed=seed,
                                gnn_kwargs={"epochs": gnn_epochs})
            for m, r in got.items():
                res[{"histogram": "op histogram", "wl": "WL subtree", "gcn": "GCN", "gat": "GAT"}.get(m, m)] = r
            log(f"  baselines {base} in {time.time() - t:.0f} s")
        results[name] = res
        table = format_table(res)
        md.append(f"### split: {name} ({len(split.test)} test queries)\n\n{table}\n")
        log(table)
    if out is not None:
        atomic_write_text(out, "\n".join(md))
    return results
