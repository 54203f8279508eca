"""Build the benchmark's graphs: every manifest row on meta, one worker, per-model timeout.

Graphs are stored with the main corpus' :class:`~nar_plugin.corpus.store.CorpusStore` under
``corpus/cross_library/graphs/`` (versioned ``manifest.json`` + one gzip-JSONL shard per
library). Every row leaves a record: ``ok`` with the graph, or ``error`` with the reason. The
build is resumable (keys already recorded are skipped; ``retry_failed`` rebuilds failures).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nar_plugin.corpus.crosslib.libraries import LIBRARIES, Candidate
from nar_plugin.corpus.crosslib.manifest import default_dir, load_manifest
from nar_plugin.corpus.pool import Task, WorkerPool
from nar_plugin.corpus.store import CorpusStore

__all__ = ["build_cross_library", "coverage", "graphs_dir"]

logger = logging.getLogger(__name__)

FLUSH_EVERY = 25
FLUSH_SECONDS = 10.0


def graphs_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/graphs`` (default root: :func:`~nar_plugin.corpus.crosslib.manifest.default_dir`)."""
    return (Path(root) if root is not None else default_dir()) / "graphs"


def _task(c: Candidate) -> Task:
    return Task(c.key, "crosslib", c.name, c.family, {"library": c.library, "fine": c.fine, "build": dict(c.build)})


def build_cross_library(root: str | os.PathLike[str] | None = None, *, libraries: Sequence[str] | None = None,
                        limit: int | None = None, timeout_s: float = 120.0, workers: int = 1,
                        retry_failed: bool = False, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Extract every manifest row not yet recorded; returns per-library counts of this run.

    Must run with the third-party libraries importable by spawned workers (inside
    :func:`~nar_plugin.corpus.crosslib.install.on_path`, which sets ``PYTHONPATH``).

    Args:
        root: benchmark directory holding ``manifest.json`` (graphs go to ``root/graphs``).
        libraries: only these libraries.
        limit: at most this many rows per library (a quick partial build).
        timeout_s: per-model wall-clock limit (recorded as ``timeout``).
        workers: processes (1 keeps a 2-core machine usable).
        retry_failed: rebuild rows recorded as ``error``.
        keys: only these manifest keys.
    """
    base = Path(root) if root is not None else default_dir()
    rows = load_manifest(base / "manifest.json")
    if libraries is not None:
        unknown = set(libraries) - set(LIBRARIES)
        if unknown:
            raise ValueError(f"unknown libraries {sorted(unknown)}; expected some of {LIBRARIES}")
        rows = [r for r in rows if r.library in libraries]
    if keys is not None:
        wanted = set(keys)
        rows = [r for r in rows if r.key in wanted]
    store = CorpusStore(graphs_dir(base))
    done: dict[str, dict[str, Any]] = {}
    for lib in store.sources():
        recs = store.records(lib, repair=True)
        if retry_failed:
            failed = [r["key"] for r in recs if r["status"] != "ok"]
            if failed:
                store.drop(lib, failed)
            recs = [r for r in recs if r["status"] == "ok"]
        done.update({r["key"]: r for r in recs})
    per_lib: dict[str, list[Candidate]] = defaultdict(list)
    for r in rows:
        if r.key not in done:
            per_lib[r.library].append(r)
    todo = [t for lib in LIBRARIES for t in (per_lib[lib][:limit] if limit is not None else per_lib[lib])]
    lib_of = {r.key: r.library for r in rows}
    stats: dict[str, dict[str, Any]] = {lib: {"tried": 0, "ok": 0, "error": 0, "seconds": 0.0}
                                        for lib in LIBRARIES if per_lib.get(lib)}
    logger.info("cross-library build: %d models to extract (%d already recorded)", len(todo), len(done))
    if not todo:
        return stats
    pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
    last_flush = time.monotonic()
    t0 = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        for lib, recs in pending.items():
            if recs:
                store.append(lib, recs)
        pending.clear()
        last_flush = time.monotonic()

    def on_result(rec: dict[str, Any]) -> None:
        lib = lib_of.get(rec["key"], rec["key"].split(":", 1)[0])
        rec["source"] = lib
        s = stats[lib]
        s["tried"] += 1
        s["ok" if rec["status"] == "ok" else "error"] += 1
        s["seconds"] += float(rec.get("seconds", 0.0))
        pending[lib].append(rec)
        n = sum(v["tried"] for v in stats.values())
        if rec["status"] != "ok":
            logger.info("%s: %s", rec["key"], rec.get("reason", "")[:160])
        if n % 25 == 0:
            logger.info("%d/%d models, %.1f min", n, len(todo), (time.monotonic() - t0) / 60)
        if sum(len(v) for v in pending.values()) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
            flush()

    try:
        with WorkerPool(workers, warm=("crosslib",), timeout_s=timeout_s) as pool:
            pool.run([_task(t) for t in todo], on_result)
    finally:
        flush()
        for lib in store.sources():
            store.compact(lib)
        elapsed = time.monotonic() - t0
        store.update_source_stats("crosslib", {"last_build_seconds": round(elapsed, 1),
                                               "last_build": {k: {**v, "seconds": round(v["seconds"], 1)}
                                                              for k, v in stats.items()}})
        logger.info("cross-library build finished in %.1f min", elapsed / 60)
    return stats


def coverage(root: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per library: manifest rows, ok, failed, missing (not built yet), and failure reasons."""
    from nar_plugin.corpus.store import load_records

    base = Path(root) if root is not None else default_dir()
    rows = load_manifest(base / "manifest.json")
    recs = {r["key"]: r for r in load_records(graphs_dir(base))}
    out: dict[str, dict[str, Any]] = {}
    for lib in LIBRARIES:
        mine = [r for r in rows if r.library == lib]
        if not mine:
            continue
        ok = [r for r in mine if recs.get(r.key, {}).get("status") == "ok"]
        bad = [recs[r.key] for r in mine if r.key in recs and recs[r.key]["status"] != "ok"]
        reasons = Counter(b.get("category", b.get("reason", "?")) for b in bad)
        tracers = Counter(recs[r.key]["info"].get("tracer", "?") for r in ok)
        out[lib] = {"models": len(mine), "ok": len(ok), "failed": len(bad),
                    "missing": len(mine) - len(ok) - len(bad), "tracers": dict(tracers),
                    "failures": {b["key"]: b.get("reason", "") for b in bad}, "reasons": dict(reasons)}
    return out
