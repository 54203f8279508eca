"""Tests for nar_plugin.model.inference: shipped weights, determinism, unit norm, version checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nar_plugin.errors import CorruptArtifactError, GraphTooLargeError
from nar_plugin.graph import ArchGraph, GraphBuilder, NodeAttrs
from nar_plugin.graph import width_bucket as wb
from nar_plugin.model.inference import (
    embed,
    embed_graph,
    embed_many,
    encoder_version,
    load_encoder,
)
from nar_plugin.model.weights import WEIGHTS_DIR


def _mlp(depth: int, width: int) -> ArchGraph:
    b = GraphBuilder()
    x = b.add_input()
    for _ in range(depth):
        x = b.add("relu", [b.add("linear", [x], NodeAttrs(width_in=wb(width), width_out=wb(width)))])
    b.add_output([x])
    return b.build()


def test_shipped_weights_load_offline_in_a_fresh_process() -> None:
    code = ("import nar_plugin.model.inference as e, nar_plugin.model.weights as w; enc = e.load_encoder(); "
            "print(enc.version, enc.path.parent == w.WEIGHTS_DIR)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NO_PROXY": "*", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    version, same_dir = out.stdout.split()
    assert version.startswith("nar-v") and same_dir == "True"
    assert (WEIGHTS_DIR / "nar-encoder.pt").stat().st_size < 5_000_000


def test_embedding_shape_norm_determinism() -> None:
    g = _mlp(6, 256)
    a, b = embed_graph(g), embed_graph(ArchGraph.from_json(g.to_json()))
    assert a.shape == (128,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert np.array_equal(a, b)
    assert load_encoder() is load_encoder()  # cached
    assert encoder_version() == load_encoder().version


def test_embed_many_matches_single_and_keeps_order() -> None:
    graphs = [_mlp(d, w) for d, w in ((2, 64), (8, 512), (4, 128), (2, 64))]
    many = embed_many(graphs, batch_size=3)
    assert many.shape == (4, 128) and many.dtype == np.float32
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    single = np.stack([embed_graph(g) for g in graphs])
    assert np.allclose(many, single, atol=1e-5)
    assert np.allclose(many[0], many[3], atol=1e-6)
    assert embed_many([]).shape == (0, 128)


def test_same_architecture_different_weights_same_embedding() -> None:
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m1 = tv.models.resnet18()
    torch.manual_seed(1)
    m2 = tv.models.resnet18()
    x = (torch.randn(1, 3, 64, 64),)
    e1, e2 = embed(m1, example_inputs=x), embed(m2, example_inputs=x)
    assert np.array_equal(e1, e2)
    other = embed(tv.models.mobilenet_v3_small(), example_inputs=x)
    assert float(e1 @ other) < 0.9999


def _copy_weights(tmp_path) -> tuple:
    for name in ("nar-encoder.pt", "nar-encoder.json", "nar-sketch-weights.json"):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path / "nar-encoder.pt", tmp_path / "nar-encoder.json"


@pytest.mark.parametrize("field,value", [("vocab_version", 999), ("motif_version", 999), ("format_version", 999)])
def test_version_mismatch_raises(tmp_path, field, value) -> None:
    _, jpath = _copy_weights(tmp_path)
    meta = json.loads(jpath.read_text())
    meta[field] = value
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CorruptArtifactError, match="999"):
        load_encoder(tmp_path, reload=True)


def test_mismatched_or_missing_files_raise(tmp_path) -> None:
    wpath, _ = _copy_weights(tmp_path)
    assert load_encoder(tmp_path).version == load_encoder().version
    wpath.write_bytes(wpath.read_bytes() + b"\0")
    with pytest.raises(CorruptArtifactError, match="SHA-256"):
        load_encoder(tmp_path, reload=True)
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "nowhere")


def test_graph_too_large(monkeypatch) -> None:
    monkeypatch.setenv("NAR_MAX_NODES", "5")
    with pytest.raises(GraphTooLargeError):
        embed_graph(_mlp(6, 32))


def test_inference_and_weights_modules_import_without_torch() -> None:
    code = ("import sys, nar_plugin.model.inference, nar_plugin.model.weights; "
            "print([m for m in ('torch', 'torch_geometric') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_save_weights_round_trip_drops_the_head(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from nar_plugin.model.encoder import EncoderConfig, NAREncoder
    from nar_plugin.model.weights import load_weights, save_weights, sha256_hex

    torch.manual_seed(0)
    model = NAREncoder(EncoderConfig(hidden=8, num_classes=3, node_layers=1)).eval()
    wpath, jpath, version = save_weights(model, tmp_path, {"seed": 7})
    meta = json.loads(jpath.read_text())
    assert meta["weights_sha256"] == sha256_hex(wpath.read_bytes()) and meta["seed"] == 7
    assert meta["config"]["num_classes"] == 0 and version == meta["encoder_version"]
    loaded = load_encoder(tmp_path, reload=True)
    assert loaded.version == version and loaded.model.classifier is None
    assert not any(k.startswith("classifier.") for k in torch.load(wpath, weights_only=True))
    graphs = [_mlp(3, 64), _mlp(5, 256)]
    from nar_plugin.model.features import collate, prepare

    with torch.no_grad():
        direct = model(collate([prepare(g) for g in graphs])).numpy()
    assert np.allclose(embed_many(graphs, encoder=loaded), direct, atol=1e-6)
    # saving the same parameters again gives the same bytes (no temp-file names inside)
    assert save_weights(model, tmp_path / "again", {"seed": 7})[2] == version
    # metadata that does not fit the state dict, or records another version, is refused
    meta["config"]["hidden"] = 16
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CorruptArtifactError, match="do not fit"):
        load_weights(wpath, jpath)
    meta["config"]["hidden"] = 8
    meta["encoder_version"] = "nar-v0-other"
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CorruptArtifactError, match="records encoder version"):
        load_weights(wpath, jpath)
    jpath.write_text("{not json")
    with pytest.raises(CorruptArtifactError):
        load_weights(wpath, jpath)
