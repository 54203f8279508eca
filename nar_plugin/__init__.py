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
    "sample_motifs",
    "embed",
    "embed_many",
    "encoder_version",
    "index_model",
    "find_similar",
    "check_duplicate",
    "fingerprint_module",
    "Match",
    "DuplicateReport",
    "EmbeddingIndex",
    "encode_embedding",
    "decode_embedding",
    "errors",
]

_LAZY = {
    "ArchGraph": ("nar_plugin.graph", "ArchGraph"),
    "extract_graph": ("nar_plugin.extract", "extract_graph"),
    "sample_motifs": ("nar_plugin.motifs", "sample_motifs"),
    "embed": ("nar_plugin.model.inference", "embed"),
    "embed_many": ("nar_plugin.model.inference", "embed_many"),
    "encoder_version": ("nar_plugin.model.inference", "encoder_version"),
    "index_model": ("nar_plugin.search.api", "index_model"),
    "find_similar": ("nar_plugin.search.api", "find_similar"),
    "check_duplicate": ("nar_plugin.search.api", "check_duplicate"),
    "fingerprint_module": ("nar_plugin.lineage.readers", "fingerprint_module"),
    "Match": ("nar_plugin.search.results", "Match"),
    "DuplicateReport": ("nar_plugin.search.results", "DuplicateReport"),
    "EmbeddingIndex": ("nar_plugin.index", "EmbeddingIndex"),
    "encode_embedding": ("nar_plugin.index.codec", "encode_embedding"),
    "decode_embedding": ("nar_plugin.index.codec", "decode_embedding"),
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
