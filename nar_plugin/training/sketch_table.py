"""Fit the sketch's token table and attach it to an encoder (``nar train``'s last step).

The fitting data (:func:`sketch_rows`): the training corpus' model-code sources (timm,
torchvision, transformers; NAS cells are search-space samples, not code from the world, and
would set every document frequency) plus the committed cross-library benchmark's libraries,
whose re-implementations of one network are what tells a family's shared tokens from one
library's glue. The leave-one-library-out evaluation fits one table per held-out library
without it (``exclude``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nar_plugin.model.token_weights import (
    TokenRow,
    TokenWeights,
    fit_token_weights,
    token_row,
)

__all__ = ["attach_sketch_weights", "sketch_rows", "write_sketch_weights"]

logger = logging.getLogger(__name__)

def sketch_rows(corpus: str | os.PathLike[str] | None = None, sources: Sequence[str] | None = None,
                cross_library: bool = True, version: int = 4) -> list[TokenRow]:
    """Token rows of the fitting data (see the module docstring).

    Args:
        corpus: training corpus (default: the project's).
        sources: corpus sources to use (default: all but the NAS cells,
            :data:`~nar_plugin.training.data.NAS_SOURCES`); the benchmark
            library of a source not listed is left out as well.
        cross_library: add the committed cross-library benchmark (group = its library).
        version: sketch token definition.
    """
    from nar_plugin.training.data import NAS_SOURCES, load_training_corpus

    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    entries = load_training_corpus(corpus)
    # a source left out (an encoder trained without timm) is left out of the benchmark rows too
    left_out = {e.source for e in entries} - set(sources) if sources is not None else set()
    rows = [token_row(e.graph, e.family, e.source, version) for e in entries
            if e.source not in NAS_SOURCES and e.source not in left_out]
    if cross_library:
        from nar_plugin.corpus.crosslib import load_cross_library

        rows += [token_row(it.graph, it.family, it.library, version) for it in load_cross_library(None)
                 if it.library not in left_out]
    return rows


def attach_sketch_weights(weights_dir: str | os.PathLike[str], table: TokenWeights) -> str:
    """Write ``table`` next to the encoder in ``weights_dir`` and switch its config to sketch
    version 4 with the table's SHA-256; returns the new encoder version string."""
    import json

    from nar_plugin.model.encoder import EncoderConfig
    from nar_plugin.model.weights import make_encoder_version, weights_paths
    from nar_plugin.utils.io import atomic_write_text

    _, jpath = weights_paths(weights_dir)
    meta: dict[str, Any] = json.loads(jpath.read_text())
    table.save(jpath.parent)
    cfg = replace(EncoderConfig.from_dict(dict(meta["config"])), sketch_version=4,
                  sketch_weights=table.sha256[:16])
    version = make_encoder_version(cfg, meta["weights_sha256"])
    meta["config"], meta["encoder_version"] = cfg.to_dict(), version
    meta["sketch_table"] = {k: v for k, v in table.meta.items() if k not in ("format", "format_version")}
    atomic_write_text(jpath, json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return version


def write_sketch_weights(weights_dir: str | os.PathLike[str], corpus: str | os.PathLike[str] | None = None,
                         sources: Sequence[str] | None = None, exclude: Iterable[str] = (),
                         rows: Sequence[TokenRow] | None = None) -> str:
    """Fit (on :func:`sketch_rows`, or ``rows``) without the groups in ``exclude`` and attach."""
    if rows is None:
        rows = sketch_rows(corpus, sources)
    table = fit_token_weights(rows, exclude=exclude)
    version = attach_sketch_weights(weights_dir, table)
    logger.info("sketch token table (%d items, %d node / %d edge tokens) -> %s",
                table.meta["items"], len(table.nodes), len(table.edges), Path(weights_dir))
    return version
