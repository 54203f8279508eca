"""Embedding with the shipped NAR encoder: ``embed``, ``embed_graph``, ``embed_many``.

The encoder is loaded lazily from ``nar_plugin/weights/nar-encoder.{pt,json}`` (or a path you
give, or ``NAR_ENCODER_WEIGHTS``), once per process, without any network access; the checks on
load are :func:`nar_plugin.model.weights.load_weights`'.

Every embedding is float32, shape ``(128,)``, unit L2 norm: the learned vector, and for
encoders with a ``sketch_dim`` the structural sketch after it (:mod:`nar_plugin.model.sketch`,
the floor of issue 16). It comes with
:func:`encoder_version` (``nar-v<vocab>.m<motif>-<config hash>-<weights hash>``), which the
index and the MLflow/HF tags record. Embedding is deterministic: eval mode, no dropout, no
randomness, so identical architectures get identical embeddings.

Importing this module is light: torch is imported on the first embedding.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nar_plugin.errors import GraphTooLargeError
from nar_plugin.graph import ArchGraph
from nar_plugin.model.weights import load_weights, weights_paths

if TYPE_CHECKING:
    import torch

    from nar_plugin.model.encoder import EncoderConfig, NAREncoder
    from nar_plugin.model.features import PreparedGraph
    from nar_plugin.model.token_weights import TokenWeights

__all__ = [
    "LoadedEncoder",
    "embed",
    "embed_graph",
    "embed_many",
    "embed_prepared",
    "encoder_version",
    "load_encoder",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedEncoder:
    """A loaded encoder: the module (eval mode, CPU), its metadata and version string, and the
    sketch's token table (sketch version 4 and later)."""

    model: NAREncoder
    meta: dict[str, Any]
    version: str
    path: Path
    sketch_weights: TokenWeights | None = None

    @property
    def config(self) -> EncoderConfig:
        return self.model.config


_CACHE: dict[Path, LoadedEncoder] = {}
_LOCK = threading.Lock()


def load_encoder(path: str | os.PathLike[str] | None = None, *, reload: bool = False) -> LoadedEncoder:
    """Load (once per process and path) the NAR encoder.

    Args:
        path: a weights directory, ``.pt`` or ``.json`` file (default: ``NAR_ENCODER_WEIGHTS``
            when set, else the shipped weights in ``nar_plugin/weights``).
        reload: ignore the in-process cache.

    Returns:
        A :class:`LoadedEncoder` on CPU in eval mode.

    Raises:
        FileNotFoundError: the weights or their JSON are missing.
        CorruptArtifactError: see :func:`~nar_plugin.model.weights.load_weights`.
    """
    wpath, jpath = weights_paths(path)
    key = wpath.resolve() if wpath.exists() else wpath
    with _LOCK:
        if not reload and key in _CACHE:
            return _CACHE[key]
        model, meta, version = load_weights(wpath, jpath)
        table = None
        if model.config.sketch_dim and model.config.sketch_version >= 4:
            from nar_plugin.model.token_weights import load_token_weights

            table = load_token_weights(jpath.parent, model.config.sketch_weights)
        logger.debug("loaded NAR encoder %s from %s", version, wpath)
        loaded = LoadedEncoder(model, meta, version, wpath, table)
        _CACHE[key] = loaded
        return loaded


def encoder_version(path: str | os.PathLike[str] | None = None) -> str:
    """The version string of the (shipped) encoder, recorded with every embedding."""
    return load_encoder(path).version


def embed_prepared(model: NAREncoder, prepared: Sequence[PreparedGraph], batch_size: int = 64,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Embed prepared graphs in batches with ``model`` in eval mode: ``(N, out_dim)`` float32.

    The model's train/eval mode is restored afterwards (training evaluates with it).
    """
    import torch

    from nar_plugin.model.features import collate

    was = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for i in range(0, len(prepared), batch_size):
                batch = collate(prepared[i:i + batch_size]).to(device)
                out.append(model(batch).float().cpu().numpy())
    finally:
        model.train(was)
    if not out:
        return np.zeros((0, model.config.out_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


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
    from nar_plugin.model.features import prepare

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    from nar_plugin.model.sketch import compose

    enc = encoder or load_encoder()
    cfg = enc.config
    out: list[np.ndarray] = []
    for start in range(0, len(sources_or_graphs), batch_size):
        prepared, graphs = [], []  # one batch at a time: a whole corpus' prepared graphs do not fit in memory
        for src in sources_or_graphs[start:start + batch_size]:
            g = src if isinstance(src, ArchGraph) else _extract(src, example_inputs)
            _check_size(g)
            graphs.append(g)
            prepared.append(prepare(g, steps=cfg.steps, max_size=cfg.max_size, min_count=cfg.min_count))
        learned = embed_prepared(enc.model, prepared, batch_size=len(prepared))
        out.append(compose(learned, graphs, cfg.sketch_dim, cfg.sketch_weight, cfg.sketch_version, enc.sketch_weights))
    if not out:
        return np.zeros((0, cfg.embedding_dim), dtype=np.float32)
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
