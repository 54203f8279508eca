"""timm model names -> model on meta -> ArchGraph (torch.fx when faithful, else export)."""

from __future__ import annotations

from typing import Any

from nar_plugin.errors import MissingDependencyError, UnsupportedModelError
from nar_plugin.graph import ArchGraph
from nar_plugin.utils.deps import require

__all__ = ["is_timm_name", "build_meta_timm", "graph_from_timm", "timm_family"]


def _timm() -> Any:
    return require("timm", "timm")


def is_timm_name(name: str) -> bool:
    """True when ``name`` is a registered timm architecture (pretrained tags allowed)."""
    try:
        timm = _timm()
    except MissingDependencyError:
        return False
    base = name.split(".")[0]
    return bool(timm.is_model(base))


def timm_family(name: str) -> str:
    """The timm module that registers the architecture (e.g. ``resnet``, ``vision_transformer``)."""
    timm = _timm()
    mod = timm.models.get_arch_name(name) if hasattr(timm.models, "get_arch_name") else name
    return str(timm.models.model_entrypoint(mod).__module__).rsplit(".", 1)[-1]


def build_meta_timm(name: str, **kwargs: Any) -> Any:
    """``timm.create_model(name, pretrained=False)`` on the meta device, in eval mode.

    Raises:
        UnsupportedModelError: unknown name or the model cannot be built.
    """
    import torch

    timm = _timm()
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise UnsupportedModelError(f"{name!r} is not a timm architecture (see timm.list_models())")
    try:
        with torch.device("meta"):
            model = timm.create_model(base, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - timm raises many types for unbuildable configs
        raise UnsupportedModelError(f"timm cannot build {name!r}: {type(e).__name__}: {e}") from e
    return model.eval()


def graph_from_timm(name: str, example_inputs: Any = None, tracer: str = "auto",
                    metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of a timm architecture by name; no weights are created or fetched."""
    from nar_plugin.extract.torch_module import graph_from_module

    model = build_meta_timm(name)
    meta = {"name": name, "source_kind": "timm", **(metadata or {})}
    return graph_from_module(model, example_inputs, tracer=tracer, metadata=meta)
