"""Weight fingerprints: the statistics, the readers (module, pt2, safetensors, ONNX), comparison and
direction on real fine-tunes, storage beside the index, and the architecture-level relations."""

from __future__ import annotations

import copy
import gzip
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.training import sgd_train
from torch import nn

from nar_plugin.errors import (
    CorruptArtifactError,
    KeyNotFoundError,
    UnsupportedModelError,
)
from nar_plugin.lineage import (
    WeightFingerprint,
    compare,
    fingerprint_file,
    fingerprint_module,
    reconstruct_tree,
    weight_relation,
)
from nar_plugin.lineage.fingerprint import fingerprint_tensors
from nar_plugin.lineage.sketch import CHUNK, TensorSketcher


def _cnn(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(32, 10))


def _train(model: nn.Module, steps: int, seed: int, lr: float = 0.05, params: list | None = None) -> nn.Module:
    return sgd_train(model, steps, seed, size=8, lr=lr, params=params)


@pytest.fixture(scope="module")
def family() -> dict[str, nn.Module]:
    base = _train(_cnn(0), 120, seed=1)
    child = _train(copy.deepcopy(base), 200, seed=2, lr=0.01)
    partial = copy.deepcopy(base)  # only the head is trained: the rest stays byte-identical
    _train(partial, 200, seed=3, lr=0.01, params=list(partial[7].parameters()))
    return {"base": base, "child": child, "partial": partial, "stranger": _train(_cnn(5), 120, seed=1)}


# ------------------------------------------------------------------ statistics
def test_sketch_distance_estimates_the_true_distance() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300_000).astype(np.float32)
    y = x + 0.3 * rng.standard_normal(x.size).astype(np.float32)
    sx, sy = TensorSketcher("x", "float32", (x.size,)), TensorSketcher("y", "float32", (y.size,))
    for i in range(0, x.size, CHUNK):
        sx.update(x[i:i + CHUNK].tobytes())
        sy.update(y[i:i + CHUNK].tobytes())
    a, b = sx.finish(), sy.finish()
    est = float(np.sum((a.sketch.astype(np.float64) - b.sketch) ** 2))
    true = float(np.sum((x.astype(np.float64) - y) ** 2))
    assert 0.5 < est / true < 1.6  # one tensor, 64 buckets: ~18 % standard error
    assert abs(a.std - x.std()) < 1e-4 and abs(a.kurtosis) < 0.05  # Gaussian: excess kurtosis 0
    u = rng.uniform(-1, 1, 100_000)
    su = TensorSketcher("u", "float64", (u.size,))
    su.update(u.tobytes())
    assert abs(su.finish().kurtosis + 1.2) < 0.02  # uniform: -1.2


def test_stored_form_round_trips_and_is_checked(family: dict[str, nn.Module]) -> None:
    fp = fingerprint_module(family["base"])
    data = fp.to_bytes()
    assert data == fingerprint_module(family["base"]).to_bytes()  # deterministic: its digest identifies it
    back = WeightFingerprint.from_bytes(data)
    assert back.weights_hash == fp.weights_hash and compare(fp, back).same_weights
    doc = json.loads(gzip.decompress(data))
    with pytest.raises(CorruptArtifactError, match="expected version"):
        WeightFingerprint.from_bytes(gzip.compress(json.dumps({**doc, "version": 99}).encode()))
    doc["tensors"][0][3] = "0" * 64  # a tensor hash that does not add up to the recorded model hash
    with pytest.raises(CorruptArtifactError, match="weights hash"):
        WeightFingerprint.from_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(CorruptArtifactError):
        WeightFingerprint.from_bytes(b"not gzip")


# ------------------------------------------------------------------ readers
def test_module_pt2_safetensors_agree_and_onnx_reads(family: dict[str, nn.Module], tmp_path: Path) -> None:
    save_file = pytest.importorskip("safetensors.torch").save_file  # the writer only: our reader needs no package

    model = family["base"]
    fp = fingerprint_module(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert fingerprint_file(tmp_path / "m.safetensors").weights_hash == fp.weights_hash
    ep = torch.export.export(model, (torch.randn(1, 3, 8, 8),), strict=False)
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    assert fingerprint_file(tmp_path / "m.pt2").weights_hash == fp.weights_hash
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False)
    onnx_fp = fingerprint_file(tmp_path / "m.onnx")  # BatchNorm folded by the exporter: other values
    assert len(onnx_fp) >= 3 and onnx_fp.weights_hash != fp.weights_hash
    (tmp_path / "m.pt").write_bytes(b"pickle")
    with pytest.raises(UnsupportedModelError, match="pickled checkpoints are never read"):
        fingerprint_file(tmp_path / "m.pt")
    with pytest.raises(UnsupportedModelError, match="meta device"):
        fingerprint_module(nn.Linear(4, 4, device="meta"))


def test_streaming_memory_is_bounded(tmp_path: Path) -> None:
    """A 64 MiB tensor file is fingerprinted in well under its size of extra memory."""
    save_file = pytest.importorskip("safetensors.numpy").save_file

    save_file({"w": np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)},
              str(tmp_path / "big.safetensors"))
    tracemalloc.start()
    try:
        fp = fingerprint_file(tmp_path / "big.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fp.tensors[0].shape == (4096, 4096)
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB tensor"


# ------------------------------------------------------------------ comparison on real fine-tunes
def test_fine_tune_vs_stranger_and_direction(family: dict[str, nn.Module]) -> None:
    fps = {k: fingerprint_module(m) for k, m in family.items()}
    c = compare(fps["base"], fps["child"])
    assert weight_relation(c) == "fine-tuned-from" and c.similarity > 0.9, c
    assert c.direction in ("a->b", None), c  # never the wrong way; None: too small an update to tell
    assert compare(fps["child"], fps["base"]).direction in ("b->a", None)
    s = compare(fps["base"], fps["stranger"])
    assert weight_relation(s) is None and abs(s.similarity) < 0.5, s
    p = compare(fps["base"], fps["partial"])
    assert weight_relation(p) == "fine-tuned-from" and p.changed < 0.2 and p.direction in ("a->b", None), p
    assert weight_relation(compare(fps["base"], fingerprint_module(copy.deepcopy(family["base"])))) == "same-weights"
    # the tree: a parent is closer than a sibling; ties in direction go to the older model
    order = {"base": 0, "child": 1, "partial": 2, "stranger": 3}
    edges = {(e.parent, e.child) for e in reconstruct_tree(fps, order=order)}
    assert edges == {("base", "child"), ("base", "partial")}
    reverse = {(e.parent, e.child) for e in reconstruct_tree(fps, order={k: -v for k, v in order.items()})}
    assert {frozenset(e) for e in reverse} == {frozenset(e) for e in edges}  # the same undirected tree


def test_step_counters_give_the_direction_of_a_tiny_update(family: dict[str, nn.Module]) -> None:
    """BatchNorm's num_batches_tracked counts train-mode steps: the direction of an update far too
    small for kurtosis, and the orientation of a tree whatever the tie-break order."""
    base = family["base"]
    tiny = _train(copy.deepcopy(base), 3, seed=7, lr=1e-5)
    fb, ft = fingerprint_module(base), fingerprint_module(tiny)
    c = compare(fb, ft)
    assert weight_relation(c) == "fine-tuned-from" and c.similarity > 0.999, c
    assert (c.direction, c.evidence, c.steps_delta) == ("a->b", "counters", 3.0), c
    assert "BatchNorm step counters rise a -> b (3 steps)" in c.explain()
    back = compare(ft, fb)
    assert (back.direction, back.evidence, back.steps_delta) == ("b->a", "counters", -3.0), back
    # BatchNorm frozen (its counter left as the parent's): kurtosis alone, too small a change to tell
    frozen = copy.deepcopy(tiny)
    frozen[1].num_batches_tracked.copy_(base[1].num_batches_tracked)
    f = compare(fb, fingerprint_module(frozen))
    assert weight_relation(f) == "fine-tuned-from" and f.evidence is None and f.direction is None, f
    # counters that disagree say nothing
    two = nn.Sequential(*copy.deepcopy(base)[:2], nn.BatchNorm2d(16))
    other = copy.deepcopy(two)
    with torch.no_grad():
        other[1].num_batches_tracked += 5
        other[2].num_batches_tracked -= 5
        other[0].weight.mul_(1.0001)
    m = compare(fingerprint_module(two), fingerprint_module(other))
    assert m.evidence is None and m.direction is None, m
    # a tree of three generations is oriented by the counters, whatever order breaks ties
    grand = _train(copy.deepcopy(tiny), 2, seed=8, lr=1e-5)
    fps = {"grand": fingerprint_module(grand), "tiny": ft, "base": fb}
    for order in ({"grand": 0, "tiny": 1, "base": 2}, {"base": 0, "tiny": 1, "grand": 2}):
        edges = reconstruct_tree(fps, order=order)
        assert {(e.parent, e.child) for e in edges} == {("base", "tiny"), ("tiny", "grand")}, edges
        assert all(e.directed for e in edges)


# ------------------------------------------------------------------ the index and search
def test_index_stores_fingerprints_and_finds_relatives(family: dict[str, nn.Module], tmp_path: Path) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.index.weights import keys_with_weights, weights_of
    from nar_plugin.search.weights import (
        fingerprint_of,
        lineage,
        store_fingerprint,
        weight_links,
    )

    idx = EmbeddingIndex(tmp_path / "idx", encoder_version="test-enc")
    vec = np.ones(128, dtype=np.float32)
    fps = {k: fingerprint_module(m) for k, m in family.items()}
    for k in ("base", "child", "partial", "stranger"):
        idx.add(f"file:{k}", vec, graph_hash="H")
        store_fingerprint(idx, f"file:{k}", fps[k])
    idx.add("file:copy", vec, graph_hash="H")
    store_fingerprint(idx, "file:copy", fps["base"])
    assert keys_with_weights(idx, fps["base"].weights_hash) == ["file:base", "file:copy"]
    assert fingerprint_of(idx, "file:child").weights_hash == fps["child"].weights_hash
    links = weight_links(idx, fps["child"], "H", exclude=("file:child",))
    assert {k: (v.relation, v.lineage) for k, v in links.items()} == {
        "file:base": ("fine-tuned-from", "parent"), "file:copy": ("fine-tuned-from", "parent"),
        "file:partial": ("fine-tuned-from", "relative")}  # a sibling: same tree, not adjacent
    report = lineage(idx, "file:base")
    assert report.copies == ["file:copy"] and not report.parents
    assert {k for k, _ in report.children} == {"file:child", "file:partial"}
    assert lineage(idx, "file:child").parents[0][0] in ("file:base", "file:copy")
    idx.remove("file:copy")  # the trigger drops its link
    assert weights_of(idx, "file:copy") is None
    with pytest.raises(KeyNotFoundError, match="no weight fingerprint"):
        lineage(idx, "file:nothing")


def test_find_similar_ranks_weight_relatives_first(family: dict[str, nn.Module], tmp_path: Path) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.search.api import check_duplicate, find_similar
    from nar_plugin.search.relations import Thresholds
    from nar_plugin.search.weights import store_fingerprint

    th = Thresholds(0.95, 0.8)
    idx = EmbeddingIndex(tmp_path / "idx", encoder_version="test-enc")
    rng = np.random.default_rng(0)
    base_vec = rng.standard_normal(128).astype(np.float32)
    for i in range(30):  # many same-architecture retrains crowd the k-NN
        idx.add(f"file:retrain{i}", base_vec, graph_hash="H")
    for k in ("base", "child"):
        idx.add(f"file:{k}", base_vec, graph_hash="H")
        store_fingerprint(idx, f"file:{k}", fingerprint_module(family[k]))
    got = find_similar("file:child", k=3, index=idx, thresholds=th)
    assert (got[0].key, got[0].relation, got[0].lineage) == ("file:base", "fine-tuned-from", "parent")
    assert "weight similarity" in got[0].why() and got[1].relation == "same-architecture"
    assert [m.key for m in find_similar("file:child", relation="fine-tuned-from", index=idx, thresholds=th)] == ["file:base"]
    report = check_duplicate("file:child", index=idx, thresholds=th)
    assert report.best is not None and report.best.key == "file:base" and report.is_duplicate


def test_near_duplicate_needs_a_nearly_equal_graph() -> None:
    """A head swap is a near-duplicate; a 6- vs 12-layer ViT only related, whatever the cosine."""
    import timm

    from nar_plugin.extract import extract_graph
    from nar_plugin.search.relations import Thresholds, relation_for, structurally_near
    from nar_plugin.search.results import describe_graph

    def desc(name: str, **kw: object) -> dict:
        return describe_graph(extract_graph(timm.create_model(name, pretrained=False, **kw).to("meta")))

    r18, r18_head = desc("resnet18"), desc("resnet18", num_classes=10)
    vit12, vit6 = desc("deit_tiny_patch16_224"), desc("deit_tiny_patch16_224", depth=6)
    assert structurally_near(r18, r18_head) is True
    assert structurally_near(vit12, vit6) is False
    th = Thresholds(0.95, 0.8)
    assert relation_for(1.0, False, th, near=structurally_near(vit12, vit6)) == "related"
    assert relation_for(0.99, False, th, near=structurally_near(r18, r18_head)) == "near-duplicate"


def test_tensor_reader_blocks_must_be_whole(tmp_path: Path) -> None:
    fp = fingerprint_tensors([("t", "float32", (3,), [np.arange(3, dtype="<f4").tobytes()])])
    assert fp.tensors[0].mean == pytest.approx(1.0) and len(fp.weights_hash) == 64
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(CorruptArtifactError, match="not a safetensors file"):
        fingerprint_file(tmp_path / "bad.safetensors")


def test_nar_lineage_command(family: dict[str, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``nar lineage`` on models indexed from memory (``index_model`` fingerprints a module)."""
    from nar_plugin.cli.main import main
    from nar_plugin.search.api import index_model

    idx = str(tmp_path / "idx")
    for name in ("base", "child", "stranger"):  # indexed oldest first
        index_model(family[name], key=f"file:{name}", index=idx, example_inputs=(torch.randn(1, 3, 8, 8),))
    assert main(["lineage", "file:child", "--index", idx, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["key"] for p in out["parents"]] == ["file:base"] and out["children"] == []
    assert main(["lineage", "file:base", "--index", idx]) == 0
    assert "parent of file:child" in capsys.readouterr().out
    assert main(["lineage", "file:nothing", "--index", idx]) == 3  # not found
