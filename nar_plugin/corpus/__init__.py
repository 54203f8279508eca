"""The retrieval corpus: timm, transformers, torchvision and NAS-space architectures as graphs.

``build_corpus`` extracts every architecture of each source into an
:class:`~nar_plugin.graph.ArchGraph` in worker processes (cached, versioned, resumable);
``load_corpus`` reads it back as :class:`CorpusItem` objects whose ``family`` is the retrieval
label. See ``docs/corpus.md`` for the family rules and the built corpus' statistics.

Nothing here is imported by ``import nar_plugin``; the heavy libraries (timm, transformers,
torchvision) are only imported inside the worker processes and the planners that need them.
"""

from __future__ import annotations

from nar_plugin.corpus.build import (
    CorpusSummary,
    SourceSummary,
    build_corpus,
    corpus_stats,
    default_corpus_dir,
)
from nar_plugin.corpus.options import SOURCES, CorpusOptions
from nar_plugin.corpus.store import (
    CORPUS_FORMAT_VERSION,
    CorpusItem,
    StaleCorpusError,
    load_corpus,
    load_records,
)

__all__ = [
    "CORPUS_FORMAT_VERSION",
    "SOURCES",
    "CorpusItem",
    "CorpusOptions",
    "CorpusSummary",
    "SourceSummary",
    "StaleCorpusError",
    "build_corpus",
    "corpus_stats",
    "default_corpus_dir",
    "load_corpus",
    "load_records",
]
