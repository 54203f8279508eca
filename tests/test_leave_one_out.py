"""Leave-one-library-out NAR (nar_plugin.evaluation.leave_one_out) and the cross-library
threshold calibration (nar_plugin.evaluation.calibrate.calibrate_cross_library)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.synthetic_graphs import tiny_corpus

from nar_plugin.corpus.crosslib.dataset import CrossLibItem
from nar_plugin.evaluation.calibrate import calibrate_cross_library, precision_recall_at
from nar_plugin.evaluation.leave_one_out import encoder_without, leave_one_out_nar
from nar_plugin.model.weights import weights_paths

_TINY = {"hidden": 16, "batch_size": 8, "per_family": 3, "out_dim": 16, "sketch_dim": 16, "device": "cpu"}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A JSONL corpus whose families come from two sources, ``timm`` and ``nas``."""
    entries = tiny_corpus()
    lines = [json.dumps({"key": e.key, "family": e.family, "graph": e.graph.to_dict(),
                         "source": "timm" if i % 2 else "nas"}) for i, e in enumerate(entries)]
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "items.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_a_library_outside_the_corpus_uses_the_shipped_encoder(tmp_path: Path, corpus: Path) -> None:
    assert encoder_without("pytorchcv", tmp_path / "lolo", corpus) == weights_paths(None)[0].parent
    assert not (tmp_path / "lolo").exists()  # nothing trained


def test_a_corpus_library_gets_an_encoder_trained_without_it(tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "lolo"
    out = encoder_without("timm", root, corpus, epochs=1, seed=0, **_TINY)
    assert out == root / "without-timm"
    card = json.loads((out / "nar-encoder.json").read_text())
    assert card["train_config"]["sources"] == ["nas"]
    assert set(card["corpus"]["by_source"]) == {"nas"}
    stamp = (out / "nar-encoder.pt").stat().st_mtime_ns
    assert encoder_without("timm", root, corpus, epochs=1, seed=0, **_TINY) == out  # reused, not retrained
    assert (out / "nar-encoder.pt").stat().st_mtime_ns == stamp
    # the LeaveOneOut method embeds with it: learned 16 + sketch 16 dims
    items = [CrossLibItem(e.key, "timm", e.family, e.family, e.graph) for e in tiny_corpus()[:3]]
    emb = leave_one_out_nar(root, corpus).train_fn("timm")(items)
    assert emb.shape == (3, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0)


def test_cross_library_calibration_meets_its_rule_on_the_calibration_half() -> None:
    res = calibrate_cross_library(seed=0, write=False)  # shipped encoder, committed benchmark
    assert -1.0 <= res["related"] <= res["near_duplicate"] <= 1.0
    assert res["pairs_calibration"] > 1000 and res["pairs_held_out"] > 1000
    if res["rules"]["near_duplicate"].startswith("lowest cosine with precision"):
        assert res["near_duplicate_precision_calibration"] >= 0.9
    for part in ("calibration", "held_out"):
        p, r = res[f"related_precision_{part}"], res[f"related_recall_{part}"]
        assert res[f"related_f1_{part}"] == pytest.approx(2 * p * r / (p + r), abs=1e-3)
    assert precision_recall_at(np.array([0.9, 0.1]), np.array([True, False]), 0.5) == (1.0, 1.0)
