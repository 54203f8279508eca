"""Progress display: a rich bar on a terminal, periodic log lines (or nothing) elsewhere.

The one progress wrapper of the package (corpus build, training, bulk indexing, the CLI).
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["Progress"]

_log = logging.getLogger(__name__)


class Progress:
    """Progress of one or more named tasks, with optional counters (``ok``, ``failed``, ...).

    Use as a context manager::

        with Progress("indexing", total=n) as bar:      # one task
            bar.advance()
        with Progress(counters=("ok", "failed")) as bar:  # several tasks with counters
            bar.add_task("timm", total=1371)
            bar.advance(task="timm", ok=1)

    Args:
        description: label of the default task (created when given).
        total: steps of the default task, when known.
        enabled: ``None`` = a bar only when stderr is a terminal; ``False`` = no bar;
            ``True`` = always a bar.
        log_every: seconds between log lines when no bar is shown (``0`` = none).
        counters: names of counters shown beside each bar and in the log lines.
    """

    def __init__(self, description: str | None = None, total: int | None = None, *,
                 enabled: bool | None = None, log_every: float = 0.0,
                 counters: tuple[str, ...] = ()) -> None:
        self._show = sys.stderr.isatty() if enabled is None else enabled
        self._log_every = log_every
        self._last_log = time.monotonic()
        self._counters = counters
        self._bar: Any = None
        self._ids: dict[str, Any] = {}
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self._default = description
        if description is not None:
            self.add_task(description, total)

    @property
    def completed(self) -> int:
        """Steps done in all tasks."""
        return sum(self.done.values())

    def __enter__(self) -> Progress:
        if self._show:
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            cols: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
            if self._counters:
                cols.append(TextColumn(" ".join(f"{c} {{task.fields[{c}]}}" for c in self._counters)))
            self._bar = RichProgress(*cols, TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            for name in self.totals:
                self._ids[name] = self._bar.add_task(name, total=self.totals[name], **self.counts[name])
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, ev, tb)
            self._bar = None

    def add_task(self, name: str, total: int | None = None) -> None:
        """Add a task, or add ``total`` more steps to an existing one."""
        if name in self.totals:
            old = self.totals[name]
            self.totals[name] = None if total is None or old is None else old + total
        else:
            self.totals[name] = total
            self.done[name] = 0
            self.counts[name] = {c: 0 for c in self._counters}
            if self._bar is not None:
                self._ids[name] = self._bar.add_task(name, total=total, **self.counts[name])
                return
        if self._bar is not None:
            self._bar.update(self._ids[name], total=self.totals[name])

    def update(self, *, description: str | None = None, total: int | None = None) -> None:
        """Change the default task's label or total while running."""
        name = self._task(None)
        if total is not None:
            self.totals[name] = total
        if self._bar is not None:
            self._bar.update(self._ids[name], description=description or name, total=self.totals[name])

    def advance(self, n: int = 1, *, task: str | None = None, **counts: int) -> None:
        """Count ``n`` more steps of ``task`` (default task when omitted) and bump counters."""
        name = self._task(task)
        self.done[name] += n
        for c, k in counts.items():
            self.counts[name][c] = self.counts[name].get(c, 0) + k
        if self._bar is not None:
            self._bar.update(self._ids[name], advance=n, **self.counts[name])
        elif self._log_every and time.monotonic() - self._last_log >= self._log_every:
            self._last_log = time.monotonic()
            of = f"/{self.totals[name]}" if self.totals[name] is not None else ""
            extra = "".join(f", {v} {c}" for c, v in self.counts[name].items())
            _log.info("%s: %d%s done%s", name, self.done[name], of, extra)

    def _task(self, task: str | None) -> str:
        name = task if task is not None else self._default
        if name is None or name not in self.totals:
            raise KeyError(f"no progress task {name!r}; add it with add_task()")
        return name
