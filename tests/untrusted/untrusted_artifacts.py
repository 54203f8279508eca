"""Hostile and honest artifacts for the untrusted-input tests, built on the fly (small files)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any


def write_zip_member(path: Path, member: str, size_mb: int, fill: bytes = b" ") -> Path:
    """A deflated zip whose one member inflates to ``size_mb`` MB (a 400 MB member is ~400 KB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open(member, "w", force_zip64=True) as f:
        chunk = fill * (1 << 20)
        for _ in range(size_mb):
            f.write(chunk)
    return path


def write_pt2(path: Path, model_json: Any) -> Path:
    """A pt2-shaped archive holding ``model_json`` (a dict, or raw text/bytes) as models/model.json."""
    raw = model_json if isinstance(model_json, (bytes, str)) else json.dumps(model_json)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/models/model.json", raw)
    return path


def onnx_chain(num_layers: int, width: int = 8) -> Any:
    """An honest ONNX MLP: ``num_layers`` x (Gemm + Relu), 2 x num_layers nodes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "x"
    w = numpy_helper.from_array(np.zeros((width, width), dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.zeros((width,), dtype=np.float32), "b")
    inits += [w, bias]
    for i in range(num_layers):
        nodes.append(helper.make_node("Gemm", [prev, "w", "b"], [f"g{i}"], transB=1))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"]))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_onnx(path: Path, model: Any) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def write_mlmodel(folder: Path, flavors: Any) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(yaml.safe_dump({"artifact_path": "model", "flavors": flavors}))
    return folder
