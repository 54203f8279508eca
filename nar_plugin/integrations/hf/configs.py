"""What a Hub ``config.json`` describes: which library builds it, and its architecture graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nar_plugin.errors import UnsupportedModelError

# TORCH_LOCK serialises extraction and embedding in this integration's threads: torch.fx tracing
# patches ``nn.Module.__call__`` process-wide, so a module run in another thread while a trace is in
# progress (our own encoder included) breaks with "module is not installed as a submodule".
# On a few cores parallel extraction would gain nothing anyway; downloads still overlap. It is the
# process-wide lock of the extractors (re-entrant), so other threads' extraction waits too.
from nar_plugin.extract import TORCH_LOCK
from nar_plugin.graph import ArchGraph

__all__ = ["TORCH_LOCK", "graph_from_repo_config", "library_of", "model_type_of"]


def library_of(config: Mapping[str, Any]) -> str | None:
    """``"transformers"`` (a ``model_type`` key), ``"timm"`` (an ``architecture`` key) or ``None``:
    not a model config this integration can build."""
    if "model_type" in config:
        return "transformers"
    if "architecture" in config:
        return "timm"
    return None


def model_type_of(config: Mapping[str, Any]) -> str | None:
    """The transformers ``model_type`` or the timm ``architecture`` of a config."""
    return config.get("model_type") or config.get("architecture")


def graph_from_repo_config(config: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> ArchGraph:
    """The architecture graph of a Hub ``config.json``: transformers (``model_type``) or timm
    (``architecture`` + ``num_classes`` / ``model_args``), built on meta.

    Raises:
        UnsupportedModelError: neither kind of config, or the model cannot be built.
        GraphExtractionError: built but not exportable.
    """
    meta = dict(metadata or {})
    with TORCH_LOCK:
        if "model_type" in config:
            from nar_plugin.extract.transformers import graph_from_hf_config

            return graph_from_hf_config(dict(config), metadata=meta)
        if "architecture" in config:
            from nar_plugin.extract.timm_models import graph_from_timm_config

            # untrusted config: model_args through the allow-list, no checkpoint/pretrained paths
            return graph_from_timm_config(config, metadata=meta)
    raise UnsupportedModelError("config.json has neither 'model_type' (transformers) nor 'architecture' "
                                f"(timm); found keys {sorted(config)[:8]}")
