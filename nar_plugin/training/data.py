"""Training data: corpus items, their selection and split, and family-packed batches.

The same selection and split serve ``nar train``, ``nar eval`` (:mod:`nar_plugin.evaluation.runner`)
and the threshold calibration, so every method is trained and judged on the same items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nar_plugin.evaluation.splits import Split, split_by_family, split_by_model
from nar_plugin.graph import ArchGraph

__all__ = ["NAS_SOURCES", "CorpusEntry", "load_training_corpus", "make_split", "pk_batches", "select_items"]


@dataclass(frozen=True)
class CorpusEntry:
    """The fields training needs from a corpus item."""

    key: str
    family: str
    graph: ArchGraph
    source: str = ""


CorpusDirs = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def load_training_corpus(corpus_dir: CorpusDirs, sources: Sequence[str] | None = None) -> list[CorpusEntry]:
    """Load a corpus (or several: a list of directories) as :class:`CorpusEntry` items, sorted
    by key; a key present in two directories is kept once (first directory wins).

    A directory with the corpus ``manifest.json`` is read with
    :func:`nar_plugin.corpus.load_corpus` (``dedupe=True``: one copy of an identical graph per
    family); otherwise every ``*.jsonl`` file in it is read as records with ``key``, ``family``
    and ``graph`` (an :meth:`ArchGraph.to_dict`), optionally ``source`` and ``status``.

    Args:
        corpus_dir: a directory or a sequence of directories.
        sources: keep only items of these sources (``None``: all).

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    if not isinstance(corpus_dir, (str, os.PathLike)):
        merged: dict[str, CorpusEntry] = {}
        for d in corpus_dir:
            for e in load_training_corpus(d, sources):
                merged.setdefault(e.key, e)
        return sorted(merged.values(), key=lambda e: e.key)
    root = Path(corpus_dir)
    if (root / "manifest.json").is_file():
        from nar_plugin.corpus import load_corpus

        items = load_corpus(root, sources, dedupe=True)
        out = [CorpusEntry(it.key, it.family, it.graph, it.source) for it in items]
    else:
        files = sorted(root.glob("*.jsonl")) if root.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no corpus at {root}: expected manifest.json (nar corpus build) "
                                    "or *.jsonl records")
        out = [e for f in files for e in _read_jsonl(f, sources)]
    out.sort(key=lambda e: e.key)
    return out


def _read_jsonl(path: Path, sources: Sequence[str] | None) -> list[CorpusEntry]:
    out = []
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("status", "ok") != "ok":
                continue
            src = str(rec.get("source", ""))
            if sources is not None and src not in sources:
                continue
            out.append(CorpusEntry(str(rec["key"]), str(rec["family"]), ArchGraph.from_dict(rec["graph"]), src))
    return out


#: Corpus sources of generated NAS cells (capped by ``nas_fraction``).
NAS_SOURCES = frozenset({"nas"})


def select_items(entries: Sequence[CorpusEntry], max_nodes: int, max_per_family: int,
                 seed: int, nas_fraction: float = 0.0) -> list[CorpusEntry]:
    """Keep graphs with ``2..max_nodes`` nodes and at most ``max_per_family`` per family; then,
    with ``nas_fraction > 0``, drop whole NAS families (seeded) until NAS items are at most that
    fraction of the result.

    The per-family subsample is drawn with ``np.random.default_rng(seed)`` from the key-sorted
    members; the result is sorted by key.
    """
    fams: dict[str, list[CorpusEntry]] = {}
    for e in sorted(entries, key=lambda e: e.key):
        if 2 <= e.graph.num_nodes <= max_nodes:
            fams.setdefault(e.family, []).append(e)
    rng = np.random.default_rng(seed)
    out: list[CorpusEntry] = []
    for fam in sorted(fams):
        members = fams[fam]
        if max_per_family and len(members) > max_per_family:
            pick = np.sort(rng.choice(len(members), size=max_per_family, replace=False))
            members = [members[int(i)] for i in pick]
        out.extend(members)
    if nas_fraction > 0:
        out = _cap_nas(out, nas_fraction, rng)
    out.sort(key=lambda e: e.key)
    return out


def _cap_nas(items: list[CorpusEntry], fraction: float, rng: np.random.Generator) -> list[CorpusEntry]:
    nas_fams: dict[str, int] = {}
    for e in items:
        if e.source in NAS_SOURCES:
            nas_fams[e.family] = nas_fams.get(e.family, 0) + 1
    other = len(items) - sum(nas_fams.values())
    if not other:  # a NAS-only corpus: nothing to balance against
        return items
    budget = int(fraction / (1.0 - fraction) * other)
    names = sorted(nas_fams)
    keep: set[str] = set()
    used = 0
    for i in rng.permutation(len(names)):
        fam = names[int(i)]
        if used + nas_fams[fam] <= budget:
            keep.add(fam)
            used += nas_fams[fam]
    return [e for e in items if e.source not in NAS_SOURCES or e.family in keep]


def make_split(entries: Sequence[CorpusEntry], name: str, seed: int, test_frac: float = 0.2) -> Split:
    """:func:`split_by_model` / :func:`split_by_family` over ``entries`` (keys recorded), or
    ``"none"``: everything is training.

    Raises:
        ValueError: an unknown split name.
    """
    families = [e.family for e in entries]
    keys = [e.key for e in entries]
    if name == "by_model":
        return split_by_model(families, test_frac=test_frac, seed=seed, keys=keys)
    if name == "by_family":
        return split_by_family(families, test_frac=test_frac, seed=seed, keys=keys)
    if name == "none":
        return Split("none", np.arange(len(entries)), np.zeros(0, dtype=np.int64), seed,
                     len(entries), "", {})
    raise ValueError(f"unknown split {name!r}: expected 'by_model', 'by_family' or 'none'")


def pk_batches(codes: np.ndarray, per_family: int, batch_size: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches built from same-family chunks, so that anchors have positives.

    Each family's (shuffled) members are cut into chunks of ``per_family``; chunks are shuffled
    and packed into batches of at least ``batch_size`` (the last one may be smaller; chunks are
    never split). Every item appears exactly once per epoch.

    Args:
        codes: ``[N]`` integer family code per item.
        per_family: items of one family put next to each other.
        batch_size: items per batch (approximate, see above).
        rng: the generator of both shuffles.

    Returns:
        Arrays of item indices into ``codes``.
    """
    chunks: list[np.ndarray] = []
    for fam in np.unique(codes):
        members = np.flatnonzero(codes == fam)
        members = members[rng.permutation(members.size)]
        chunks.extend(members[i:i + per_family] for i in range(0, members.size, per_family))
    batches: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    size = 0
    for ci in rng.permutation(len(chunks)):
        cur.append(chunks[ci])
        size += chunks[ci].size
        if size >= batch_size:
            batches.append(np.concatenate(cur))
            cur, size = [], 0
    if cur:
        batches.append(np.concatenate(cur))
    return batches
