"""Leave-one-library-out NAR for the cross-library benchmark (issue 16, item 1).

For a query library ``L``, the encoder that embeds the benchmark must not have seen ``L``'s
code. The training corpus has four sources (``nas``, ``timm``, ``torchvision``,
``transformers``); the benchmark's other seven libraries (pytorchcv, open_clip, ...) are in
no source at all. So:

* ``L`` is a corpus source (:data:`LIBRARY_SOURCES`): an encoder is trained with the shipped
  configuration on every source *but* ``L`` (``<root>/without-<source>``);
* otherwise the encoder trained on all sources (``<root>/all``, or the shipped weights when
  ``shipped_for_unseen``: they are that encoder) already never saw ``L``.

With a sketch that weighs tokens by a fitted table (sketch version 4), the table is training
data too: each query library gets ``<root>/sketch-without-<library>``, the encoder above with a
table fitted without that library (a copy of its files and a new table, seconds).

Trained encoders are kept in ``root`` (resumable: an existing ``nar-encoder.json`` is reused),
and the training command of each is recorded in its JSON like the shipped weights'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nar_plugin.evaluation.cross_library import LeaveOneOut

if TYPE_CHECKING:
    import numpy as np

    from nar_plugin.corpus.crosslib.dataset import CrossLibItem

__all__ = ["LIBRARY_SOURCES", "default_lolo_dir", "encoder_without", "leave_one_out_nar", "sketch_without"]

logger = logging.getLogger(__name__)

#: Benchmark libraries that are also training-corpus sources (library -> source name).
LIBRARY_SOURCES: dict[str, str] = {"timm": "timm", "torchvision": "torchvision", "transformers": "transformers"}


def default_lolo_dir() -> Path:
    """``$NAR_HOME/lolo`` (encoders trained for the leave-one-library-out protocol)."""
    from nar_plugin.config import nar_home

    return Path(nar_home()) / "lolo"


def _corpus_sources(corpus: str | os.PathLike[str]) -> list[str]:
    """The corpus' sources: its shard names (a built corpus), else those of its JSONL records."""
    if (Path(corpus) / "manifest.json").is_file():
        from nar_plugin.corpus.store import CorpusStore

        return CorpusStore(corpus, create=False).sources()
    from nar_plugin.training.data import load_training_corpus

    return sorted({e.source for e in load_training_corpus(corpus)})


def encoder_without(library: str, root: str | os.PathLike[str], corpus: str | os.PathLike[str] | None = None, *,
                    epochs: int = 30, seed: int = 0, shipped_for_unseen: bool = True,
                    log: Callable[[str], None] | None = None, **options: Any) -> Path:
    """The weights directory of an encoder that never saw ``library``; trains it when missing.

    Args:
        library: a benchmark library.
        root: where trained encoders are kept.
        corpus: training corpus (default: the project's).
        epochs, seed, options: training settings (:func:`~nar_plugin.training.loop.train_command`).
        shipped_for_unseen: for a library in no corpus source, return the shipped weights
            (trained on every source) instead of training ``<root>/all``.
        log: progress lines.
    """
    from nar_plugin.model.weights import weights_paths

    say = log or logger.info
    source = LIBRARY_SOURCES.get(library)
    if source is None and shipped_for_unseen:
        return weights_paths(None)[0].parent
    out = Path(root) / (f"without-{source}" if source else "all")
    if (out / "nar-encoder.json").is_file():
        return out
    from nar_plugin.training.loop import train_command

    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    sources = tuple(s for s in _corpus_sources(corpus) if s != source)
    say(f"training an encoder without {source or 'nothing'} (sources {', '.join(sources)}) into {out}")
    res = train_command(corpus, out, epochs=epochs, seed=seed, sources=sources, **options)
    say(f"  {res.encoder_version} in {res.seconds:.0f} s")
    return out


def sketch_without(library: str, base: str | os.PathLike[str], root: str | os.PathLike[str],
                   rows: Sequence[Any]) -> Path:
    """``base``'s encoder with a sketch token table fitted on ``rows`` without ``library``
    (``<root>/sketch-without-<library>``, rewritten on every call)."""
    import shutil

    from nar_plugin.model.weights import weights_paths
    from nar_plugin.training.sketch_table import write_sketch_weights

    out = Path(root) / f"sketch-without-{library}"
    out.mkdir(parents=True, exist_ok=True)
    for p in weights_paths(base):
        shutil.copyfile(p, out / p.name)
    write_sketch_weights(out, rows=rows, exclude={library})
    return out


def leave_one_out_nar(root: str | os.PathLike[str] | None = None, corpus: str | os.PathLike[str] | None = None,
                      *, epochs: int = 30, seed: int = 0, shipped_for_unseen: bool = True,
                      log: Callable[[str], None] | None = None) -> LeaveOneOut:
    """NAR as a :class:`LeaveOneOut` method: per query library, the encoder of
    :func:`encoder_without` (trained on first use)."""
    base = Path(root) if root is not None else default_lolo_dir()
    by_weights: dict[Path, Callable[[Sequence[CrossLibItem]], np.ndarray]] = {}
    rows: list[Any] = []  # the sketch table's fitting data, tokenised once

    def train_fn(library: str) -> Callable[[Sequence[CrossLibItem]], np.ndarray]:
        """One embedder per encoder: the libraries no source holds share the shipped one."""
        from nar_plugin.model.inference import embed_many, load_encoder

        path = Path(encoder_without(library, base, corpus, epochs=epochs, seed=seed,
                                    shipped_for_unseen=shipped_for_unseen, log=log))
        if load_encoder().config.sketch_version >= 4:  # the shipped sketch is fitted: refit without the library
            if not rows:
                from nar_plugin.training.sketch_table import sketch_rows

                rows.extend(sketch_rows(corpus))
            path = sketch_without(library, path, base, rows)
        if path not in by_weights:
            enc = load_encoder(path, reload=True)
            by_weights[path] = lambda items: embed_many([it.graph for it in items], encoder=enc)
        return by_weights[path]

    return LeaveOneOut(train_fn)
