"""Progress display: a rich bar on a terminal, nothing (or periodic log lines) elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["Progress"]

_log = logging.getLogger(__name__)


class Progress:
    """One progress display for loops in the CLI, the corpus build, training and bulk indexing.

    Use as a context manager: ``with Progress("indexing", total=n) as bar: bar.advance()``.

    Args:
        description: the label shown beside the bar.
        total: number of steps, when known.
        enabled: ``None`` = show a bar only when stderr is a terminal; ``False`` = silent;
            ``True`` = always a bar.
        log_every: seconds between log lines when no bar is shown (``0`` = no lines).
    """

    def __init__(self, description: str, total: int | None = None, *, enabled: bool | None = None,
                 log_every: float = 0.0) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self._show = sys.stderr.isatty() if enabled is None else enabled
        self._log_every = log_every
        self._last_log = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self._show:
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, ev, tb)
            self._bar = None

    def update(self, *, description: str | None = None, total: int | None = None) -> None:
        """Change the label or the total while running."""
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, description=self.description, total=self.total)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        self.completed += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif self._log_every and time.monotonic() - self._last_log >= self._log_every:
            self._last_log = time.monotonic()
            of = f"/{self.total}" if self.total is not None else ""
            _log.info("%s: %d%s", self.description, self.completed, of)
