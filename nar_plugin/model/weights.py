"""The encoder weights format: ``<name>.pt`` (state dict) + ``<name>.json`` (metadata).

The JSON records the weights format version, the op-vocabulary version, the motif-sampling
version, the encoder config, the weights' SHA-256 and the encoder version string, plus the
training card (seed, command, corpus, metrics). :func:`load_weights` checks each of them, so
stale or mismatched weights fail with a clear error instead of producing embeddings that do
not compare. :func:`save_weights` is the only writer (``nar train``).

Importing this module is light (torch is imported when weights are read or written).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.graph import VOCAB_VERSION
from nar_plugin.motifs import MOTIF_VERSION
from nar_plugin.utils.io import (
    atomic_write_bytes,
    atomic_write_text,
    read_versioned_json,
)

if TYPE_CHECKING:
    from nar_plugin.model.encoder import EncoderConfig, NAREncoder

__all__ = [
    "DEFAULT_NAME",
    "WEIGHTS_DIR",
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "load_weights",
    "make_encoder_version",
    "save_weights",
    "sha256_hex",
    "weights_paths",
]

WEIGHTS_FORMAT = "nar-encoder"
#: Bump when the layout of ``nar-encoder.json`` / the state-dict keys change.
WEIGHTS_FORMAT_VERSION = 1
#: Directory of the shipped weights.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: File stem of the weights and their metadata.
DEFAULT_NAME = "nar-encoder"


def sha256_hex(data: bytes) -> str:
    """SHA-256 of the weights file's bytes (recorded in the JSON, checked on load)."""
    return hashlib.sha256(data).hexdigest()


def make_encoder_version(config: EncoderConfig, weights_sha256: str) -> str:
    """``nar-v<VOCAB_VERSION>.m<MOTIF_VERSION>-<config hash>-<first 8 hex of the weights hash>``."""
    from nar_plugin.model.encoder import config_hash

    return f"nar-v{VOCAB_VERSION}.m{MOTIF_VERSION}-{config_hash(config)}-{weights_sha256[:8]}"


def weights_paths(path: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` for a directory, a ``.pt`` or a ``.json`` path.

    ``None`` means ``NAR_ENCODER_WEIGHTS`` when set (your own retrained encoder), else the
    shipped weights in :data:`WEIGHTS_DIR`.
    """
    if path is None:
        from nar_plugin.config import NAR_ENCODER_WEIGHTS

        path = NAR_ENCODER_WEIGHTS.get() or None
    p = WEIGHTS_DIR if path is None else Path(path).expanduser()
    if p.is_dir():
        return p / f"{DEFAULT_NAME}.pt", p / f"{DEFAULT_NAME}.json"
    if p.suffix == ".json":
        return p.with_suffix(".pt"), p
    return p, p.with_suffix(".json")


def _state_bytes(state: dict[str, Any], filename: str) -> bytes:
    import torch

    # torch names the zip archive's top folder after the file it writes, minus the last suffix
    # (a buffer gets "archive"): saving to "<filename>.tmp" keeps the folder "<filename>" that
    # the weights written so far have, so a retrain reproduces them byte for byte (the weights
    # hash is part of the encoder version) and the bytes do not depend on a temp-file name
    with tempfile.TemporaryDirectory(prefix="nar-weights-") as tmp:
        f = Path(tmp) / f"{filename}.tmp"
        torch.save(state, f)
        return f.read_bytes()


def save_weights(model: NAREncoder, out_dir: str | os.PathLike[str], card: dict[str, Any],
                 name: str = DEFAULT_NAME) -> tuple[Path, Path, str]:
    """Write ``<name>.pt`` (inference state dict, no classification head) and ``<name>.json``.

    Both files are replaced atomically (the ``.pt`` first: a reader in between sees a SHA-256
    mismatch, never a silently wrong encoder). The JSON gets the format, vocabulary and motif
    versions, the inference config, the weights' SHA-256 and :func:`make_encoder_version` on top
    of ``card``, in that order (keys are not sorted: the versions come first for a reader).

    Returns:
        ``(weights path, json path, encoder version)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if not k.startswith("classifier.")}
    cfg = replace(model.config, num_classes=0)
    wpath, jpath = out / f"{name}.pt", out / f"{name}.json"
    data = _state_bytes(state, wpath.name)
    atomic_write_bytes(wpath, data)
    digest = sha256_hex(data)
    version = make_encoder_version(cfg, digest)
    meta = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "vocab_version": VOCAB_VERSION,
        "motif_version": MOTIF_VERSION,
        "config": cfg.to_dict(),
        "weights_file": wpath.name,
        "weights_sha256": digest,
        "encoder_version": version,
        **card,
    }
    atomic_write_text(jpath, json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return wpath, jpath, version


def _check_versions(meta: dict[str, Any], jpath: Path) -> None:
    for field, expected, what in (("vocab_version", VOCAB_VERSION, "op vocabulary"),
                                  ("motif_version", MOTIF_VERSION, "motif sampling")):
        found = meta.get(field)
        if found != expected:
            raise CorruptArtifactError(
                f"encoder weights {jpath.name} were trained for {what} v{found}, but this "
                f"nar-plugin uses v{expected}; retrain with `nar train` or install the "
                "nar-plugin release that shipped these weights", str(jpath))


def load_weights(wpath: Path, jpath: Path) -> tuple[NAREncoder, dict[str, Any], str]:
    """Read and check a weights file and its JSON; the model is on CPU in eval mode.

    Returns:
        ``(model, metadata, encoder version)``.

    Raises:
        FileNotFoundError: the weights or their JSON are missing.
        CorruptArtifactError: the JSON is unreadable, has another format, format version,
            vocabulary or motif version, does not match the weights file (SHA-256), or the
            state dict does not fit the recorded config.
    """
    import torch

    from nar_plugin.model.encoder import EncoderConfig, NAREncoder

    for p, what in ((jpath, "metadata"), (wpath, "weights")):
        if not p.is_file():
            raise FileNotFoundError(f"encoder {what} {p} not found (train with `nar train`)")
    meta = read_versioned_json(jpath, WEIGHTS_FORMAT, WEIGHTS_FORMAT_VERSION)
    _check_versions(meta, jpath)
    data = wpath.read_bytes()  # read once: the bytes hashed are the bytes loaded
    digest = sha256_hex(data)
    if meta.get("weights_sha256") != digest:
        raise CorruptArtifactError(
            f"{wpath.name} does not match {jpath.name}: SHA-256 {digest[:12]}..., expected "
            f"{str(meta.get('weights_sha256'))[:12]}... (weights and metadata come from different runs)",
            str(wpath))
    try:
        config = EncoderConfig.from_dict(dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptArtifactError(f"bad encoder config in {jpath}: {e}", str(jpath)) from e
    model = NAREncoder(config)
    try:
        model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as e:
        raise CorruptArtifactError(f"weights {wpath} do not fit the recorded config: {e}", str(wpath)) from e
    version = make_encoder_version(config, digest)
    recorded = meta.get("encoder_version")
    if recorded is not None and recorded != version:
        raise CorruptArtifactError(f"{jpath.name} records encoder version {recorded!r}, the files give "
                                   f"{version!r}", str(jpath))
    return model.eval(), meta, version
