"""The fine structural stage (issue 16): near-duplicate = the same network, and the rerank that
puts it first, on real graphs of the committed cross-library benchmark (no encoder needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.vectors import at_cosine as _at_cosine
from fixtures.vectors import unit as _unit

from nar_plugin.evaluation.fine_structure import (
    NEAR_FINE,
    PROMOTE_MIN,
    fine_signature,
    fine_similarity,
    promote_first,
    structure_near,
)
from nar_plugin.index import EmbeddingIndex
from nar_plugin.search.api import find_similar
from nar_plugin.search.relations import Thresholds, relation_for, structurally_near
from nar_plugin.search.results import describe_graph

KEYS = ("timm:resnet50", "pytorchcv:resnet50b", "torchvision:resnet101", "torchvision:wide_resnet50_2",
        "timm:wide_resnet50_2", "timm:resnet101")


@pytest.fixture(scope="module")
def bench() -> dict:
    from nar_plugin.corpus.crosslib import load_cross_library

    return {it.key: it for it in load_cross_library() if it.key in KEYS}


@pytest.fixture(scope="module")
def desc(bench: dict) -> dict:
    return {k: describe_graph(it.graph) for k, it in bench.items()}


def test_signature_is_compact_and_versioned(desc: dict) -> None:
    import json

    fine = desc["timm:resnet50"]["fine"]
    assert fine["v"] == 1 and sum(fine["nodes"].values()) == desc["timm:resnet50"]["num_nodes"]
    assert len(json.dumps(fine)) < 4000
    assert fine_similarity({"fine": {**fine, "v": 99}}, desc["timm:resnet50"]) is None  # another version: unknown


def test_resnet50_of_two_libraries_is_near_duplicate_not_its_depth_or_width_variants(bench: dict,
                                                                                      desc: dict) -> None:
    r50, cv50 = desc["timm:resnet50"], desc["pytorchcv:resnet50b"]
    assert bench["timm:resnet50"].fine == bench["pytorchcv:resnet50b"].fine == "resnet50"
    assert fine_similarity(r50, cv50) == pytest.approx(1.0)
    assert structurally_near(r50, cv50) is True
    for other in ("torchvision:resnet101", "torchvision:wide_resnet50_2"):
        assert fine_similarity(r50, desc[other]) < 0.6
        assert structurally_near(r50, desc[other]) is False
        # the relation find_similar gives, however close the cosine
        assert relation_for(0.999, False, Thresholds(), near=structurally_near(r50, desc[other])) == "related"
    assert relation_for(0.99, False, Thresholds(), near=structurally_near(r50, cv50)) == "near-duplicate"
    # the same network in two libraries is the same as itself, whatever the library
    assert fine_similarity(desc["torchvision:wide_resnet50_2"], desc["timm:wide_resnet50_2"]) == pytest.approx(1.0)


def test_old_descriptions_fall_back_to_the_op_histogram(desc: dict) -> None:
    old = {k: {f: v for f, v in d.items() if f != "fine"} for k, d in desc.items()}
    r50 = old["timm:resnet50"]
    assert fine_similarity(r50, desc["pytorchcv:resnet50b"]) is None
    # earlier releases' check: equal op counts (a width change keeps them), a 101-layer model differs
    assert structurally_near(r50, old["torchvision:wide_resnet50_2"]) is True
    assert structurally_near(r50, desc["torchvision:resnet101"]) is False
    assert structurally_near(None, r50) is None and structure_near({}, {}) is None


def test_promote_first_rule() -> None:
    assert promote_first([0.3, 0.99, 0.99, None]) == 1  # the best; ties: the higher cosine
    assert promote_first([0.9, 0.5]) == 0
    assert promote_first([None, PROMOTE_MIN - 0.01]) is None  # nothing close enough: cosine order
    assert promote_first([0.1] * 40 + [1.0], shortlist=30) is None  # only the shortlist is looked at
    assert 0 < PROMOTE_MIN < NEAR_FINE < 1


def _index(tmp_path: Path, desc: dict, keep_fine: bool) -> EmbeddingIndex:
    idx = EmbeddingIndex(tmp_path / "idx", encoder_version="test-enc")
    base = _unit(np.random.default_rng(0).normal(size=128))
    cos = {"timm:resnet50": 1.0, "torchvision:wide_resnet50_2": 0.995, "torchvision:resnet101": 0.99,
           "pytorchcv:resnet50b": 0.97}
    for i, (key, c) in enumerate(cos.items()):
        d = desc[key] if keep_fine else {f: v for f, v in desc[key].items() if f != "fine"}
        vec = base if c == 1.0 else _at_cosine(base, c, i)
        idx.add(key, vec, graph_hash=key, metadata={"description": d})  # distinct hashes: no same-architecture
    return idx


def test_rerank_puts_the_same_network_first(tmp_path: Path, desc: dict) -> None:
    th = Thresholds(near_duplicate=0.95, related=0.80)
    matches = find_similar("timm:resnet50", k=3, index=_index(tmp_path, desc, True), thresholds=th)
    assert [m.key for m in matches] == ["pytorchcv:resnet50b", "torchvision:wide_resnet50_2", "torchvision:resnet101"]
    assert [m.relation for m in matches] == ["near-duplicate", "related", "related"]
    assert matches[0].fine == pytest.approx(1.0) and matches[0].to_dict()["fine_similarity"] == 1.0
    assert matches[0].score == pytest.approx(0.97, abs=1e-4)  # the score stays the cosine
    # the moved hit says why it is listed above closer cosines; the others are not marked
    assert [m.promoted for m in matches] == [True, False, False]
    assert matches[0].why().startswith("structurally closest of the shortlist (fine similarity 1.00, parameter shapes "
                                       "equal up to a head), listed first")
    assert matches[0].to_dict()["promoted"] is True and "listed first" not in matches[1].why()


def test_old_index_entries_keep_todays_behaviour(tmp_path: Path, desc: dict) -> None:
    th = Thresholds(near_duplicate=0.95, related=0.80)
    matches = find_similar("timm:resnet50", k=3, index=_index(tmp_path, desc, False), thresholds=th)
    assert [m.key for m in matches] == ["torchvision:wide_resnet50_2", "torchvision:resnet101", "pytorchcv:resnet50b"]
    # op-histogram check: the width variant passes it, the 101-layer model does not
    assert [m.relation for m in matches] == ["near-duplicate", "related", "near-duplicate"]
    assert all(m.fine is None for m in matches) and not any(m.promoted for m in matches)


def test_cross_library_nar_is_ranked_like_find_similar(bench: dict) -> None:
    from nar_plugin.evaluation.baselines import histogram_embed
    from nar_plugin.evaluation.cross_library import FineRerank, run_cross_library

    items = list(bench.values())

    def hist(its: list) -> np.ndarray:  # ties resnet50 with wide_resnet50_2 (equal op counts)
        return histogram_embed([it.graph for it in its])

    res = run_cross_library(items, {"hist": hist, "hist+fine": FineRerank(hist)}, k=10, seen=())
    top1 = {m: res.mean(m, "fine_top1") for m in res.methods()}
    assert top1["hist+fine"] == pytest.approx(1.0) and top1["hist"] < 1.0
    assert res.mean("hist+fine", "MAP@10") >= res.mean("hist", "MAP@10") - 1e-9
    assert {fine_signature(it.graph)["v"] for it in items} == {1}


def test_near_duplicate_rule_is_chosen_on_both_thresholds() -> None:
    from nar_plugin.evaluation.calibrate import _choose_near

    # 4 same-network pairs (fine 1.0 or 0.96), 4 variants with high cosine but low fine similarity
    pairs = {"scores": np.array([0.99, 0.98, 0.97, 0.90, 0.995, 0.99, 0.985, 0.5]),
             "fine_sim": np.array([1.0, 1.0, 0.96, 0.96, 0.5, 0.55, 0.3, 0.2]),
             "fine": np.array([True, True, True, True, False, False, False, False])}
    t1, t2, rule = _choose_near(pairs, 0.8, 0.9, 0.5)
    assert (t1, t2) == (0.8, 0.96) and rule.startswith("most recall")  # all 4, none of the variants
    t1, t2, rule = _choose_near(pairs, 0.8, 1.01, 0.5)  # unreachable precision: best precision instead
    assert rule.startswith("best precision") and t2 >= 0.96


def test_parameter_count_separates_what_the_width_buckets_hide() -> None:
    """convnext_small (96 channels) and convnext_base (128) share every node label (widths are
    power-of-two buckets): the parameter count tells them apart, a re-implementation keeps it."""
    from nar_plugin.corpus.crosslib import load_cross_library

    keys = ("torchvision:convnext_small", "timm:convnext_small", "timm:convnext_base")
    sig = {it.key: {"fine": fine_signature(it.graph)} for it in load_cross_library() if it.key in keys}
    assert sig["torchvision:convnext_small"]["fine"]["nodes"] == sig["timm:convnext_base"]["fine"]["nodes"]
    assert fine_similarity(sig["torchvision:convnext_small"], sig["timm:convnext_small"]) > 0.99
    assert fine_similarity(sig["torchvision:convnext_small"], sig["timm:convnext_base"]) < 0.6
    blind = {k: {"fine": {f: v for f, v in s["fine"].items() if f != "params"}} for k, s in sig.items()}
    assert fine_similarity(blind["torchvision:convnext_small"], blind["timm:convnext_base"]) == pytest.approx(1.0)


def test_every_extraction_path_records_the_parameter_count(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from nar_plugin.extract.aten import graph_from_pt2
    from nar_plugin.extract.onnx import graph_from_onnx
    from nar_plugin.extract.torch_module import graph_from_module

    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    x = torch.zeros(1, 3, 8, 8)
    model(x)
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    assert graph_from_module(model, x).metadata["num_params"] == n  # fx
    assert graph_from_module(model, x, tracer="export").metadata["num_params"] == n
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    assert graph_from_pt2(tmp_path / "m.pt2").metadata["num_params"] == n
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    onnx_n = graph_from_onnx(tmp_path / "m.onnx").metadata["num_params"]
    assert n - 2 * 16 <= onnx_n <= n  # BatchNorm folded into the convolution: its scale and shift are gone
    g = graph_from_module(model, x)
    assert fine_signature(g)["params"] == n


def test_promote_threshold_is_read_from_the_thresholds_file(tmp_path: Path) -> None:
    import json

    from nar_plugin.evaluation.calibrate import read_thresholds
    from nar_plugin.evaluation.fine_structure import promote_threshold

    shipped = Path(__file__).resolve().parents[1] / "nar_plugin" / "weights" / "thresholds.json"
    doc = read_thresholds(shipped)
    assert promote_threshold() == doc.get("promote_fine", PROMOTE_MIN)
    raw = json.loads(shipped.read_text())
    raw["promote_fine"] = 0.85
    (tmp_path / "t.json").write_text(json.dumps(raw))
    assert promote_threshold(tmp_path / "t.json") == 0.85
    assert promote_threshold(tmp_path / "missing.json") == PROMOTE_MIN


def test_identical_network_labels_merge_only_the_same_network() -> None:
    """The diagnostic behind ``fine_top1_identical``: one graph and one parameter count make one
    network (pytorchcv's ``resneta18`` is timm's ``resnet18d``); one graph with other widths or
    BatchNorms does not."""
    from nar_plugin.corpus.crosslib import identical_network_labels, load_cross_library

    keys = {"pytorchcv:resneta18", "timm:resnet18d", "torchvision:vgg16", "torchvision:vgg16_bn",
            "torchvision:convnext_small", "torchvision:convnext_base"}
    items = [it for it in load_cross_library() if it.key in keys]
    got = dict(zip((it.key for it in items), identical_network_labels(items, [it.fine for it in items])))
    by = {it.key: it for it in items}
    assert by["torchvision:vgg16"].graph.graph_hash == by["torchvision:vgg16_bn"].graph.graph_hash
    assert by["pytorchcv:resneta18"].fine != by["timm:resnet18d"].fine
    assert got["pytorchcv:resneta18"] == got["timm:resnet18d"] == "resnet18d"
    assert got["torchvision:vgg16"] == "vgg16" and got["torchvision:vgg16_bn"] == "vgg16_bn"
    assert got["torchvision:convnext_small"] != got["torchvision:convnext_base"]


def test_shape_similarity_breaks_ties_between_equally_labelled_hits(tmp_path: Path) -> None:
    """A ViT query, and two hits with its node labels: the ViT of another library and the DeiT
    that adds two vectors (a distillation token and its head's bias). Fine similarity
    and the shapes check cannot tell them apart; the calibrated parameter-shape weight can, and
    ``find_similar``'s thresholds read it."""
    import json

    from nar_plugin.evaluation.fine_structure import (
        FINE_VERSION,
        promote_first,
        promote_score,
        promote_weights,
        shape_similarity,
    )
    from nar_plugin.search.relations import load_thresholds

    nodes = {"linear|0,0,0,11,11": 48, "attention": 12, "layer_norm|0,0,0,11,11": 25, "gelu": 12, "add": 24}
    base = {"768x768": 48, "768x3072": 24, "v768": 100, "v3072": 12}

    def desc(**extra: int) -> dict:
        return {"fine": {"v": FINE_VERSION, "nodes": nodes, "params": 86_000_000, "shapes": {**base, **extra}}}

    vit, deit, query = desc(**{"197x768": 1}), desc(**{"197x768": 1, "v768": 102}), desc(**{"197x768": 1})
    assert shape_similarity(query, vit) == 1.0 > shape_similarity(query, deit)
    assert shape_similarity(query, {"fine": {"v": FINE_VERSION, "nodes": nodes}}) is None
    # the DeiT first in cosine order: without the weight the tie keeps it first, with it the ViT wins
    assert promote_score(query, deit) == promote_score(query, vit)
    assert promote_first([promote_score(query, h) for h in (deit, vit)]) == 0
    assert promote_first([promote_score(query, h, 0.05) for h in (deit, vit)]) == 1
    shipped = Path(__file__).resolve().parents[1] / "nar_plugin" / "weights" / "thresholds.json"
    raw = json.loads(shipped.read_text())
    assert load_thresholds().promote_shapes == raw.get("promote_shapes", 0.0) == promote_weights()[1]
    raw["promote_shapes"] = 0.1
    (tmp_path / "t.json").write_text(json.dumps(raw))
    assert promote_weights(tmp_path / "t.json")[1] == 0.1
    assert promote_weights(tmp_path / "missing.json") == (PROMOTE_MIN, 0.0)


def test_an_unrelated_hit_is_not_moved_above_related_ones() -> None:
    """The rerank's relation floor: a hit below ``related`` with the best node-label similarity
    (a 2-layer GPT-2 for a 2-layer BERT query) stays below a related first hit (the 4-layer
    BERT); when no hit is related, the best of the shortlist still goes first."""
    from nar_plugin.evaluation.fine_structure import promote_first

    fine, cosines = [0.62, 0.70, 0.68], [0.995, 0.90, 0.779]
    assert promote_first(fine, min_similarity=0.55) == 1
    assert promote_first([0.62, 0.50, 0.68], min_similarity=0.55) == 2  # no floor given
    assert promote_first([0.62, 0.50, 0.68], min_similarity=0.55, cosines=cosines, related=0.87) == 0
    assert promote_first(fine, min_similarity=0.55, cosines=cosines, related=0.87) == 1
    low = [0.80, 0.78, 0.70]  # nothing related: the floor does not apply
    assert promote_first([0.62, 0.50, 0.68], min_similarity=0.55, cosines=low, related=0.87) == 2
