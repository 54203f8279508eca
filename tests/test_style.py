"""Style generalisation on hand-written models the encoder never saw (tests/fixtures)."""

from __future__ import annotations

import pytest
import torch

from nar_plugin.evaluate import retrieval_metrics
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
    from nar_plugin.embed import embed_many

    fams = [f for f, _ in graphs]
    emb = embed_many([g for _, g in graphs])
    assert retrieval_metrics(emb, fams, ks=(10,))["MAP@10"] >= 0.85
