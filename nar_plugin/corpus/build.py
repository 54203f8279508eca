"""``build_corpus``: plan every source, run items in worker processes, cache, summarise.

The build is a fixpoint per source: ``plan(records, options)`` lists every task the source
wants given what is already recorded; tasks whose key is recorded are skipped; the rest run in
the :class:`~nar_plugin.corpus.pool.WorkerPool` and are appended to the shard as they finish.
Planning again after a round lets a source add follow-up tasks (transformers' depth/width
variants of the model types that built). A restarted build therefore resumes where it stopped
and a finished build re-run builds nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.corpus.options import SOURCES, CorpusOptions
from nar_plugin.corpus.pool import SOURCE_MODULES, WorkerPool
from nar_plugin.corpus.store import CorpusStore, load_records
from nar_plugin.utils.progress import Progress

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusSummary",
    "SourceSummary",
    "build_corpus",
    "corpus_stats",
    "default_corpus_dir",
]

FLUSH_EVERY = 25
FLUSH_SECONDS = 10.0


def default_corpus_dir() -> Path:
    """``<repo>/corpus`` when nar_plugin is imported from a source checkout (a ``pyproject.toml``
    next to the package, as with ``pip install -e``), else ``nar_home()/corpus``."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "nar_plugin").is_dir():
        return repo / "corpus"
    from nar_plugin.config import nar_home

    return nar_home() / "corpus"


# plain counter fields, alike in shape to other reports' fields, not shared logic (shape-alike pairs listed by `duplicates` are deliberate: see docs/architecture.md, "Layout decisions")
@dataclass
class SourceSummary:
    """Counts of one source: the whole corpus (``items``...) and this run (``tried``...)."""

    source: str
    items: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    families: int = 0
    tried: int = 0
    built: int = 0
    failed: int = 0
    cached: int = 0
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def graphs_per_minute(self) -> float:
        return 60.0 * self.built / self.seconds if self.seconds > 0 and self.built else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items, "ok": self.ok, "error": self.error, "skipped": self.skipped,
            "families": self.families,
            "last_build": {"tried": self.tried, "built": self.built, "failed": self.failed,
                           "cached": self.cached, "seconds": round(self.seconds, 1),
                           "graphs_per_minute": round(self.graphs_per_minute, 1)},
            "top_failures": dict(self.reasons.most_common(10)),
        }


@dataclass
class CorpusSummary:
    """What a build produced; ``render()`` gives the table the CLI prints."""

    out_dir: Path
    sources: dict[str, SourceSummary]
    seconds: float = 0.0
    workers: int = 0
    size_bytes: int = 0

    @property
    def total_ok(self) -> int:
        return sum(s.ok for s in self.sources.values())

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "seconds": round(self.seconds, 1), "workers": self.workers,
                "size_bytes": self.size_bytes, "sources": {k: v.to_dict() for k, v in self.sources.items()}}

    def render(self) -> Any:
        """A ``rich.table.Table``: per source corpus counts, this run's work and top failures."""
        from rich.table import Table

        t = Table(title=f"corpus {self.out_dir} ({self.size_bytes / 1e6:.1f} MB, {self.seconds / 60:.1f} min)")
        for col in ("source", "items", "ok", "failed", "skipped", "families", "run: tried", "built",
                    "graphs/min", "top failure reasons"):
            t.add_column(col, overflow="fold")
        for s in self.sources.values():
            reasons = "\n".join(f"{n} x {r}" for r, n in s.reasons.most_common(3))
            t.add_row(s.source, str(s.items), str(s.ok), str(s.error), str(s.skipped), str(s.families),
                      str(s.tried), str(s.built), f"{s.graphs_per_minute:.0f}", reasons)
        return t


def _source_module(source: str) -> Any:
    if source not in SOURCE_MODULES:
        raise ValueError(f"unknown corpus source {source!r}; expected some of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCE_MODULES[source])


def _fill_totals(s: SourceSummary, records: Iterable[Mapping[str, Any]]) -> None:
    st: Counter[str] = Counter()
    fams: set[str] = set()
    reasons: Counter[str] = Counter()
    for r in records:
        st[r["status"]] += 1
        if r["status"] == "ok":
            fams.add(r["family"])
        else:
            reasons[r.get("category") or r.get("reason", "?")] += 1
    s.items, s.ok, s.error, s.skipped = sum(st.values()), st["ok"], st["error"], st["skipped"]
    s.families = len(fams)
    s.reasons = reasons


def build_corpus(sources: Sequence[str] = SOURCES, out_dir: str | os.PathLike[str] | None = None,
                 workers: int = 2, limit: int | None = None, progress: bool = True, *,
                 options: CorpusOptions | None = None, rebuild: bool = False) -> CorpusSummary:
    """Build (or resume) the retrieval corpus.

    Args:
        sources: any of ``timm``, ``transformers``, ``torchvision``, ``nas``, built in this order.
        out_dir: corpus directory (default :func:`default_corpus_dir`).
        workers: worker processes (each uses one torch thread).
        limit: at most this many base entries per source (overrides ``options.limit``).
        progress: progress bars on a terminal, periodic log lines otherwise.
        options: everything else (:class:`~nar_plugin.corpus.options.CorpusOptions`).
        rebuild: delete a stale (other format/vocabulary version) corpus instead of raising.

    Returns:
        A :class:`CorpusSummary` (also saved into ``manifest.json``).

    Raises:
        StaleCorpusError: the cache has another format/vocabulary version and ``rebuild`` is false.
        ValueError: an unknown source or a bad option.

    Example:
        >>> s = build_corpus(["timm"], "corpus", workers=2, limit=20)
        >>> s.sources["timm"].ok
    """
    opts = options or CorpusOptions()
    if limit is not None:
        opts = dataclasses.replace(opts, limit=limit)
    sources = list(dict.fromkeys(sources))
    mods = {s: _source_module(s) for s in sources}
    out = Path(out_dir) if out_dir is not None else default_corpus_dir()
    store = CorpusStore(out, rebuild=rebuild)
    summary = CorpusSummary(out, {s: SourceSummary(s) for s in sources}, workers=workers)
    t_all = time.perf_counter()
    with WorkerPool(workers, warm=sources, timeout_s=opts.timeout_s) as pool, Progress(enabled=None if progress else False, log_every=30.0 if progress else 0.0,
                                                                      counters=("ok", "failed")) as bar:
        for src in sources:
            _build_source(src, mods[src], store, opts, pool, bar, summary.sources[src])
    summary.seconds = time.perf_counter() - t_all
    summary.size_bytes = store.size_bytes()
    return summary


def _build_source(src: str, mod: Any, store: CorpusStore, opts: CorpusOptions, pool: WorkerPool,
                  bar: Progress, s: SourceSummary) -> None:
    records = {r["key"]: r for r in store.records(src, repair=True)}
    if opts.retry_failed:
        failed = [k for k, r in records.items() if r["status"] == "error"]
        if failed:
            store.drop(src, failed)
            for k in failed:
                del records[k]
            logger.info("%s: retrying %d failed items", src, len(failed))
    s.cached = len(records)
    t0 = time.perf_counter()
    buffer: list[dict[str, Any]] = []
    last_flush = [time.monotonic()]

    def flush() -> None:
        store.append(src, buffer)
        buffer.clear()
        last_flush[0] = time.monotonic()

    def on_result(rec: dict[str, Any]) -> None:
        records[rec["key"]] = rec
        buffer.append(rec)
        s.tried += 1
        s.built += rec["status"] == "ok"
        s.failed += rec["status"] == "error"
        bar.advance(task=src, ok=int(rec["status"] == "ok"), failed=int(rec["status"] == "error"))
        if len(buffer) >= FLUSH_EVERY or time.monotonic() - last_flush[0] > FLUSH_SECONDS:
            flush()

    planned = 0
    try:
        while True:
            tasks = [t for t in mod.plan(records, opts) if t.key not in records]
            if not tasks:
                break
            planned += len(tasks)
            logger.info("%s: %d items to build (%d cached)", src, len(tasks), s.cached)
            bar.add_task(src, len(tasks))
            pool.run(tasks, on_result)
            flush()
    finally:
        if buffer:
            flush()
        s.seconds = time.perf_counter() - t0
        _fill_totals(s, records.values())
        if planned or s.tried:
            store.compact(src)
        store.update_source_stats(src, s.to_dict() if s.tried else {
            k: v for k, v in s.to_dict().items() if k != "last_build"})


def corpus_stats(out_dir: str | os.PathLike[str] | None = None,
                 sources: Sequence[str] | None = None) -> CorpusSummary:
    """Summarise an existing corpus without building (``last_build`` timings from the manifest)."""
    out = Path(out_dir) if out_dir is not None else default_corpus_dir()
    store = CorpusStore(out, create=False)
    srcs = list(sources) if sources is not None else store.sources()
    summary = CorpusSummary(out, {}, size_bytes=store.size_bytes())
    for src in srcs:
        s = SourceSummary(src)
        _fill_totals(s, load_records(out, [src]))
        last = store.manifest.get("sources", {}).get(src, {}).get("last_build", {})
        s.tried, s.built, s.failed = last.get("tried", 0), last.get("built", 0), last.get("failed", 0)
        s.seconds = last.get("seconds", 0.0)
        summary.sources[src] = s
    return summary
