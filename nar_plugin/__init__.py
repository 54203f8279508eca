"""nar-plugin: Neural Architecture Retrieval for MLflow and the Hugging Face Hub.

``import nar_plugin`` is light: it imports neither torch, mlflow, huggingface_hub nor
transformers; each public function imports what it needs when called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ArchGraph",
    "extract_graph",
    "errors",
]

_LAZY = {
    "ArchGraph": ("nar_plugin.graph", "ArchGraph"),
    "extract_graph": ("nar_plugin.extract", "extract_graph"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name == "errors":
        import importlib

        return importlib.import_module("nar_plugin.errors")
    raise AttributeError(f"module 'nar_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
