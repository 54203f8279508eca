""":func:`bulk_index`: index many sources with one engine, serial (``local``) or Ray (``ray``).

Both engines run the same stages (:mod:`nar_plugin.bulk.stages`) and hand their outcomes to
the same :class:`~nar_plugin.bulk.writer.Writer`, so they write identical entries: same keys,
same graph hashes, embeddings equal to float tolerance (tested).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.bulk.sources import Source, dedupe
from nar_plugin.bulk.stages import embed_outcomes, extract_source, known_revision
from nar_plugin.bulk.writer import FAILURES_NAME, Failure, Writer, indexed_revisions

__all__ = ["ENGINES", "BulkOptions", "BulkReport", "bulk_index", "choose_engine"]

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def choose_engine(engine: str | None = None) -> str:
    """``local`` or ``ray``; ``None`` / ``auto``: ``ray`` when ``RAY_ADDRESS`` is set, else ``local``.

    Raises:
        ValueError: another name.
    """
    if engine in (None, "auto"):
        return "ray" if os.environ.get("RAY_ADDRESS") else "local"
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (or auto), found {engine!r}")
    return engine


@dataclass(frozen=True)
class BulkOptions:
    """How a bulk run works.

    Attributes:
        engine: ``local`` (serial, in this process), ``ray`` or ``auto`` (``ray`` when
            ``RAY_ADDRESS`` is set).
        workers: Ray extraction workers (default: the cluster's CPUs less one). The local
            engine is serial: more than one worker there is an error.
        resume: skip sources already indexed (by a bulk run) at the same revision.
        batch_size: sources per embedding batch and per index write transaction.
        index: an ``EmbeddingIndex`` or a path (default: the index under ``NAR_HOME``).
        failures_path: JSONL file of the run's failures (default: ``bulk-failures.jsonl`` in
            the index folder; ``False``: none).
        progress: ``None``: a bar on a terminal; ``True`` / ``False``: always / never.
        device: where Ray's embed actor runs: ``auto`` (a GPU when the cluster has one), ``cpu``.
        hf_cache_dir, token: for HF sources.
        ray_init: extra ``ray.init`` arguments (a local cluster's ``num_cpus``...).
        ray_shutdown: shut Ray down at the end when the run started it.
    """

    engine: str = "auto"
    workers: int | None = None
    resume: bool = False
    batch_size: int = 64
    index: Any = None
    failures_path: str | Path | bool | None = None
    progress: bool | None = None
    device: str = "auto"
    hf_cache_dir: str | Path | None = None
    token: str | bool | None = None
    ray_init: dict[str, Any] = field(default_factory=dict)
    ray_shutdown: bool = True


@dataclass
class BulkReport:
    """What a bulk run did.

    Attributes:
        engine: ``local`` or ``ray``.
        total: sources asked for (after dropping repeats).
        indexed: sids written; ``keys_written``: index entries written (an MLflow model and
            its versions are one source, several keys).
        skipped: sids already indexed at the same revision (``resume``).
        failed: one :class:`~nar_plugin.bulk.writer.Failure` per source that failed.
        seconds: wall time of the run.
        workers: ``host:pid`` of each extraction process -> its peak RSS (MiB).
        extract_s, embed_s: CPU-side seconds summed over sources, per stage.
        source_seconds: sid -> seconds of its fetch + extract + share of its embed batch.
        engine_info: what the engine reported (Ray: workers, device, ``init_s``, ``first_batch_s``).
        failures_path: where the failures were written.
    """

    engine: str
    total: int
    indexed: list[str] = field(default_factory=list)
    keys_written: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    workers: dict[str, float] = field(default_factory=dict)
    extract_s: float = 0.0
    embed_s: float = 0.0
    source_seconds: dict[str, float] = field(default_factory=dict)
    engine_info: dict[str, Any] = field(default_factory=dict)
    failures_path: str | None = None

    @property
    def ok(self) -> bool:
        """No source failed."""
        return not self.failed

    @property
    def per_minute(self) -> float:
        """Sources indexed per minute of wall time."""
        return 60.0 * len(self.indexed) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``nar index bulk --json``)."""
        return {"engine": self.engine, "total": self.total, "indexed": len(self.indexed),
                "keys_written": self.keys_written, "skipped": len(self.skipped),
                "failed": [f.__dict__ for f in self.failed], "seconds": round(self.seconds, 3),
                "per_minute": round(self.per_minute, 2), "extract_s": round(self.extract_s, 3),
                "embed_s": round(self.embed_s, 3),
                "workers": {w: round(m, 1) for w, m in self.workers.items()},
                "engine_info": self.engine_info, "failures_path": self.failures_path}


def _run_local(todo: list[tuple[Source, str | None]], writer: Writer, opts: BulkOptions) -> dict[str, Any]:
    """The serial engine: the same stages, one source after another, a batch at a time."""
    from nar_plugin.model.inference import load_encoder

    enc = load_encoder()
    for start in range(0, len(todo), opts.batch_size):
        chunk = [extract_source(s, prev, hf_cache_dir=opts.hf_cache_dir, token=opts.token)
                 for s, prev in todo[start:start + opts.batch_size]]
        writer.add(embed_outcomes(chunk, enc))
        writer.flush()
    return {"workers": 1, "device": "cpu"}


def bulk_index(sources: Iterable[Source], options: BulkOptions | None = None) -> BulkReport:
    """Index many sources: fetch, build on meta, extract, embed, write (in batches).

    A source that fails is recorded (report and failures file), not raised. With
    ``options.resume``, a source already indexed by a bulk run at the same revision is skipped,
    before dispatch when its revision is known up front (timm names, HF listings, MLflow
    listings), else right after resolving it.

    Args:
        sources: what to index (repeats are dropped).
        options: engine, workers, resume, batch size, index... (:class:`BulkOptions`).

    Returns:
        A :class:`BulkReport`.

    Raises:
        ValueError: a bad engine, ``batch_size`` < 1, or ``workers`` > 1 with the local engine.
        MissingDependencyError: the Ray engine without Ray (``pip install 'nar-plugin[ray]'``).
        EncoderVersionMismatchError: the index holds another encoder's embeddings.
        IndexLockedError, IndexReadOnlyError: the index cannot be written.

    Example:
        >>> report = bulk_index([Source("timm", "resnet18")], BulkOptions(engine="local"))
        >>> report.indexed
        ['timm:resnet18']
    """
    from nar_plugin.search.api import open_index
    from nar_plugin.utils.progress import Progress

    opts = options or BulkOptions()
    engine = choose_engine(opts.engine)
    if opts.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {opts.batch_size}")
    if opts.workers is not None and opts.workers < 1:
        raise ValueError(f"workers must be >= 1, found {opts.workers}")
    if engine == "local" and (opts.workers or 1) > 1:
        raise ValueError(f"the local engine is serial; {opts.workers} workers need the Ray engine "
                         "(--engine ray, pip install 'nar-plugin[ray]')")
    t0 = time.perf_counter()
    todo_sources = dedupe(sources)
    idx = open_index(opts.index)
    previous = indexed_revisions(idx) if opts.resume else {}
    failures = None if opts.failures_path is False else Path(opts.failures_path or Path(idx.path) / FAILURES_NAME)
    report = BulkReport(engine, len(todo_sources), failures_path=str(failures) if failures else None)
    with Progress("bulk indexing", total=len(todo_sources), enabled=opts.progress,
                  counters=("ok", "skipped", "failed"), log_every=30.0) as bar:
        writer = Writer(idx, opts.batch_size, failures, bar)
        todo: list[tuple[Source, str | None]] = []
        for s in todo_sources:
            prev = previous.get(s.sid)
            if prev is not None and known_revision(s) == prev:
                writer.skip(s.sid)  # known up front: never dispatched
            else:
                todo.append((s, prev))
        logger.info("bulk: %d sources, %d to run (%s engine)", len(todo_sources), len(todo), engine)
        if todo and engine == "ray":
            from nar_plugin.bulk.ray_engine import run_ray

            report.engine_info = run_ray(todo, writer, workers=opts.workers, batch_size=opts.batch_size,
                                         device=opts.device, hf_cache_dir=opts.hf_cache_dir, token=opts.token,
                                         init_kwargs=opts.ray_init, shutdown=opts.ray_shutdown)
        elif todo:
            report.engine_info = _run_local(todo, writer, opts)
        writer.flush()
    report.indexed, report.keys_written, report.skipped = writer.indexed, writer.keys_written, writer.skipped
    report.failed = sorted(writer.failed, key=lambda f: f.source)
    report.workers, report.extract_s, report.embed_s = writer.workers, writer.extract_s, writer.embed_s
    report.source_seconds = writer.source_seconds
    report.seconds = time.perf_counter() - t0
    return report
