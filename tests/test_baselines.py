"""Tests for nar_plugin.evaluation.baselines and .gnn_baselines on a tiny synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nar_plugin.evaluation.baselines import (
    BASELINES,
    histogram_embed,
    run_baselines,
    wl_embed,
)
from nar_plugin.evaluation.gnn_baselines import (
    GNNBaseline,
    gnn_embed,
    graph_data,
    train_gnn_baseline,
)
from nar_plugin.evaluation.metrics import format_table, retrieval_metrics
from nar_plugin.evaluation.splits import split_by_model
from nar_plugin.graph import OPS, ArchGraph, GraphBuilder, NodeAttrs


def _chain(rng: np.random.Generator) -> ArchGraph:
    b = GraphBuilder()
    x = b.add_input()
    w = int(rng.choice([16, 32, 64]))
    for _ in range(int(rng.integers(2, 7))):
        x = b.add("conv", [x], NodeAttrs(3, 1, 0, 5, 5))
        x = b.add("batch_norm", [x])
        x = b.add("relu", [x])
    x = b.add("adaptive_avg_pool", [x])
    b.add_output([b.add("linear", [x], NodeAttrs(0, 0, 0, w.bit_length(), 4))])
    return b.build({"name": "chain"})


def _residual(rng: np.random.Generator) -> ArchGraph:
    b = GraphBuilder()
    x = b.add("conv", [b.add_input()], NodeAttrs(7, 2, 0, 2, 7))
    for _ in range(int(rng.integers(2, 6))):
        h = b.add("relu", [b.add("batch_norm", [b.add("conv", [x], NodeAttrs(3, 1, 0, 7, 7))])])
        h = b.add("batch_norm", [b.add("conv", [h], NodeAttrs(3, 1, 0, 7, 7))])
        x = b.add("relu", [b.add("add", [h, x])])
    b.add_output([b.add("linear", [b.add("adaptive_avg_pool", [x])], NodeAttrs(0, 0, 0, 7, 4))])
    return b.build({"name": "residual"})


def _attention(rng: np.random.Generator) -> ArchGraph:
    b = GraphBuilder()
    x = b.add("embedding", [b.add_input()], NodeAttrs(0, 0, 0, 14, 9))
    for _ in range(int(rng.integers(2, 6))):
        q, k, v = (b.add("linear", [x], NodeAttrs(0, 0, 0, 9, 9)) for _ in range(3))
        a = b.add("linear", [b.add("attention", [q, k, v])], NodeAttrs(0, 0, 0, 9, 9))
        x = b.add("layer_norm", [b.add("add", [a, x])])
        h = b.add("linear", [b.add("gelu", [b.add("linear", [x], NodeAttrs(0, 0, 0, 9, 11))])],
                  NodeAttrs(0, 0, 0, 11, 9))
        x = b.add("layer_norm", [b.add("add", [h, x])])
    b.add_output([x])
    return b.build({"name": "attention"})


@pytest.fixture(scope="module")
def corpus() -> tuple[list[ArchGraph], list[str]]:
    rng = np.random.default_rng(0)
    graphs: list[ArchGraph] = []
    labels: list[str] = []
    for name, make in (("chain", _chain), ("residual", _residual), ("attention", _attention)):
        for _ in range(10):
            graphs.append(make(rng))
            labels.append(name)
    return graphs, labels


def _unit_norm(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


@pytest.mark.parametrize("attributes", [False, True])
def test_histogram_embed(corpus, attributes: bool) -> None:
    graphs, labels = corpus
    a, b = histogram_embed(graphs, attributes), histogram_embed(graphs, attributes)
    assert a.dtype == np.float32 and a.shape[0] == len(graphs)
    assert a.shape[1] == len(OPS) + (59 if attributes else 0)
    assert _unit_norm(a) and np.array_equal(a, b)
    assert retrieval_metrics(a, labels, ks=(5,))["MAP@5"] > 0.9  # op mixes differ per family


@pytest.mark.parametrize("kwargs", [{}, {"tfidf": True, "sublinear_tf": True}, {"steps": 0}])
def test_wl_embed_unit_norm_deterministic_and_better_than_chance(corpus, kwargs) -> None:
    graphs, labels = corpus
    a, b = wl_embed(graphs, dim=2**10, **kwargs), wl_embed(graphs, dim=2**10, **kwargs)
    assert a.shape == (len(graphs), 2**10) and a.dtype == np.float32
    assert _unit_norm(a) and np.array_equal(a, b)
    wl = retrieval_metrics(a, labels, ks=(9,))
    chance = retrieval_metrics(np.random.default_rng(0).normal(size=a.shape), labels, ks=(9,))
    assert wl["MAP@9"] > chance["MAP@9"] + 0.3


def test_wl_same_graph_same_vector_and_steps_matter(corpus) -> None:
    graphs, _ = corpus
    g = graphs[0]
    copy = ArchGraph.from_json(g.to_json())
    e = wl_embed([g, copy], dim=256)
    assert np.array_equal(e[0], e[1])
    assert not np.array_equal(wl_embed([g], steps=0, dim=256), wl_embed([g], steps=2, dim=256))
    with pytest.raises(ValueError):
        wl_embed([g], steps=-1)


def test_graph_data_and_model_shapes(corpus) -> None:
    graphs, _ = corpus
    d = graph_data(graphs[0], 2)
    assert d.x.shape == (graphs[0].num_nodes, 6)
    assert d.edge_index.shape == (2, 2 * graphs[0].num_edges)
    assert d.y.tolist() == [2]
    for conv in ("gcn", "gat"):
        model = GNNBaseline(conv=conv, hidden=16, out_dim=8, heads=4)
        assert "conv=" in repr(model)
        emb = gnn_embed(model, graphs[:5])
        assert emb.shape == (5, 8) and np.isfinite(emb).all() and _unit_norm(emb)
    with pytest.raises(ValueError):
        GNNBaseline(conv="gin")
    with pytest.raises(ValueError):
        GNNBaseline(conv="gat", hidden=10, heads=4)


@pytest.mark.parametrize("conv", ["gcn", "gat"])
def test_train_gnn_deterministic_finite_and_leaves_global_rng(corpus, conv: str) -> None:
    graphs, labels = corpus
    train = np.arange(0, len(graphs), 2)
    state = torch.get_rng_state()
    kwargs = {"conv": conv, "epochs": 2, "seed": 3, "hidden": 16, "batch_size": 8, "num_threads": 1}
    m1 = train_gnn_baseline(graphs, labels, train, **kwargs)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    m2 = train_gnn_baseline(graphs, labels, train, **kwargs)
    e1, e2 = gnn_embed(m1, graphs), gnn_embed(m2, graphs)
    assert e1.shape == (len(graphs), 128)
    assert np.isfinite(e1).all() and _unit_norm(e1)
    assert np.array_equal(e1, e2)
    assert len(m1.history) == 2 and all(np.isfinite(m1.history))
    m3 = train_gnn_baseline(graphs, labels, train, **{**kwargs, "seed": 4})
    assert not np.array_equal(e1, gnn_embed(m3, graphs))


def test_training_improves_over_untrained(corpus) -> None:
    graphs, labels = corpus
    train = np.arange(len(graphs))
    untrained = train_gnn_baseline(graphs, labels, train, epochs=0, seed=0, hidden=32)
    trained = train_gnn_baseline(graphs, labels, train, epochs=10, seed=0, hidden=32,
                                 batch_size=12, ce_weight=0.5)
    before = retrieval_metrics(gnn_embed(untrained, graphs), labels, ks=(9,))["MAP@9"]
    after = retrieval_metrics(gnn_embed(trained, graphs), labels, ks=(9,))["MAP@9"]
    assert trained.history[-1] < trained.history[0]
    assert after >= before and after > 0.9


def test_train_gnn_bad_arguments(corpus) -> None:
    graphs, labels = corpus
    with pytest.raises(ValueError):
        train_gnn_baseline(graphs, labels[:-1], [0, 1])
    with pytest.raises(ValueError):
        train_gnn_baseline(graphs, labels, [])
    with pytest.raises(ValueError):
        train_gnn_baseline(graphs, labels, [len(graphs)])


def test_run_baselines_end_to_end(corpus) -> None:
    graphs, labels = corpus
    split = split_by_model(labels, test_frac=0.4, seed=0)
    results = run_baselines(graphs, labels, split, seed=0, ks=(5,),
                            gnn_kwargs={"epochs": 2, "hidden": 16, "batch_size": 8},
                            num_threads=1)
    assert list(results) == list(BASELINES)
    for method, res in results.items():
        assert res["queries"] == split.test.size, method
    # the protocol: queries = gallery = test items; GNNs trained on the train items only
    test_graphs = [graphs[int(i)] for i in split.test]
    test_labels = [labels[int(i)] for i in split.test]
    direct = {
        "histogram": histogram_embed(test_graphs),
        "wl": wl_embed(test_graphs),
        "gcn": gnn_embed(train_gnn_baseline(graphs, labels, split.train, conv="gcn", seed=0, num_threads=1,
                                            epochs=2, hidden=16, batch_size=8), test_graphs),
    }
    for method, emb in direct.items():
        expected = retrieval_metrics(emb, test_labels, ks=(5,))
        assert results[method]["MAP@5"] == pytest.approx(expected["MAP@5"]), method
    assert results["histogram"]["MAP@5"] > 0.9  # op mixes differ per family
    table = format_table(results)
    assert table.splitlines()[0] == "| method | MRR@5 | MAP@5 | NDCG@5 |"
    assert len(table.splitlines()) == 2 + len(BASELINES)
    full = run_baselines(graphs, labels, split, methods=("wl",), ks=(5,), gallery="all")
    assert full["wl"]["queries"] == split.test.size
    with pytest.raises(ValueError, match="unknown"):
        run_baselines(graphs, labels, split, methods=("gin",))
    with pytest.raises(ValueError, match="gallery"):
        run_baselines(graphs, labels, split, methods=("wl",), gallery="train")  # type: ignore[arg-type]
