"""One model, one graph hash: every export path gives the graph of the model itself.

The matrix: vision models (torchvision, timm) through fx, torch.export, a pt2 archive, the legacy
and dynamo ONNX exporters (with and without constant folding / the onnxscript optimiser) and
onnxruntime's graph optimiser; transformers models through their config, the module, a pt2
archive and the ONNX exporters. Each case asserts the path's ``graph_hash`` equals the
reference path's (fx for modules, the config for transformers). A representative subset runs by
default; the whole matrix is ``slow``. ``benchmarks/paths.py`` prints the same matrix as a table.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from fixtures.export_paths import (
    HF_MODELS,
    HF_PATHS,
    MODULE_PATHS,
    VISION,
    build_hf,
    build_vision,
    hf_graph,
    module_graph,
)

from nar_plugin.graph import ArchGraph

#: The default run: BatchNorm folding (resnet18, every path), Clip as ReLU6 and depthwise convs
#: (mobilenet_v2), x * sigmoid(x) and squeeze-excite (efficientnet_b0), attention and GELU
#: (a timm ViT, BERT), RMSNorm written by hand (Llama).
FAST_VISION = {
    "resnet18": MODULE_PATHS,
    "mobilenet_v2": ("onnx-legacy", "onnx-dynamo"),
    "efficientnet_b0": ("onnx-legacy",),
    "timm:vit_tiny_patch16_224": ("export", "pt2", "onnx-legacy", "onnx-dynamo"),
}
FAST_HF = {"bert": ("module", "pt2", "onnx-legacy", "onnx-dynamo"), "llama": ("onnx-legacy",)}


def _cases(models: Any, paths: tuple[str, ...], reference: str, fast: dict[str, tuple[str, ...]]) -> list[Any]:
    out = []
    for m in models:
        for p in paths:
            if p == reference:
                continue
            marks = [] if p in fast.get(m, ()) else [pytest.mark.slow]
            out.append(pytest.param(m, p, marks=marks, id=f"{m}-{p}"))
    return out


@functools.cache
def _vision(name: str) -> tuple[Any, Any, ArchGraph]:
    model, x = build_vision(name)
    from nar_plugin.extract import extract_graph

    return model, x, extract_graph(model, (x,), tracer="fx")


@functools.cache
def _hf(name: str) -> tuple[Any, Any, ArchGraph]:
    model, kw = build_hf(name)
    from fixtures.export_paths import hf_config

    from nar_plugin.extract import extract_graph

    return model, kw, extract_graph(hf_config(name))


def _explain(ref: ArchGraph, got: ArchGraph) -> str:
    from collections import Counter

    a = Counter(ref.label(i) for i in range(ref.num_nodes))
    b = Counter(got.label(i) for i in range(got.num_nodes))
    return f"only in reference: {dict(a - b)}; only in this path: {dict(b - a)}"


@pytest.mark.parametrize(("name", "path"), _cases(VISION, MODULE_PATHS, "fx", FAST_VISION))
def test_vision_path_gives_the_fx_hash(name: str, path: str, tmp_path: Path) -> None:
    if path.startswith("ort-"):
        pytest.importorskip("onnxruntime")
    model, x, ref = _vision(name)
    got = module_graph(path, model, x, tmp_path)
    assert got.graph_hash == ref.graph_hash, _explain(ref, got)


@pytest.mark.parametrize(("name", "path"), _cases(HF_MODELS, HF_PATHS, "config", FAST_HF))
def test_transformers_path_gives_the_config_hash(name: str, path: str, tmp_path: Path) -> None:
    if path.startswith("ort-"):
        pytest.importorskip("onnxruntime")
    model, kw, ref = _hf(name)
    got = hf_graph(path, name, model, kw, tmp_path)
    assert got.graph_hash == ref.graph_hash, _explain(ref, got)


def test_folded_graph_keeps_the_architecture(tmp_path: Path) -> None:
    """The canonical IR is the inference graph, not a lossy histogram: convs, widths and the
    residual wiring of resnet18 survive; only the BatchNorms folded into their convs go."""
    _, _, g = _vision("resnet18")
    h = g.op_histogram()
    assert h["conv"] == 20 and h["add"] == 8 and h["relu"] == 17 and "batch_norm" not in h
    assert g.num_nodes == 50


def test_check_duplicate_finds_the_onnx_export_of_an_indexed_module(tmp_path: Path) -> None:
    """The README's headline: the ONNX file users export (BatchNorm folded) is `identical`."""
    from fixtures.export_paths import _onnx

    import nar_plugin

    model, x, _ = _vision("resnet18")
    index = tmp_path / "index"
    nar_plugin.index_model(model, key="zoo:resnet18", index=index, example_inputs=(x,))
    for other in ("resnet50", "mobilenet_v2"):
        m, xo, _ = _vision(other)
        nar_plugin.index_model(m, key=f"zoo:{other}", index=index, example_inputs=(xo,))
    for variant in ("onnx-legacy", "onnx-dynamo"):
        path = _onnx(model, (x,), tmp_path / f"resnet18-{variant}.onnx", variant)
        report = nar_plugin.check_duplicate(path, index=index)
        # same graph; the weights of the export differ from the module's by the BatchNorm folding
        # (issue 17's fingerprints then say fine-tuned-from, not same-weights: docs/lineage.md)
        assert report.is_duplicate and report.relation in ("same-architecture", "fine-tuned-from"), (variant, report)
        assert report.best is not None and report.best.score > 0.999
        assert report.best is not None and report.best.key == "zoo:resnet18"
        top = nar_plugin.find_similar(path, k=3, index=index)
        assert top[0].key == "zoo:resnet18" and top[0].score > 0.999
