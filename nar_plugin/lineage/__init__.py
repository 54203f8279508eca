"""Weight fingerprints and model lineage: which models share weights, which was fine-tuned from
which, without storing the weights.

Layer: beside ``extract`` and ``motifs`` (imports ``errors``, ``config``, ``utils``, ``graph`` only;
numpy always, torch only to read an in-memory module, onnx only to read an ONNX file).

- :mod:`.sketch`: per tensor, streamed in blocks: SHA-256, a 64-bucket CountSketch, moments;
- :mod:`.fingerprint`: :class:`WeightFingerprint` and its stored form (gzip JSON, versioned);
- :mod:`.readers`: an ``nn.Module``, pt2 archives, safetensors, ONNX initializers, MLflow model
  folders; never unpickles;
- :mod:`.compare`: weight similarity, direction (step counters, kurtosis), relation, tree reconstruction.

See docs/lineage.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LineageThresholds",
    "WeightComparison",
    "WeightFingerprint",
    "compare",
    "fingerprint_file",
    "fingerprint_mlflow_dir",
    "fingerprint_module",
    "reconstruct_tree",
    "weight_relation",
]

_LAZY = {
    "LineageThresholds": "nar_plugin.lineage.compare",
    "WeightComparison": "nar_plugin.lineage.compare",
    "compare": "nar_plugin.lineage.compare",
    "reconstruct_tree": "nar_plugin.lineage.compare",
    "weight_relation": "nar_plugin.lineage.compare",
    "WeightFingerprint": "nar_plugin.lineage.fingerprint",
    "fingerprint_file": "nar_plugin.lineage.readers",
    "fingerprint_mlflow_dir": "nar_plugin.lineage.readers",
    "fingerprint_module": "nar_plugin.lineage.readers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nar_plugin.lineage' has no attribute {name!r}")
