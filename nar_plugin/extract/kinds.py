"""What a folder of a stored model holds: the one rule shared by :func:`~nar_plugin.extract.extract_graph`
and the sandboxed reader of untrusted artifacts."""

from __future__ import annotations

from pathlib import Path

from nar_plugin.errors import UnsupportedModelError

__all__ = ["directory_kind"]


def directory_kind(p: Path) -> str:
    """``mlflow`` (an ``MLmodel`` file), ``pt2``, ``onnx`` or ``config`` (a ``config.json``).

    Raises:
        UnsupportedModelError: the folder holds none of them.
    """
    if (p / "MLmodel").is_file():
        return "mlflow"
    if any(p.glob("*.pt2")) or any(p.glob("data/*.pt2")):
        return "pt2"
    if any(p.glob("*.onnx")):
        return "onnx"
    if (p / "config.json").is_file():
        return "config"
    raise UnsupportedModelError(f"directory {p} holds no MLmodel, .pt2, .onnx or config.json")
