"""Load the built cross-library benchmark as :class:`CrossLibItem` objects."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.graph import ArchGraph

__all__ = ["CrossLibItem", "identical_network_labels", "load_cross_library"]


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


def identical_network_labels(items: Sequence[CrossLibItem], labels: Sequence[str]) -> list[str]:
    """``labels`` with every two labels merged whose models include one and the same network:
    an equal graph hash **and** an equal parameter count (``graph.metadata["num_params"]``).

    A diagnostic, not the benchmark's ground truth: labels of networks a paper calls one (HuBERT
    and wav2vec 2.0, DeiT and ViT) are already one label
    (:data:`~nar_plugin.corpus.crosslib.families.SAME_NETWORK`); what this still merges are
    pairs with one graph and one parameter count under two names no paper equates (pytorchcv's
    ``resneta18`` and timm's ``resnet18d``), where a method that finds the other first is scored
    wrong. Each merged group takes its alphabetically first label."""
    parent = {lab: lab for lab in labels}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple[str, Any], str] = {}
    for it, lab in zip(items, labels):
        params = it.graph.metadata.get("num_params")
        if not params:
            continue
        key = (it.graph.graph_hash, params)
        if key in first:
            a, b = find(first[key]), find(lab)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[key] = lab
    return [find(lab) for lab in labels]
