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
from nar_plugin.extract.limits import Budgets, bounded_call, check_size, confine
from nar_plugin.graph import ArchGraph

__all__ = ["read_mlmodel", "graph_from_mlflow_dir", "PickleOnlyModelError"]

#: How much of a ``config.json`` is read to tell a transformers config from any other JSON.
_CONFIG_HEAD = 100_000


def read_mlmodel(model_dir: str | Path) -> dict[str, Any]:
    """Parse ``MLmodel`` (YAML), its size checked first (``NAR_MAX_JSON_MB``).

    Raises:
        CorruptArtifactError: missing or unparsable MLmodel file, or ``flavors`` not a mapping.
        BudgetExceededError: the file is larger than ``NAR_MAX_JSON_MB``.
    """
    import yaml

    p = Path(model_dir)
    f = p if p.name == "MLmodel" else p / "MLmodel"
    limit = Budgets.from_env().max_json_bytes
    try:
        size = f.stat().st_size
        check_size(size, limit, "MLmodel file", "NAR_MAX_JSON_MB", f)
        with f.open("rb") as fh:
            text = fh.read(min(size, limit) + 1)
        check_size(len(text), limit, "MLmodel file", "NAR_MAX_JSON_MB", f)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptArtifactError(f"cannot read MLmodel in {p}: {first}", str(f)) from e
    if not isinstance(data, dict) or "flavors" not in data:
        raise CorruptArtifactError(f"{f} is not an MLflow MLmodel file (no 'flavors')", str(f))
    if not isinstance(data["flavors"], dict):
        raise CorruptArtifactError(f"{f}: 'flavors' is a {type(data['flavors']).__name__}, expected a mapping", str(f))
    return data


def _is_hf_config(path: Path) -> bool:
    with path.open("rb") as f:
        return b'"model_type"' in f.read(_CONFIG_HEAD)


@bounded_call
def graph_from_mlflow_dir(model_dir: str | Path) -> ArchGraph:
    """Extract the graph of a saved MLflow model directory.

    Every file read is resolved and must lie inside the directory: an ``onnx.data`` of
    ``../../x.onnx``, an absolute path or a symlink leading out is refused, not followed. The
    whole extraction shares one wall-time budget (``NAR_EXTRACT_TIMEOUT``).

    Raises:
        PickleOnlyModelError: pytorch model saved as pickle and ``NAR_TRUST_PICKLE`` is off.
        UnsupportedModelError: no flavor nar-plugin can read.
        CorruptArtifactError: a stored file does not parse.
        UnsafePathError: the MLmodel (or a link) names a file outside the directory.
        BudgetExceededError: a stored file is over its size budget.
    """
    d = Path(model_dir)
    if d.name == "MLmodel":
        d = d.parent
    mlmodel = read_mlmodel(d)
    flavors = mlmodel["flavors"]
    meta = {"source_kind": "mlflow", "flavors": sorted(str(k) for k in flavors)}
    pt2 = sorted(d.glob("data/*.pt2")) + sorted(d.glob("*.pt2"))
    if pt2:
        from nar_plugin.extract.aten import graph_from_pt2

        return graph_from_pt2(confine(pt2[0], d, "pt2 archive"), meta)
    onnx_flavor = flavors.get("onnx")
    named = onnx_flavor.get("data") if isinstance(onnx_flavor, dict) else None
    if named is not None and not isinstance(named, str):
        raise CorruptArtifactError(f"{d}/MLmodel: onnx.data is a {type(named).__name__}, expected a file name",
                                   str(d / "MLmodel"))
    onnx_files = [confine(named, d, "MLmodel onnx.data")] if named else []
    onnx_files += [confine(f, d, "ONNX file") for f in sorted(d.glob("*.onnx"))]
    onnx_files = [f for f in onnx_files if f.is_file()]
    if onnx_files:
        from nar_plugin.extract.onnx import graph_from_onnx

        return graph_from_onnx(onnx_files[0], meta)
    configs = [confine(c, d, "config.json") for c in sorted(d.rglob("config.json"))]
    configs = [c for c in configs if c.is_file() and _is_hf_config(c)]
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

        module = torch.load(confine(pickles[0], d, "pickled model"), weights_only=False, map_location="meta")
        return graph_from_module(module, metadata=meta)
    raise UnsupportedModelError(
        f"{d}: flavors {meta['flavors']} hold no pt2 archive, ONNX file or transformers config"
    )
