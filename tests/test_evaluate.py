"""Tests for nar_plugin.evaluation.metrics: hand-computed rankings, ties, self exclusion, blocks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nar_plugin.evaluation.metrics import format_table, iter_blocks, retrieval_metrics

L2 = math.log2


def _sim_row(n: int, q: int, row: dict[int, float]) -> np.ndarray:
    sim = np.zeros((n, n))
    for j, s in row.items():
        sim[q, j] = s
    return sim


def test_hand_computed_ranking_and_self_exclusion() -> None:
    # labels:           0    1    2    3    4    5
    labels = ["a", "a", "b", "a", "b", "b"]
    # Query 0 scores itself highest (must be ignored); the rest rank 2, 1, 4, 3, 5,
    # i.e. relevance 0, 1, 0, 1, 0 with R = 2 relevant items (1 and 3).
    sim = _sim_row(6, 0, {0: 1.0, 2: 0.9, 1: 0.8, 4: 0.7, 3: 0.6, 5: 0.5})
    res = retrieval_metrics(sim, labels, ks=(1, 2, 3, 4, 10), queries=[0], metric="precomputed")
    # MRR: first relevant at rank 2 -> 1/2 (0 when k = 1)
    assert res["MRR@1"] == 0.0
    assert res["MRR@2"] == pytest.approx(0.5)
    assert res["MRR@10"] == pytest.approx(0.5)
    # MAP: hits at ranks 2 and 4: precisions 1/2 and 2/4
    assert res["MAP@1"] == 0.0                                   # / min(2, 1)
    assert res["MAP@2"] == pytest.approx((1 / 2) / 2)            # / min(2, 2)
    assert res["MAP@3"] == pytest.approx((1 / 2) / 2)
    assert res["MAP@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res["MAP@10"] == pytest.approx(0.5)
    # NDCG: DCG = 1/log2(3) + 1/log2(5); ideal = 1/log2(2) + 1/log2(3)
    assert res["NDCG@1"] == 0.0
    assert res["NDCG@2"] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert res["NDCG@10"] == pytest.approx((1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3)))
    assert res["queries"] == 1 and res["skipped_queries"] == 0


def test_all_tied_expected_value() -> None:
    # Query 0; gallery 1..4 all tied, one relevant (item 3): the relevant item is at each rank
    # 1..4 with probability 1/4.
    labels = ["a", "b", "b", "a", "b"]
    sim = _sim_row(5, 0, {0: 5.0, 1: 0.3, 2: 0.3, 3: 0.3, 4: 0.3})
    res = retrieval_metrics(sim, labels, ks=(2, 4), queries=[0], metric="precomputed")
    assert res["MRR@4"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)   # 25/48
    assert res["MRR@2"] == pytest.approx((1 + 1 / 2) / 4)
    assert res["MAP@4"] == pytest.approx(25 / 48)                             # R = 1: MAP = MRR
    assert res["NDCG@4"] == pytest.approx(sum(1 / L2(p + 1) for p in range(1, 5)) / 4)
    assert res["NDCG@2"] == pytest.approx((1 + 1 / L2(3)) / 4)


def test_tie_across_cutoff_uses_whole_group() -> None:
    # Query 0: item 1 (irrelevant) strictly first, then items 2..5 tied; two of them relevant.
    # At k = 2 only one slot of the tie group is visible; P(relevant there) = 2/4.
    labels = ["a", "b", "a", "b", "a", "b"]
    sim = _sim_row(6, 0, {1: 0.9, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1})
    res = retrieval_metrics(sim, labels, ks=(2,), queries=[0], metric="precomputed")
    assert res["MRR@2"] == pytest.approx(0.5 * 1 / 2)
    assert res["MAP@2"] == pytest.approx(0.5 * (1 / 2) / 2)
    assert res["NDCG@2"] == pytest.approx(0.5 * (1 / L2(3)) / (1 + 1 / L2(3)))


def _naive_metrics(order_rel: list[bool], r: int, k: int) -> tuple[float, float, float]:
    top = order_rel[:k]
    mrr = next((1 / (i + 1) for i, x in enumerate(top) if x), 0.0)
    hits, ap = 0, 0.0
    for i, x in enumerate(top):
        if x:
            hits += 1
            ap += hits / (i + 1)
    ap /= min(r, k)
    dcg = sum(1 / L2(i + 2) for i, x in enumerate(top) if x)
    idcg = sum(1 / L2(i + 2) for i in range(min(r, k)))
    return mrr, ap, dcg / idcg


def test_ties_match_brute_force_over_all_orderings() -> None:
    rng = np.random.default_rng(0)
    n = 7
    for trial in range(8):
        labels = rng.integers(0, 2, size=n)
        scores = rng.integers(0, 3, size=(n, n)).astype(float)  # coarse -> many ties
        ks = (1, 2, 3, 6)
        res = retrieval_metrics(scores, labels, ks=ks, metric="precomputed")
        expected = {f"{m}@{k}": 0.0 for m in ("MRR", "MAP", "NDCG") for k in ks}
        count = 0
        for q in range(n):
            gal = [j for j in range(n) if j != q]
            r = sum(labels[j] == labels[q] for j in gal)
            if r == 0:
                continue
            count += 1
            valid = [p for p in itertools.permutations(gal)
                     if all(scores[q, p[i]] >= scores[q, p[i + 1]] for i in range(len(p) - 1))]
            for k in ks:
                vals = np.mean([_naive_metrics([labels[j] == labels[q] for j in p], r, k)
                                for p in valid], axis=0)
                for name, v in zip(("MRR", "MAP", "NDCG"), vals):
                    expected[f"{name}@{k}"] += v
        assert res["queries"] == count, trial
        for name, v in expected.items():
            assert res[name] == pytest.approx(v / count, abs=1e-12), (trial, name)


def test_input_order_does_not_matter_with_ties() -> None:
    rng = np.random.default_rng(1)
    emb = rng.integers(0, 2, size=(40, 3)).astype(float) + 1e-3  # many identical rows
    labels = rng.integers(0, 4, size=40)
    perm = rng.permutation(40)
    a = retrieval_metrics(emb, labels, ks=(5, 10))
    b = retrieval_metrics(emb[perm], labels[perm], ks=(5, 10))
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_blocks_equal_unblocked_and_precomputed_equals_cosine() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(301, 8))
    labels = [f"f{i}" for i in rng.integers(0, 12, size=301)]
    full = retrieval_metrics(emb, labels)
    blocked = retrieval_metrics(emb, labels, block_size=7)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pre = retrieval_metrics(unit @ unit.T, labels, metric="precomputed", block_size=50)
    for key in full:
        assert blocked[key] == pytest.approx(full[key], abs=1e-12)
        assert pre[key] == pytest.approx(full[key], abs=1e-9)
    assert set(full) == {f"{m}@{k}" for m in ("MRR", "MAP", "NDCG") for k in (10, 20, 50, 100)} | {
        "queries", "skipped_queries"}


def test_perfect_and_singleton_families() -> None:
    # two tight clusters plus one singleton family (skipped: it has no relevant item)
    emb = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1], [0.01, 1], [-1, -1]], dtype=float)
    labels = ["a", "a", "a", "b", "b", "c"]
    res = retrieval_metrics(emb, labels, ks=(10,))
    assert res["MRR@10"] == pytest.approx(1.0)
    assert res["MAP@10"] == pytest.approx(1.0)
    assert res["NDCG@10"] == pytest.approx(1.0)
    assert res["queries"] == 5 and res["skipped_queries"] == 1


def test_query_and_gallery_subsets() -> None:
    rng = np.random.default_rng(3)
    n = 50
    sim = rng.normal(size=(n, n))
    labels = rng.integers(0, 5, size=n)
    test = np.arange(20, 50)
    sub = retrieval_metrics(sim, labels, ks=(10,), queries=test, gallery=test, metric="precomputed")
    direct = retrieval_metrics(sim[np.ix_(test, test)], labels[test], ks=(10,), metric="precomputed")
    for key in sub:
        assert sub[key] == pytest.approx(direct[key], abs=1e-12)
    # queries outside the gallery rank every gallery item (nothing to exclude)
    q, g = np.arange(0, 10), np.arange(10, 50)
    res = retrieval_metrics(sim, labels, ks=(40,), queries=q, gallery=g, metric="precomputed")
    assert res["queries"] + res["skipped_queries"] == 10


def test_gallery_smaller_than_k() -> None:
    labels = ["a", "a", "b"]
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    res = retrieval_metrics(emb, labels, ks=(100,))
    # queries 0 and 1 find each other first; query 2 is skipped
    assert res["MAP@100"] == pytest.approx(1.0)
    assert res["skipped_queries"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ks": ()},
        {"ks": (0,)},
        {"metric": "euclid"},
        {"queries": [0, 0]},
        {"gallery": [7]},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        retrieval_metrics(np.eye(3), ["a", "a", "b"], **kwargs)


def test_bad_shapes_and_values() -> None:
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.ones((3, 2)), ["a", "a", "b"], metric="precomputed")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 1.0], [1.0, 0.0]]), ["a", "a"])


def test_iter_blocks() -> None:
    assert [(s.start, s.stop) for s in iter_blocks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert list(iter_blocks(0, 3)) == []
    with pytest.raises(ValueError):
        list(iter_blocks(3, 0))


def test_format_table() -> None:
    table = format_table(
        {"wl": {"MAP@20": 0.5, "MRR@20": 0.75, "queries": 3.0}, "gcn": {"MAP@20": 0.25}}
    )
    assert table.splitlines() == [
        "| method | MRR@20 | MAP@20 |",
        "|---|---:|---:|",
        "| wl | **0.7500** | **0.5000** |",
        "| gcn | - | 0.2500 |",
    ]
