"""``extract_graph``: any model source -> :class:`~nar_plugin.graph.ArchGraph`.

One file per source kind; this module only dispatches. Nothing here materialises weights: modules
are traced on the meta device (or with fake weights), archives and ONNX files are read for their
graph only, configs are instantiated on meta.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from nar_plugin.errors import UnsupportedModelError
from nar_plugin.extract.kinds import directory_kind
from nar_plugin.graph import ArchGraph
from nar_plugin.utils.deps import is_available

__all__ = ["extract_graph", "source_kind", "TORCH_LOCK"]

#: Serialises tracing within a process: torch.fx patches ``nn.Module.__call__`` globally while it
#: traces and torch.export is not thread-safe, so concurrent threads (webhook receivers, bulk HF
#: indexing, MLflow hooks in threads) take turns. Reading stored graphs needs no lock.
TORCH_LOCK = threading.RLock()

ACCEPTED = (
    "an nn.Module, a torch.export.ExportedProgram, a .pt2 archive or MLflow pytorch model "
    "directory, an ONNX file or ModelProto, a transformers config / config.json / model type "
    "name, a timm model name, or an ArchGraph (JSON)"
)


def _mro_names(obj: Any) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def source_kind(source: Any) -> str:
    """Classify a source: ``module``, ``hf-module``, ``exported``, ``pt2``, ``mlflow``, ``onnx``,
    ``onnx-proto``, ``hf-config``, ``timm``, ``archgraph``.

    Raises:
        UnsupportedModelError: the source is none of the accepted kinds.
    """
    if isinstance(source, ArchGraph):
        return "archgraph"
    names = _mro_names(source)
    if "PreTrainedModel" in names:
        return "hf-module"
    if "Module" in names and hasattr(source, "forward"):
        return "module"
    if "ExportedProgram" in names:
        return "exported"
    if "ModelProto" in names:
        return "onnx-proto"
    if names & {"PretrainedConfig", "PreTrainedConfig"}:
        return "hf-config"
    if isinstance(source, dict):
        if source.get("format") == "nar-archgraph":
            return "archgraph"
        if "model_type" in source:
            return "hf-config"
        raise UnsupportedModelError(f"a dict source must be an ArchGraph or a config with model_type; found keys {sorted(source)[:8]}")
    if isinstance(source, (str, Path)):
        s = str(source)
        for prefix, kind in (("timm:", "timm"), ("hf-config:", "hf-config"), ("onnx:", "onnx"), ("pt2:", "pt2")):
            if s.startswith(prefix):
                return kind
        p = Path(s).expanduser()
        if p.is_file():
            suffix = p.suffix.lower()
            if suffix == ".onnx":
                return "onnx"
            if suffix in (".pt2", ".zip"):
                return "pt2"
            if suffix == ".json":
                from nar_plugin.extract.limits import read_json

                head = read_json(p)  # within NAR_MAX_JSON_MB / NAR_MAX_JSON_DEPTH
                return "archgraph" if isinstance(head, dict) and head.get("format") == "nar-archgraph" else "hf-config"
            if p.name == "MLmodel":
                return "mlflow"
            raise UnsupportedModelError(f"cannot read {p.name}: expected {ACCEPTED}")
        if p.is_dir():
            kind = directory_kind(p)
            return "hf-config" if kind == "config" else kind
        from nar_plugin.extract.timm_models import is_timm_name

        if is_timm_name(s):
            return "timm"
        if _is_hf_model_type(s):
            return "hf-config"
        missing = [f"{m} (pip install 'nar-plugin[{x}]')" for m, x in (("timm", "timm"), ("transformers", "hf"))
                   if not is_available(m)]
        hint = f"; note that {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed" if missing else ""
        raise UnsupportedModelError(
            f"{s!r} is not a file, a timm model name or a transformers model type; expected {ACCEPTED}{hint}")
    raise UnsupportedModelError(f"cannot extract a graph from {type(source).__name__}; expected {ACCEPTED}")


def _is_hf_model_type(name: str) -> bool:
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        return False
    return name in CONFIG_MAPPING


def _strip(source: Any) -> Any:
    if isinstance(source, str) and ":" in source.split("/")[0] and source.split(":", 1)[0] in ("timm", "hf-config", "onnx", "pt2"):
        return source.split(":", 1)[1]
    return source


def extract_graph(source: Any, example_inputs: Any = None, *, tracer: str = "auto") -> ArchGraph:
    """Extract the architecture graph of ``source`` without materialising weights.

    Args:
        source: an ``nn.Module`` (meta or real weights; not modified), an ``ExportedProgram``,
            a ``.pt2`` archive or MLflow pytorch model directory, an ONNX path or ``ModelProto``,
            a transformers config object / ``config.json`` path / model type name (``"bert"``),
            a timm model name (``"resnet50"``), or an ArchGraph / its JSON.
        example_inputs: inputs for ``nn.Module`` sources (inferred when omitted).
        tracer: for modules: ``"auto"`` (fx when faithful, else export), ``"fx"``, ``"export"``.

    Returns:
        The canonical :class:`ArchGraph`.

    Raises:
        UnsupportedModelError: unknown source kind or unbuildable model.
        CorruptArtifactError: a file that does not parse.
        ExampleInputsError: a module whose inputs cannot be inferred.
        GraphExtractionError: every tracer failed.

    Example:
        >>> g = extract_graph("resnet50")
        >>> g.num_nodes, g.graph_hash
    """
    kind = source_kind(source)
    if kind in ("module", "hf-module", "hf-config", "timm") or (kind == "mlflow" and _may_trace(source)):
        with TORCH_LOCK:
            return _extract(kind, source, example_inputs, tracer)
    return _extract(kind, source, example_inputs, tracer)


def _may_trace(source: Any) -> bool:
    # an MLflow dir is read from stored files unless it only holds a transformers config / pickle
    p = Path(source)
    return not (any(p.glob("data/*.pt2")) or any(p.glob("*.onnx")))


def _extract(kind: str, source: Any, example_inputs: Any, tracer: str) -> ArchGraph:
    src = _strip(source)
    if kind == "archgraph":
        if isinstance(src, ArchGraph):
            return src
        if isinstance(src, dict):
            return ArchGraph.from_dict(src)
        from nar_plugin.extract.limits import read_json

        return ArchGraph.from_dict(read_json(src, "ArchGraph JSON"))
    if kind == "module":
        from nar_plugin.extract.torch_module import graph_from_module

        return graph_from_module(src, example_inputs, tracer=tracer, metadata={"source_kind": "module"})
    if kind == "hf-module":
        from nar_plugin.extract.transformers import dummy_inputs
        from nar_plugin.extract.torch_module import graph_from_module

        kwargs = None if example_inputs is not None else dummy_inputs(src)
        return graph_from_module(src, example_inputs or (), tracer="export", example_kwargs=kwargs,
                                 metadata={"source_kind": "hf-module", "model_type": getattr(src.config, "model_type", None)})
    if kind == "exported":
        from nar_plugin.extract.aten import graph_from_exported_program

        return graph_from_exported_program(src, {"source_kind": "exported"})
    if kind == "pt2":
        from nar_plugin.extract.aten import graph_from_pt2

        return graph_from_pt2(src, {"source_kind": "pt2"})
    if kind in ("onnx", "onnx-proto"):
        from nar_plugin.extract.onnx import graph_from_onnx

        if kind == "onnx" and Path(src).is_dir():
            src = sorted(Path(src).glob("*.onnx"))[0]
        return graph_from_onnx(src, {"source_kind": "onnx"})
    if kind == "hf-config":
        from nar_plugin.extract.transformers import graph_from_hf_config

        return graph_from_hf_config(src)
    if kind == "timm":
        from nar_plugin.extract.timm_models import graph_from_timm

        return graph_from_timm(src, example_inputs, tracer=tracer)
    if kind == "mlflow":
        from nar_plugin.extract.mlflow_model import graph_from_mlflow_dir

        return graph_from_mlflow_dir(src)
    raise UnsupportedModelError(f"no extractor for source kind {kind!r}")  # pragma: no cover
