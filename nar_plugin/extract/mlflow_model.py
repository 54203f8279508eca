"""MLflow model directories (what ``log_model`` saved): read the graph from the stored files.

Order of preference: a pt2 archive (``data/model.pt2``: graph JSON, weights untouched), an ONNX
file (external data left on disk), a transformers ``config.json``. A pickle-only pytorch model is
refused unless the user opted in with ``NAR_TRUST_PICKLE=true``: unpickling runs arbitrary code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nar_plugin.config import NAR_TRUST_PICKLE
from nar_plugin.errors import CorruptArtifactError, PickleOnlyModelError, UnsupportedModelError
from nar_plugin.graph import ArchGraph

__all__ = ["read_mlmodel", "graph_from_mlflow_dir", "PickleOnlyModelError"]


def read_mlmodel(model_dir: str | Path) -> dict[str, Any]:
    """Parse ``MLmodel`` (YAML).

    Raises:
        CorruptArtifactError: missing or unparsable MLmodel file.
    """
    import yaml

    p = Path(model_dir)
    f = p if p.name == "MLmodel" else p / "MLmodel"
    try:
        data = yaml.safe_load(f.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CorruptArtifactError(f"cannot read MLmodel in {p}: {e}", str(f)) from e
    if not isinstance(data, dict) or "flavors" not in data:
        raise CorruptArtifactError(f"{f} is not an MLflow MLmodel file (no 'flavors')", str(f))
    return data


def graph_from_mlflow_dir(model_dir: str | Path) -> ArchGraph:
    """Extract the graph of a saved MLflow model directory.

    Raises:
        PickleOnlyModelError: pytorch model saved as pickle and ``NAR_TRUST_PICKLE`` is off.
        UnsupportedModelError: no flavor nar-plugin can read.
        CorruptArtifactError: a stored file does not parse.
    """
    d = Path(model_dir)
    if d.name == "MLmodel":
        d = d.parent
    mlmodel = read_mlmodel(d)
    flavors = mlmodel.get("flavors") or {}
    meta = {"source_kind": "mlflow", "flavors": sorted(flavors)}
    pt2 = sorted(d.glob("data/*.pt2")) + sorted(d.glob("*.pt2"))
    if pt2:
        from nar_plugin.extract.aten import graph_from_pt2

        return graph_from_pt2(pt2[0], meta)
    onnx_flavor = flavors.get("onnx")
    onnx_files = ([d / onnx_flavor["data"]] if isinstance(onnx_flavor, dict) and onnx_flavor.get("data") else []) + sorted(d.glob("*.onnx"))
    onnx_files = [f for f in onnx_files if f.is_file()]
    if onnx_files:
        from nar_plugin.extract.onnx import graph_from_onnx

        return graph_from_onnx(onnx_files[0], meta)
    configs = [c for c in sorted(d.rglob("config.json")) if "model_type" in c.read_text(errors="replace")[:100000]]
    if configs:
        from nar_plugin.extract.transformers import graph_from_hf_config

        return graph_from_hf_config(configs[0], meta)
    pickles = sorted(d.glob("data/*.pth")) + sorted(d.glob("data/model.pt"))
    if "pytorch" in flavors and pickles:
        if not NAR_TRUST_PICKLE.get():
            raise PickleOnlyModelError(
                f"{d} holds a pickled pytorch model ({pickles[0].name}); reading it would run "
                "arbitrary code. Log with the pt2 format, or set NAR_TRUST_PICKLE=true"
            )
        import torch

        from nar_plugin.extract.torch_module import graph_from_module

        module = torch.load(pickles[0], weights_only=False, map_location="meta")
        return graph_from_module(module, metadata=meta)
    raise UnsupportedModelError(
        f"{d}: flavors {sorted(flavors)} hold no pt2 archive, ONNX file or transformers config"
    )
