"""Load the built cross-library benchmark as :class:`CrossLibItem` objects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.graph import ArchGraph

__all__ = ["CrossLibItem", "load_cross_library"]


@dataclass(frozen=True)
class CrossLibItem:
    """One extracted benchmark model.

    Attributes:
        key: ``<library>:<name>`` (manifest key).
        library: the library that wrote the model's code.
        family: canonical family (relevance for MAP / MRR).
        fine: fine label (same network across libraries).
        graph: the extracted graph.
        aten_ops: ATen operator -> calls in one eager meta forward (empty when not recorded).
        info: the rest of the record's provenance (tracer, input shape, seconds...).
    """

    key: str
    library: str
    family: str
    fine: str
    graph: ArchGraph
    aten_ops: Mapping[str, int] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


def load_cross_library(root: str | os.PathLike[str] | None = None) -> list[CrossLibItem]:
    """Every successfully extracted manifest row, in manifest order.

    Rows whose record is missing or failed are left out (see
    :func:`~nar_plugin.corpus.crosslib.build.coverage` for why).

    Raises:
        FileNotFoundError: no manifest / no graphs at ``root``.
        StaleCorpusError: graphs stored with another corpus format or vocabulary version.
    """
    from nar_plugin.corpus.crosslib.build import graphs_dir
    from nar_plugin.corpus.crosslib.manifest import default_dir, load_manifest
    from nar_plugin.corpus.store import load_records

    base = Path(root) if root is not None else default_dir()
    rows = load_manifest(base / "manifest.json")
    recs = {r["key"]: r for r in load_records(graphs_dir(base)) if r.get("status") == "ok"}
    out = []
    for row in rows:
        rec = recs.get(row.key)
        if rec is None:
            continue
        info = dict(rec.get("info") or {})
        aten = info.pop("aten_ops", {}) or {}
        out.append(CrossLibItem(row.key, row.library, row.family, row.fine, ArchGraph.from_dict(rec["graph"]),
                                aten, info))
    return out
