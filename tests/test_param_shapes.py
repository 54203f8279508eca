"""Parameter shapes (issue 16): one fingerprint for one network however its library writes it,
and the ``near-duplicate`` relation they decide. Real graphs of the committed cross-library
benchmark, real torch modules, real pt2 and ONNX files; no encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nar_plugin.evaluation.fine_structure import fine_signature, shapes_near, structure_check
from nar_plugin.graph.params import shape_difference, shape_tokens
from nar_plugin.search.relations import Thresholds, near_duplicate_evidence, relation_for

KEYS = ("timm:resnet50", "torchvision:resnet50", "transformers:resnet/default", "timm:resnet50d",
        "torchvision:vgg16", "torchvision:vgg16_bn", "pytorchcv:vgg16", "timm:vgg16_bn",
        "timm:vit_base_patch16_224", "timm:vit_base_patch32_224", "transformers:resnet/101")


@pytest.fixture(scope="module")
def sig() -> dict:
    from nar_plugin.corpus.crosslib import load_cross_library

    return {it.key: {"fine": fine_signature(it.graph)} for it in load_cross_library() if it.key in KEYS}


def test_canonical_tokens_make_coding_styles_one_multiset() -> None:
    c = 64
    fused = shape_tokens([(3 * c, c), (3 * c,)])  # one q/k/v projection and its bias
    split = shape_tokens([(c, c)] * 3 + [(c,)] * 3)
    assert fused == split == {"64x64": 3, "v64": 3}
    assert shape_tokens([(3 * c,)]) == {"v192": 1}  # a vector alone is not split
    assert shape_tokens([(256, 64, 1, 1)]) == shape_tokens([(256, 64)]) == shape_tokens([(64, 256)])  # 1x1 conv, transposed
    assert shape_tokens([(1, 1, 768)]) == shape_tokens([(768,)]) == {"v768": 1}  # a class token
    assert shape_tokens([(), (1,), None]) == {}  # scalars carry nothing
    assert shape_tokens([(64, 3, 7, 7)]) != shape_tokens([(32, 3, 3, 3)])  # another stem
    assert shape_tokens([(768, 3, 16, 16)]) == shape_tokens([(768, 768)])  # patch embedding: conv or linear
    # one side holds everything of the other plus a classifier (weight + bias)
    assert shape_difference(shape_tokens([(64, 64), (10, 64), (10,)]), shape_tokens([(64, 64)])) == ((0, 1), (0, 1))
    assert shape_difference({"v8": 2}, {"v8": 1, "v9": 1}, matrices_only=True) == ((0, 0), (0, 0))


def test_fused_and_split_attention_modules_have_one_fingerprint() -> None:
    """nn.MultiheadAttention (one in_proj) and a hand-written block with q, k, v Linear layers."""
    import torch
    from torch import nn

    class Split(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1) @ self.v(x))

    fused = shape_tokens(p.shape for p in nn.MultiheadAttention(96, 4).parameters())
    split = shape_tokens(p.shape for p in Split(96).parameters())
    assert fused == split == {"96x96": 4, "v96": 4}  # in_proj [288, 96] + [288] = q, k, v
    wider = shape_tokens(p.shape for p in nn.MultiheadAttention(128, 4).parameters())
    assert shape_difference(fused, wider) == ((4, 4), (4, 4))


def test_the_same_network_with_another_head_is_near_its_variants_are_not(sig: dict) -> None:
    r50 = sig["torchvision:resnet50"]
    assert shapes_near(r50, sig["timm:resnet50"]) is True
    assert shapes_near(r50, sig["transformers:resnet/default"]) is True  # a backbone without the classifier
    assert shapes_near(r50, sig["timm:resnet50d"]) is False  # deep stem
    assert shapes_near(r50, sig["transformers:resnet/101"]) is False
    assert shapes_near(sig["torchvision:vgg16"], sig["pytorchcv:vgg16"]) is True
    assert shapes_near(sig["torchvision:vgg16_bn"], sig["timm:vgg16_bn"]) is True
    # BatchNorm is folded in the graph (one node-label multiset), not in the parameters
    assert sig["torchvision:vgg16"]["fine"]["nodes"] == sig["torchvision:vgg16_bn"]["fine"]["nodes"]
    assert shapes_near(sig["torchvision:vgg16"], sig["torchvision:vgg16_bn"]) is False
    assert shapes_near(sig["timm:vit_base_patch16_224"], sig["timm:vit_base_patch32_224"]) is False
    assert structure_check(r50, sig["timm:resnet50d"]) == (False, "shapes")
    # descriptions without shapes (indexed before): the fine similarity decides, as before
    old = {"fine": {k: v for k, v in r50["fine"].items() if k != "shapes"}}
    assert shapes_near(old, sig["timm:resnet50"]) is None
    assert structure_check(old, sig["timm:resnet50"]) == (True, "fine")


def test_relation_floor_depends_on_the_evidence(sig: dict) -> None:
    th = Thresholds(near_duplicate=0.97, related=0.8, near_duplicate_shapes=0.85)
    r50, tf50 = sig["torchvision:resnet50"], sig["transformers:resnet/default"]
    near, floor = near_duplicate_evidence(r50, tf50, th)
    assert (near, floor) == (True, 0.85)
    assert relation_for(0.9, False, th, near=near, near_floor=floor) == "near-duplicate"
    assert relation_for(0.84, False, th, near=near, near_floor=floor) == "related"
    near, floor = near_duplicate_evidence(r50, sig["timm:resnet50d"], th)
    assert relation_for(0.999, False, th, near=near, near_floor=floor) == "related"
    # fine-only evidence needs the higher cosine
    old = {"fine": {k: v for k, v in r50["fine"].items() if k != "shapes"}}
    near, floor = near_duplicate_evidence(old, sig["timm:resnet50"], th)
    assert floor == 0.97 and relation_for(0.9, False, th, near=near, near_floor=floor) == "related"
    assert Thresholds(related=0.8).shapes_floor == 0.8  # not calibrated: the related threshold


def test_every_extraction_path_records_the_parameter_shapes(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from nar_plugin.extract.aten import graph_from_pt2
    from nar_plugin.extract.onnx import graph_from_onnx
    from nar_plugin.extract.torch_module import graph_from_module

    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 10))
    model.eval()
    x = torch.zeros(1, 3, 8, 8)
    want = shape_tokens(p.shape for p in model.parameters())
    assert graph_from_module(model, x).metadata["param_shapes"] == want  # fx
    assert graph_from_module(model, x, tracer="export").metadata["param_shapes"] == want
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    assert graph_from_pt2(tmp_path / "m.pt2").metadata["param_shapes"] == want
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    g = graph_from_onnx(tmp_path / "m.onnx")
    assert g.metadata["param_vectors_folded"] is True
    assert {t: n for t, n in g.metadata["param_shapes"].items() if not t.startswith("v")} == \
        {t: n for t, n in want.items() if not t.startswith("v")}  # the matrices survive folding
    onnx_sig, torch_sig = {"fine": fine_signature(g)}, {"fine": fine_signature(graph_from_module(model, x))}
    assert onnx_sig["fine"]["folded"] is True and shapes_near(onnx_sig, torch_sig) is True


def test_shapes_floor_is_chosen_for_precision_then_recall() -> None:
    from nar_plugin.evaluation.calibrate import _choose_shapes_floor

    # shapes agree on 5 pairs: 3 same-network (cosines 0.99, 0.95, 0.9), 2 variants (0.85, 0.83)
    pairs = {"scores": np.array([0.99, 0.95, 0.9, 0.85, 0.83, 0.99]),
             "shapes": np.array([True, True, True, True, True, False]),
             "fine": np.array([True, True, True, False, False, True])}
    t, rule = _choose_shapes_floor(pairs, 0.8, 0.9, 0.5)
    assert t == 0.9 and rule.startswith("most recall")  # 3 of 4 same-network pairs, no variant
    t, rule = _choose_shapes_floor(pairs, 0.8, 0.9, 0.9)  # recall 0.9 unreachable: best F1
    assert rule == "best F1"


def test_mlflow_description_tag_stays_parsable_when_large() -> None:
    """MLflow cuts tag values at 8,000 characters; the description sheds its largest optional
    parts instead of becoming unparsable JSON."""
    from nar_plugin.integrations.mlflow.tags import MAX_DESCRIPTION_CHARS, decode_description, encode_description

    shapes = {f"{i}x{i + 1}": 1 for i in range(2000)}  # ~24 KB of parameter shapes
    desc = {"num_nodes": 5, "ops": {"conv": 3}, "motifs": {"m": 1},
            "fine": {"v": 1, "nodes": {"conv|3,1,0,3,7": 3}, "params": 10, "shapes": shapes}}
    small = encode_description({**desc, "fine": {**desc["fine"], "shapes": {"3x4": 1}}})
    assert decode_description(small)["fine"]["shapes"] == {"3x4": 1}  # kept when it fits
    text = encode_description(desc)
    assert len(text) <= MAX_DESCRIPTION_CHARS
    back = decode_description(text)
    assert back["fine"] == {"v": 1, "nodes": {"conv|3,1,0,3,7": 3}, "params": 10} and back["ops"] == {"conv": 3}


def test_explanation_names_the_parameters_one_side_lacks(sig: dict) -> None:
    from nar_plugin.search.results import explain

    base = {"ops": {"conv": 1}, "motifs": {}}
    head = explain({**base, **sig["torchvision:resnet50"]}, {**base, **sig["transformers:resnet/default"]}, False)
    assert head.param_diff == ({"2048x1000": 1, "v1000": 1}, {})
    assert str(head).endswith("parameters only in the query: 1 weight matrix (2048x1000), 1 vector; only in the match: nothing")
    bn = explain({**base, **sig["torchvision:vgg16"]}, {**base, **sig["torchvision:vgg16_bn"]}, False)
    assert str(bn).endswith("only in the match: 26 vectors")
    assert explain(base, base, False).param_diff is None  # descriptions without shapes say nothing


def test_the_same_parameters_go_first_in_the_rerank() -> None:
    """torchvision's swin_t: timm's swin_base has the closer cosine, neither reaches the fine
    threshold by its node labels, swin_tiny has the same parameters: it is moved first."""
    from nar_plugin.corpus.crosslib import load_cross_library
    from nar_plugin.evaluation.fine_structure import fine_similarity, promote_first, promote_score

    keys = ("torchvision:swin_t", "timm:swin_base_patch4_window7_224", "timm:swin_tiny_patch4_window7_224")
    s = {it.key: {"fine": fine_signature(it.graph)} for it in load_cross_library() if it.key in keys}
    q, hits = s[keys[0]], [s[keys[1]], s[keys[2]]]  # in cosine order
    assert all(fine_similarity(q, h) < 0.6 for h in hits)
    assert promote_first([fine_similarity(q, h) for h in hits], min_similarity=0.6) is None
    assert promote_first([promote_score(q, h) for h in hits], min_similarity=0.6) == 1
    assert promote_score(q, {"fine": {}}) is None


def test_explanation_summarises_unrelated_parameters(sig: dict) -> None:
    from nar_plugin.search.results import explain

    base = {"ops": {"conv": 1}, "motifs": {}}
    far = explain({**base, **sig["torchvision:resnet50"]}, {**base, **sig["timm:vit_base_patch16_224"]}, False)
    assert str(far).endswith("weight matrices unmatched") and "parameters only in" not in str(far)
