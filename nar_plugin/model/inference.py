"""Embedding with the shipped NAR encoder: ``embed``, ``embed_graph``, ``embed_many``.

The encoder is loaded lazily from ``nar_plugin/weights/nar-encoder.{pt,json}`` (or a path you
give), once per process, without any network access. The JSON beside the weights records the
vocabulary version, the motif-sampling version, the encoder config and the weights' SHA-256;
each is checked on load, so stale or mismatched weights fail with a clear error instead of
producing embeddings that do not compare.

Every embedding is float32, shape ``(128,)``, unit L2 norm, and comes with
:func:`encoder_version` (``nar-v<vocab>.m<motif>-<config hash>-<weights hash>``), which the
index and the MLflow/HF tags record. Embedding is deterministic: eval mode, no dropout, no
randomness, so identical architectures get identical embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nar_plugin.errors import CorruptArtifactError, GraphTooLargeError
from nar_plugin.graph import VOCAB_VERSION, ArchGraph

__all__ = [
    "WEIGHTS_DIR",
    "LoadedEncoder",
    "load_encoder",
    "encoder_version",
    "make_encoder_version",
    "embed_graph",
    "embed",
    "embed_many",
]

logger = logging.getLogger(__name__)

#: Directory of the shipped weights.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_DEFAULT_NAME = "nar-encoder"


def make_encoder_version(config: Any, weights_sha256: str) -> str:
    """``nar-v<VOCAB_VERSION>.m<MOTIF_VERSION>-<config hash>-<first 8 hex of the weights hash>``."""
    from nar_plugin.model.encoder import config_hash
    from nar_plugin.motifs import MOTIF_VERSION

    return f"nar-v{VOCAB_VERSION}.m{MOTIF_VERSION}-{config_hash(config)}-{weights_sha256[:8]}"


@dataclass(frozen=True)
class LoadedEncoder:
    """A loaded encoder: the module (eval mode, CPU), its metadata and version string."""

    model: Any  # NAREncoder; typed loosely so that importing this module stays light
    meta: dict[str, Any]
    version: str
    path: Path

    @property
    def config(self) -> Any:
        return self.model.config


_CACHE: dict[Path, LoadedEncoder] = {}
_LOCK = threading.Lock()


def _resolve(path: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` for a directory, a .pt or a .json path."""
    if path is None:
        from nar_plugin.config import NAR_ENCODER_WEIGHTS

        path = NAR_ENCODER_WEIGHTS.get() or None  # your own retrained encoder, if set
    p = WEIGHTS_DIR if path is None else Path(path).expanduser()
    if p.is_dir():
        return p / f"{_DEFAULT_NAME}.pt", p / f"{_DEFAULT_NAME}.json"
    if p.suffix == ".json":
        return p.with_suffix(".pt"), p
    return p, p.with_suffix(".json")


def load_encoder(path: str | os.PathLike[str] | None = None, *, reload: bool = False) -> LoadedEncoder:
    """Load (once per process and path) the NAR encoder.

    Args:
        path: a weights directory, ``.pt`` or ``.json`` file (default: the shipped weights in
            ``nar_plugin/weights``).
        reload: ignore the in-process cache.

    Returns:
        A :class:`LoadedEncoder` on CPU in eval mode.

    Raises:
        FileNotFoundError: the weights or their JSON are missing.
        CorruptArtifactError: the JSON is unreadable, has another format, vocabulary or motif
            version, does not match the weights file (SHA-256), or the state dict does not fit
            the recorded config.
    """
    wpath, jpath = _resolve(path)
    key = wpath.resolve() if wpath.exists() else wpath
    with _LOCK:
        if not reload and key in _CACHE:
            return _CACHE[key]
        loaded = _load(wpath, jpath)
        _CACHE[key] = loaded
        return loaded


def _load(wpath: Path, jpath: Path) -> LoadedEncoder:
    import torch

    from nar_plugin.model.encoder import EncoderConfig, NAREncoder
    from nar_plugin.motifs import MOTIF_VERSION
    from nar_plugin.training.loop import WEIGHTS_FORMAT, WEIGHTS_FORMAT_VERSION

    if not jpath.is_file():
        raise FileNotFoundError(f"encoder metadata {jpath} not found (train with `nar train`)")
    if not wpath.is_file():
        raise FileNotFoundError(f"encoder weights {wpath} not found (train with `nar train`)")
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptArtifactError(f"encoder metadata {jpath} does not parse: {e}", str(jpath)) from e
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise CorruptArtifactError(f"{jpath} is not NAR encoder metadata (expected format "
                                   f"{WEIGHTS_FORMAT!r})", str(jpath))
    checks = (
        ("format_version", WEIGHTS_FORMAT_VERSION, "weights format"),
        ("vocab_version", VOCAB_VERSION, "op vocabulary"),
        ("motif_version", MOTIF_VERSION, "motif sampling"),
    )
    for field_, expected, what in checks:
        found = meta.get(field_)
        if found != expected:
            raise CorruptArtifactError(
                f"encoder weights {jpath.name} were trained for {what} v{found}, but this "
                f"nar-plugin uses v{expected}; retrain with `nar train` or install the "
                "nar-plugin release that shipped these weights", str(jpath))
    digest = hashlib.sha256(wpath.read_bytes()).hexdigest()
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
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/KeyError...
        raise CorruptArtifactError(f"weights {wpath} do not fit the recorded config: {e}", str(wpath)) from e
    model.eval()
    version = make_encoder_version(config, digest)
    recorded = meta.get("encoder_version")
    if recorded is not None and recorded != version:
        raise CorruptArtifactError(f"{jpath.name} records encoder version {recorded!r}, the files give "
                                   f"{version!r}", str(jpath))
    logger.debug("loaded NAR encoder %s from %s", version, wpath)
    return LoadedEncoder(model, meta, version, wpath)


def encoder_version(path: str | os.PathLike[str] | None = None) -> str:
    """The version string of the (shipped) encoder, recorded with every embedding."""
    return load_encoder(path).version


def _check_size(graph: ArchGraph) -> None:
    from nar_plugin.config import NAR_MAX_NODES

    limit = NAR_MAX_NODES.get()
    if graph.num_nodes > limit:
        raise GraphTooLargeError(graph.num_nodes, limit)


def embed_many(
    sources_or_graphs: Sequence[Any],
    batch_size: int = 64,
    encoder: LoadedEncoder | None = None,
    example_inputs: Any = None,
) -> np.ndarray:
    """Embed many architectures in batches.

    Args:
        sources_or_graphs: :class:`ArchGraph` objects or any source ``extract_graph`` accepts.
        batch_size: graphs per forward pass.
        encoder: a :func:`load_encoder` result (default: the shipped encoder).
        example_inputs: passed to ``extract_graph`` for sources that are modules.

    Returns:
        ``(N, 128)`` float32, unit-norm rows, in input order.

    Raises:
        GraphTooLargeError: a graph exceeds ``NAR_MAX_NODES``.
        Whatever ``extract_graph`` raises for a source it cannot read.
    """
    import torch

    from nar_plugin.model.encoder import collate, prepare

    enc = encoder or load_encoder()
    cfg = enc.config
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    out: list[np.ndarray] = []
    for start in range(0, len(sources_or_graphs), batch_size):
        prepared = []
        for src in sources_or_graphs[start:start + batch_size]:
            g = src if isinstance(src, ArchGraph) else _extract(src, example_inputs)
            _check_size(g)
            prepared.append(prepare(g, steps=cfg.steps, max_size=cfg.max_size, min_count=cfg.min_count))
        with torch.inference_mode():
            out.append(enc.model(collate(prepared)).float().numpy())
    if not out:
        return np.zeros((0, cfg.out_dim), dtype=np.float32)
    emb = np.concatenate(out).astype(np.float32, copy=False)
    # re-normalise in float32 so that every row is unit norm to float32 precision
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _extract(source: Any, example_inputs: Any) -> ArchGraph:
    from nar_plugin.extract import extract_graph

    return extract_graph(source, example_inputs=example_inputs)


def embed_graph(graph: ArchGraph, encoder: LoadedEncoder | None = None) -> np.ndarray:
    """Embed one :class:`ArchGraph`: float32 ``(128,)``, unit norm."""
    return embed_many([graph], encoder=encoder)[0]


def embed(source: Any, example_inputs: Any = None, encoder: LoadedEncoder | None = None) -> np.ndarray:
    """``extract_graph(source, example_inputs)`` then :func:`embed_graph`.

    Example:
        >>> v = nar_plugin.embed("timm:resnet50")
        >>> v.shape, float(np.linalg.norm(v))
        ((128,), 1.0)
    """
    return embed_graph(_extract(source, example_inputs), encoder=encoder)
