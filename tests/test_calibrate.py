"""Tests for nar_plugin.evaluation.calibrate and the thresholds file it writes (read by search)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.evaluation.calibrate import (
    calibrate,
    precision_recall_at,
    read_thresholds,
    write_thresholds,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(seed: int, spread: float) -> tuple[np.ndarray, list[str]]:
    """Four families of six around orthogonal centres; ``spread`` sets how much they overlap."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16)[:4] * 3.0
    emb = np.concatenate([c + spread * rng.normal(size=(6, 16)) for c in centres])
    return _unit(emb), [f"f{i}" for i in range(4) for _ in range(6)]


def _pair_scores(emb: np.ndarray, fams: list[str]) -> tuple[np.ndarray, np.ndarray]:
    iu = np.triu_indices(len(fams), k=1)
    f = np.asarray(fams)
    return (emb @ emb.T)[iu].astype(np.float64), f[iu[0]] == f[iu[1]]


def test_separable_families_put_related_at_the_lowest_same_family_score() -> None:
    emb, fams = _clusters(0, spread=0.3)
    scores, pos = _pair_scores(emb, fams)
    assert scores[pos].min() > scores[~pos].max()  # separable by construction
    res = calibrate(emb, fams, near_min_recall=0.1)
    assert res["pairs"] == len(scores) == 276 and res["positive_pairs"] == int(pos.sum()) == 60
    assert res["related"] == round(float(scores[pos].min()), 4)
    assert res["related_precision"] == 1.0 and res["related_recall"] == 1.0
    # near-duplicate: every threshold above `related` has precision 1, so the highest one that
    # keeps 10% of the same-family pairs (6 of 60) wins
    assert res["near_duplicate"] == round(float(np.sort(scores[pos])[::-1][math.ceil(0.1 * 60) - 1]), 4)
    assert res["near_duplicate_recall"] == pytest.approx(0.1)


def test_overlapping_families_match_a_brute_force_search() -> None:
    emb, fams = _clusters(1, spread=2.0)
    scores, pos = _pair_scores(emb, fams)
    assert scores[pos].min() < scores[~pos].max()  # overlapping: no perfect threshold
    pr = [precision_recall_at(scores, pos, t) for t in scores]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in pr]
    best_f1 = scores[int(np.argmax(f1))]
    ok = [i for i, (_, r) in enumerate(pr) if r >= 0.05]
    best_prec = scores[max(ok, key=lambda i: (pr[i][0], scores[i]))]
    res = calibrate(emb, fams)
    assert res["related"] == round(float(best_f1), 4)
    assert res["near_duplicate"] == round(float(max(best_f1, best_prec)), 4)
    assert res["near_duplicate_precision"] >= res["related_precision"]
    assert 0 < res["related_precision"] < 1  # the families overlap, so precision is not perfect


def test_identical_graphs_are_left_out() -> None:
    emb, fams = _clusters(0, spread=0.3)
    hashes = [str(i) for i in range(len(fams))]
    hashes[1] = hashes[0]  # items 0 and 1: the same architecture
    assert calibrate(emb, fams, hashes)["pairs"] == calibrate(emb, fams)["pairs"] - 1
    assert calibrate(emb, fams, max_items=10)["pairs"] == 45


def test_thresholds_file_round_trip(tmp_path: Path) -> None:
    res = calibrate(*_clusters(0, spread=0.3))
    path = tmp_path / "thresholds.json"
    write_thresholds(res, path, "nar-test-encoder")
    assert read_thresholds(path) == {**res, "encoder": "nar-test-encoder", "format": "nar-thresholds",
                                     "format_version": 1}
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temp file left behind
    path.write_text(json.dumps({**res, "format": "nar-thresholds", "format_version": 99}))
    with pytest.raises(CorruptArtifactError, match="version"):
        read_thresholds(path)


def test_shipped_thresholds_belong_to_the_shipped_encoder() -> None:
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.model.weights import WEIGHTS_DIR

    data = read_thresholds(WEIGHTS_DIR / "thresholds.json")
    assert data["encoder"] == encoder_version()
    assert 0 < data["related"] <= data["near_duplicate"] < 1


# ------------------------------------------------------------------ search.api.load_thresholds
def test_load_thresholds_uses_the_file_of_the_loaded_encoder(tmp_path: Path) -> None:
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.search.api import Thresholds, load_thresholds

    path = tmp_path / "thresholds.json"
    write_thresholds({"related": 0.5, "near_duplicate": 0.9}, path, encoder_version())
    th = load_thresholds(path)
    assert (th.related, th.near_duplicate, th.source) == (0.5, 0.9, "thresholds.json")
    assert load_thresholds(tmp_path / "missing.json") == Thresholds()


def test_load_thresholds_of_another_encoder_falls_back_with_a_warning(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from nar_plugin.search.api import Thresholds, load_thresholds

    path = tmp_path / "thresholds.json"
    write_thresholds({"related": 0.5, "near_duplicate": 0.9}, path, "nar-v0.m0-other-encoder")
    with caplog.at_level(logging.WARNING):
        assert load_thresholds(path) == Thresholds()
    assert "nar-v0.m0-other-encoder" in caplog.text


def test_load_thresholds_of_a_corrupt_file_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nar_plugin.search.api import Thresholds, load_thresholds

    path = tmp_path / "thresholds.json"
    path.write_text("{not json")
    assert load_thresholds(path) == Thresholds()
    assert "using default thresholds" in caplog.text
    path.write_text('{"near_duplicate": 0.9, "related": 0.7}')  # no format header: not ours
    assert load_thresholds(path) == Thresholds()
