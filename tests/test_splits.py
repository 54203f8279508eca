"""Tests for nar_plugin.evaluation.splits: determinism, disjointness, stratification, persistence."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.evaluation.splits import (
    Split,
    keys_hash,
    split_by_family,
    split_by_model,
)


def _families(seed: int = 0, n_fam: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, size=n_fam)
    sizes[:5] = [1, 2, 3, 4, 5]  # make sure small families are present
    fams = [f"fam{i}" for i, s in enumerate(sizes) for _ in range(s)]
    return [fams[i] for i in rng.permutation(len(fams))]


@pytest.mark.parametrize("fn", [split_by_model, split_by_family])
def test_deterministic_disjoint_and_complete(fn) -> None:
    fams = _families()
    a, b = fn(fams, test_frac=0.2, seed=3), fn(fams, test_frac=0.2, seed=3)
    c = fn(fams, test_frac=0.2, seed=4)
    assert a == b
    assert not np.array_equal(a.test, c.test)
    assert np.intersect1d(a.train, a.test).size == 0
    assert np.array_equal(np.sort(np.concatenate([a.train, a.test])), np.arange(len(fams)))
    assert np.all(np.diff(a.test) > 0) and np.all(np.diff(a.train) > 0)
    assert 0.12 < a.test.size / len(fams) < 0.28
    with pytest.raises(ValueError):
        a.train[0] = 5  # read-only


def test_by_model_is_stratified_and_every_query_has_relevant_items() -> None:
    fams = _families()
    split = split_by_model(fams, test_frac=0.25, seed=0)
    size = Counter(fams)
    n_test = Counter(fams[i] for i in split.test)
    n_train = Counter(fams[i] for i in split.train)
    for fam, n in size.items():
        assert n_train[fam] >= 1, fam                            # every family is trained on
        assert n_test[fam] == 0 or n_test[fam] >= 2, fam          # test-only gallery works
        if n <= 2:
            assert n_test[fam] == 0
        if n >= 12:                                              # proportional per family
            assert abs(n_test[fam] - 0.25 * n) <= 1, (fam, n, n_test[fam])
    assert len(n_test) > len(size) // 2


def test_by_model_expected_fraction_unbiased_for_small_families() -> None:
    # 400 families of 4: target 0.8 test items each -> 0 or 2, on average 0.8
    fams = [f"f{i}" for i in range(400) for _ in range(4)]
    split = split_by_model(fams, test_frac=0.2, seed=1)
    assert split.test.size / len(fams) == pytest.approx(0.2, abs=0.03)


def test_by_family_holds_out_whole_families() -> None:
    fams = _families(1)
    split = split_by_family(fams, test_frac=0.2, seed=0)
    test_f = {fams[i] for i in split.test}
    train_f = {fams[i] for i in split.train}
    assert test_f and not (test_f & train_f)
    size = Counter(fams)
    assert all(size[f] >= 2 for f in test_f)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="test_frac"):
        split_by_model(["a", "a"], test_frac=1.0)
    with pytest.raises(ValueError, match="min_family_size"):
        split_by_family(["a", "a"], min_family_size=1)
    with pytest.raises(ValueError, match="keys"):
        split_by_model(["a", "a", "a"], keys=["x"])
    with pytest.raises(ValueError, match="disjoint"):
        Split("x", train=[0, 1], test=[1], seed=0, n_items=2, keys_hash="")


def test_save_load_roundtrip_and_key_check(tmp_path: Path) -> None:
    fams = _families()
    keys = [f"model{i}" for i in range(len(fams))]
    split = split_by_model(fams, seed=5, keys=keys)
    path = tmp_path / "split.json"
    split.save(path)
    assert Split.load(path) == split
    assert Split.load(path, keys=keys) == split
    assert split.keys_hash == keys_hash(keys)
    with pytest.raises(CorruptArtifactError, match="keys hash"):
        Split.load(path, keys=list(reversed(keys)))
    with pytest.raises(CorruptArtifactError, match="keys hash"):
        Split.load(path, keys=keys[:-1])


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(CorruptArtifactError):
        Split.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CorruptArtifactError, match="format"):
        Split.load(path)
    good = split_by_family(["a", "a", "b", "b", "c"], test_frac=0.4, seed=0).to_dict()
    path.write_text(json.dumps({**good, "format_version": 999}))
    with pytest.raises(CorruptArtifactError, match="version"):
        Split.load(path)
    path.write_text(json.dumps({**good, "test": [0, 0]}))
    with pytest.raises(CorruptArtifactError, match="malformed"):
        Split.load(path)
    with pytest.raises(FileNotFoundError):  # missing is not corrupt
        Split.load(tmp_path / "missing.json")
