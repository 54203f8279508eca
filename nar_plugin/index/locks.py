"""Cross-process file locks of an index directory.

``<dir>/.lock`` serialises writers of the SQLite database (readers take no lock: WAL snapshots);
``<dir>/.cache.lock`` serialises writers of the FAISS cache file. Waiting is bounded by
``NAR_LOCK_TIMEOUT`` (read at call time, finite and ``>= 0``, else :class:`ConfigError`); a
timeout raises :class:`IndexLockedError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from nar_plugin.config import NAR_LOCK_TIMEOUT
from nar_plugin.errors import ConfigError, IndexLockedError

__all__ = ["CACHE_LOCK_NAME", "LOCK_NAME", "IndexLock", "lock_timeout"]

LOCK_NAME = ".lock"
CACHE_LOCK_NAME = ".cache.lock"


def lock_timeout() -> float:
    """Seconds to wait for a lock (``NAR_LOCK_TIMEOUT``): finite and ``>= 0`` (0 = try once).

    Raises:
        ConfigError: a negative, infinite or NaN value (``filelock`` would wait forever on a
            negative one, and a hook must never hang the user's call).
    """
    value = float(NAR_LOCK_TIMEOUT.get())
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{NAR_LOCK_TIMEOUT.name} must be a finite number of seconds >= 0, found {value!r}")
    return value


class IndexLock:
    """One lock file of an index directory.

    Args:
        directory: The index directory.
        name: :data:`LOCK_NAME` or :data:`CACHE_LOCK_NAME`.
        what: How a timeout message names what is locked, e.g. ``"index /x"``.
        hint: What a timeout message suggests.
    """

    def __init__(self, directory: Path, name: str, what: str, hint: str) -> None:
        self._lock = filelock.FileLock(str(directory / name))
        self._what = what
        self._hint = hint

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock, waiting at most ``NAR_LOCK_TIMEOUT`` seconds for it.

        Raises:
            IndexLockedError: Another process held it for longer (a ``TimeoutError``).
        """
        timeout = lock_timeout()
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise IndexLockedError(f"could not lock {self._what} within {timeout:g} s{self._hint}") from None
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def if_free(self) -> Iterator[bool]:
        """Hold the lock if nobody holds it; yields whether it is held (never waits)."""
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()
