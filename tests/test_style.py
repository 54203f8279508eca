"""Style generalisation on hand-written models the encoder never saw (tests/fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

from nar_plugin.evaluation.metrics import retrieval_metrics
from nar_plugin.extract import extract_graph
from fixtures.style_models import STYLE_MODELS, example  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="module")
def graphs():
    return [(fam, extract_graph(build(), (example(shape, dtype),))) for _, fam, build, shape, dtype in STYLE_MODELS]


def test_three_attention_styles_give_attention_nodes(graphs) -> None:
    layers = {"transformer-library": 4, "transformer-hand": 6, "transformer-sdpa": 3}
    for (name, *_), (_, g) in zip(STYLE_MODELS, graphs):
        if name in layers:
            h = g.op_histogram()
            assert h["attention"] == layers[name], (name, h)
            assert h["softmax"] == 0 and h["matmul"] == 0, (name, h)


def test_hand_rolled_linear_is_a_linear(graphs) -> None:
    hand = dict(zip((n for n, *_ in STYLE_MODELS), (g for _, g in graphs)))["mlp-hand-rolled"]
    assert hand.op_histogram()["linear"] == 3 and hand.op_histogram()["matmul"] == 0


def test_nar_retrieves_families_across_styles(graphs) -> None:
    from nar_plugin.model.inference import embed_many

    fams = [f for f, _ in graphs]
    emb = embed_many([g for _, g in graphs])
    assert retrieval_metrics(emb, fams, ks=(10,))["MAP@10"] >= 0.85


# ------------------------------------------------------------------ wiring fixture
def _extract(models: list) -> dict:
    """``{name: (family, graph)}`` of fixture entries."""
    return {name: (fam, extract_graph(build(), (example(shape, dtype),)))
            for name, fam, build, shape, dtype in models}


@pytest.fixture(scope="module")
def wiring():
    from fixtures.wiring_models import WIRING_MODELS

    return _extract(WIRING_MODELS)


def test_resnet_v1_and_v2_differ_only_in_wiring(wiring) -> None:
    """The fixture is what it claims: the same layers, different graphs. Since the IR is the
    inference graph (issue 14), v1's BatchNorms (after each conv) are folded into the convs while
    v2's pre-activation BatchNorms (after an add) cannot be: apart from those, the op counts are
    the same."""
    for style in ("classes", "loop", "wide"):
        v1, v2 = wiring[f"resnet-v1-{style}"][1], wiring[f"resnet-v2-{style}"][1]
        h1, h2 = v1.op_histogram(), v2.op_histogram()
        assert h1["batch_norm"] == 0 and h2["batch_norm"] > 0
        del h2["batch_norm"]
        assert h1 == h2
        assert v1.graph_hash != v2.graph_hash


def test_post_and_pre_norm_blocks_use_the_same_ops(wiring) -> None:
    post, pre = wiring["post-norm-hand"][1].op_histogram(), wiring["pre-norm-hand"][1].op_histogram()
    per_layer = {op: n / 6 for op, n in post.items() if op in ("attention", "layer_norm", "add", "gelu")}
    assert per_layer == {"attention": 1, "layer_norm": 2, "add": 2, "gelu": 1}
    assert {op: pre[op] / 4 for op in per_layer} == {"attention": 1, "layer_norm": 9 / 4, "add": 2, "gelu": 1}


def test_nar_tells_wiring_apart_where_op_counts_cannot(wiring) -> None:
    """Shipped weights: every model's nearest neighbour is in its own family: ResNet v1 / v2, and
    post-norm / pre-norm / parallel transformer blocks, which share their op counts and op pairs
    (the sketch's residual fan-out tokens, version 3, tell the last two apart)."""
    from nar_plugin.model.inference import embed_many

    names = list(wiring)
    fams = [wiring[n][0] for n in names]
    graphs = [wiring[n][1] for n in names]
    emb = embed_many(graphs)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    wrong = [name for i, name in enumerate(names) if fams[int(sim[i].argmax())] != fams[i]]
    # sketch v4 (session 6): the wide ResNet v1 (3 -> 128 stem, a rare width change) has a v2
    # nearest; every transformer and DenseNet, and the other ResNets, stay in their family
    assert set(wrong) <= {"resnet-v1-wide", "resnet-v2-wide"}, wrong


def test_nar_beats_the_op_histogram_on_the_wiring_fixture(wiring) -> None:
    """With BatchNorm folded into convs (issue 14) ResNet v1 loses its norms and v2 keeps them,
    so the op histogram scores 0.940 here and issue 16's + 0.20 cannot be met on this fixture
    (measured: NAR 1.000); the GroupNorm variant below carries that target."""
    nar, hist = _nar_and_histogram_map10(wiring)
    assert hist > 0.9 and nar > hist, (nar, hist)


def _nar_and_histogram_map10(models: dict) -> tuple[float, float]:
    """MAP@10 of the shipped embedding and of the op histogram on ``{name: (family, graph)}``."""
    from nar_plugin.evaluation.baselines import histogram_embed
    from nar_plugin.model.inference import embed_many

    fams = [fam for fam, _ in models.values()]
    graphs = [g for _, g in models.values()]
    return (retrieval_metrics(embed_many(graphs), fams, ks=(10,))["MAP@10"],
            retrieval_metrics(histogram_embed(graphs), fams, ks=(10,))["MAP@10"])


@pytest.fixture(scope="module")
def wiring_groupnorm():
    from fixtures.wiring_models import WIRING_MODELS_GROUPNORM

    return _extract(WIRING_MODELS_GROUPNORM)


def test_groupnorm_resnets_share_their_op_counts(wiring_groupnorm) -> None:
    """No norm folded: ResNet v1 and v2 of one style have equal op histograms, other graphs."""
    for style in ("classes", "loop", "wide"):
        v1, v2 = wiring_groupnorm[f"resnet-v1-{style}"][1], wiring_groupnorm[f"resnet-v2-{style}"][1]
        assert v1.op_histogram() == v2.op_histogram() and v1.op_histogram()["group_norm"] > 0
        assert v1.graph_hash != v2.graph_hash


def test_nar_beats_the_op_histogram_where_only_wiring_differs(wiring_groupnorm) -> None:
    """Issue 16's target, shipped weights, the wiring fixture with GroupNorm ResNets (measured:
    NAR 1.000, op histogram 0.751, WL 0.450; sketch version 2: 0.854): the embedding sees the
    wiring the op counts cannot."""
    nar, hist = _nar_and_histogram_map10(wiring_groupnorm)
    assert nar >= hist + 0.2, (nar, hist)
