"""Worker processes for corpus builds: per-item timeout, crash isolation, bounded memory.

Each worker is a ``spawn``-ed process with ``torch.set_num_threads(1)`` that imports the
extractors once, then runs :class:`Task` objects sent over a pipe and answers with a shard
record (:func:`~nar_plugin.corpus.store.make_record`). The parent enforces a wall-clock limit per
task by killing the worker (recorded as ``timeout``), turns a dead worker into a ``worker
crashed`` record, and retires workers whose memory grew past a limit. One bad model therefore
never stops a build.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from nar_plugin.corpus.store import make_record

logger = logging.getLogger(__name__)

__all__ = ["Task", "SkipItem", "WorkerPool", "run_task", "failure_category", "normalise_category", "SOURCE_MODULES"]

#: source name -> module with ``build_task(task) -> (ArchGraph, info)`` and ``WARM_IMPORTS``.
SOURCE_MODULES: dict[str, str] = {
    "timm": "nar_plugin.corpus.timm_source",
    "transformers": "nar_plugin.corpus.transformers_source",
    "torchvision": "nar_plugin.corpus.torchvision_source",
    "nas": "nar_plugin.corpus.nas",
    # the cross-library benchmark's models (not a training source; see docs/cross-library.md)
    "crosslib": "nar_plugin.corpus.crosslib.worker",
}


@dataclass(frozen=True)
class Task:
    """One corpus item to build.

    Attributes:
        key: unique corpus key (see :class:`~nar_plugin.corpus.store.CorpusItem`).
        source: source name (a key of :data:`SOURCE_MODULES`).
        name: model name.
        family: retrieval family label.
        spec: JSON-able parameters the source's ``build_task`` reads.
    """

    key: str
    source: str
    name: str
    family: str
    spec: Mapping[str, Any] = field(default_factory=dict)


class SkipItem(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a source's ``build_task`` to record an item as ``skipped`` with a reason."""


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_NUM = re.compile(r"\d+")
_CLASS = re.compile(r"\b[A-Z][A-Za-z0-9]*(Config|Model|For[A-Z][A-Za-z]*)\b")
_BUILD = re.compile(r"^\w+: (transformers|timm) cannot build [^:]*?: ")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def failure_category(e: BaseException) -> str:
    """A coarse, countable reason: exception type plus its message with names/numbers masked.

    For a :class:`~nar_plugin.errors.GraphExtractionError` the last tracer's error is used
    (``export: AttributeError: ...``), since that is the one that finally failed.
    """
    attempts = getattr(e, "attempts", None)
    if attempts:
        tracer, msg = list(attempts.items())[-1]
        text = f"{tracer}: {msg}"
    else:
        text = f"{type(e).__name__}: {_first_line(e)}"
    return normalise_category(text)


def normalise_category(text: str) -> str:
    """Mask model-specific parts (quoted names, class names, numbers) so reasons can be counted."""
    text = _BUILD.sub("build: ", text.replace("_Failure: ", "UnsupportedModelError: ", 1))
    text = _NUM.sub("N", _CLASS.sub("<class>", _QUOTED.sub("'…'", text)))
    return text.split(" (no AutoModel entry")[0].split(" (no <class> entry")[0][:100]


def run_task(task: Task) -> dict[str, Any]:
    """Build one task into a record; never raises (failures become ``error`` records)."""
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict[str, Any] = {}
    try:
        mod = importlib.import_module(SOURCE_MODULES[task.source])
        graph, info = mod.build_task(task)
    except SkipItem as e:
        return make_record(task.key, task.source, task.name, task.family, "skipped", reason=str(e),
                           category=f"skipped: {str(e)[:70]}", seconds=time.perf_counter() - t0,
                           info=getattr(e, "info", None) or {})
    except Exception as e:  # noqa: BLE001 - the build must survive any model's failure
        reason = f"{type(e).__name__}: {_first_line(e)}"[:400]
        return make_record(task.key, task.source, task.name, task.family, "error", reason=reason,
                           category=failure_category(e), seconds=time.perf_counter() - t0,
                           info=getattr(e, "corpus_info", None) or {})
    info = {**info, "cpu_seconds": round(time.process_time() - c0, 3)}  # load-independent cost
    graph.metadata.setdefault("name", task.name)
    graph.metadata["corpus_key"] = task.key
    graph.metadata["family"] = task.family
    return make_record(task.key, task.source, task.name, task.family, "ok", graph=graph,
                       seconds=time.perf_counter() - t0, info=info)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_main(conn: Connection, warm: tuple[str, ...], threads: int) -> None:
    """Worker loop: warm imports, then ``Task`` in -> record out until ``None`` arrives."""
    import warnings

    from nar_plugin.config import NAR_DEBUG

    if not NAR_DEBUG.get():
        # tracers print graph dumps and tracebacks of the failures we record anyway; keep the
        # build's log readable (NAR_DEBUG=1 shows them)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    import torch

    torch.set_num_threads(threads)
    for name in warm:
        try:
            importlib.import_module(SOURCE_MODULES[name]).warm_up()
        except Exception as e:  # noqa: BLE001 - a missing optional library fails its tasks, not the worker
            logging.getLogger(__name__).debug("warm-up of %s failed: %s", name, e)
    conn.send(("ready", None, _rss_mb()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if task is None:
            break
        rec = run_task(task)
        conn.send(("done", rec, _rss_mb()))
    conn.close()


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    task: Task | None = None
    started: float = 0.0
    done: int = 0
    rss_mb: float = 0.0


class WorkerPool:
    """A fixed number of worker processes running tasks with a per-task wall-clock limit.

    Args:
        workers: number of processes (>= 1).
        warm: sources whose libraries each worker imports before taking tasks.
        timeout_s: per-task limit; the worker is killed and the task recorded as ``timeout``.
        max_tasks_per_worker: recycle a worker after this many tasks (bounds slow leaks).
        max_rss_mb: recycle a worker whose resident memory exceeds this after a task.
        threads: torch intra-op threads per worker.

    Use as a context manager; :meth:`run` may be called several times.
    """

    def __init__(self, workers: int, warm: Iterable[str] = (), *, timeout_s: float = 120.0,
                 max_tasks_per_worker: int = 300, max_rss_mb: float = 6000.0, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, found {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, found {timeout_s}")
        self.n = workers
        self.warm = tuple(warm)
        self.timeout_s = float(timeout_s)
        self.max_tasks = max_tasks_per_worker
        self.max_rss_mb = max_rss_mb
        self.threads = threads
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self.restarts = 0
        self._startup_failures = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.warm, self.threads), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _retire(self, w: _Worker, kill: bool = False) -> None:
        try:
            if kill:
                w.proc.kill()
            else:
                w.conn.send(None)
        except (OSError, ValueError):
            pass
        w.proc.join(timeout=10)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=5)
        w.conn.close()

    def close(self) -> None:
        """Stop every worker (running tasks are abandoned)."""
        for w in self._workers:
            self._retire(w, kill=w.task is not None)
        self._workers = []

    def run(self, tasks: Iterable[Task], on_result: Callable[[dict[str, Any]], None]) -> None:
        """Run ``tasks``; ``on_result(record)`` is called in the parent as each one finishes."""
        queue = deque(tasks)
        if not queue:
            return
        while len(self._workers) < self.n:
            self._workers.append(self._spawn())
        while queue or any(w.task is not None for w in self._workers):
            for w in self._workers:
                if w.ready and w.task is None and queue:
                    w.task = queue.popleft()
                    w.started = time.monotonic()
                    try:
                        w.conn.send(w.task)
                    except (OSError, ValueError):  # died since its last message: retry elsewhere
                        queue.appendleft(w.task)
                        w.task = None
                        w.ready = False
            now = time.monotonic()
            busy = [w.started + self.timeout_s - now for w in self._workers if w.task is not None]
            wait_s = max(0.05, min(busy)) if busy else 1.0
            conns: list[Any] = [w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers]
            ready = wait(conns, timeout=wait_s)
            for i, w in enumerate(list(self._workers)):
                if w.conn in ready or (w.proc.sentinel in ready and not w.proc.is_alive()):
                    self._receive(i, w, on_result)
            now = time.monotonic()
            for i, w in enumerate(list(self._workers)):
                if w.task is not None and now - w.started > self.timeout_s:
                    t = w.task
                    logger.info("%s: timeout after %.0f s, restarting its worker", t.key, self.timeout_s)
                    on_result(make_record(t.key, t.source, t.name, t.family, "error",
                                          reason=f"timeout: no result within {self.timeout_s:.0f} s",
                                          category="timeout", seconds=now - w.started))
                    w.task = None
                    self._replace(i, w, kill=True)

    def _replace(self, i: int, w: _Worker, kill: bool) -> None:
        self._retire(w, kill=kill)
        self._workers[i] = self._spawn()
        self.restarts += 1

    def _receive(self, i: int, w: _Worker, on_result: Callable[[dict[str, Any]], None]) -> None:
        try:
            while w.conn.poll():
                kind, rec, rss = w.conn.recv()
                w.rss_mb = rss
                if kind == "ready":
                    w.ready = True
                elif kind == "done":
                    w.task = None
                    w.done += 1
                    on_result(rec)
        except (EOFError, OSError):
            code = w.proc.exitcode
            if not w.ready:
                self._startup_failures += 1
                if self._startup_failures > 3:
                    raise RuntimeError(f"corpus worker processes die while starting (exit code {code}); "
                                       "run `python -c 'import nar_plugin.corpus.pool'` to see why")
            if w.task is not None:
                t = w.task
                logger.warning("%s: worker died (exit code %s)", t.key, code)
                on_result(make_record(t.key, t.source, t.name, t.family, "error",
                                      reason=f"worker crashed (exit code {code})", category="worker crashed",
                                      seconds=time.monotonic() - w.started))
                w.task = None
            self._replace(i, w, kill=True)
            return
        if w.task is None and w.ready and (w.done >= self.max_tasks or w.rss_mb > self.max_rss_mb):
            logger.debug("recycling worker %d after %d tasks (%.0f MB)", i, w.done, w.rss_mb)
            self._replace(i, w, kill=False)
