"""One open :class:`EmbeddingIndex` per index directory per process.

Opening an index costs a ``quick_check`` and a FAISS cache load (~120 ms at 50k entries) and the
first search on a fresh handle pays again; an open handle answers in a few ms. Callers that
open "the index" on every call (``find_similar``, hooks, servers) use :func:`open_index`.

A cached handle stays correct when other processes write: before every search it applies the
rows and tombstones committed since (the generation catch-up of
:mod:`nar_plugin.index.faiss_cache`), and reads go to SQLite, which sees every commit. It follows a
database replaced by a restore. A handle that was closed, or whose database file disappeared, is
replaced by a fresh one on the next call. Handles are closed at interpreter exit; a forked child
starts with an empty cache (it never uses its parent's connections).
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from nar_plugin.index.codec import EMBEDDING_DIM
from nar_plugin.index.store import EmbeddingIndex, index_path

__all__ = ["open_index", "close_all"]

_Key = tuple[Path, bool, int]

_lock = threading.Lock()
_handles: dict[_Key, EmbeddingIndex] = {}
_hooks_installed = False


def _reset_in_child() -> None:
    """After ``fork``: the parent's handles (and a lock another thread may hold) are not ours."""
    global _lock
    _lock = threading.Lock()
    _handles.clear()


def _install_hooks() -> None:
    """Register the exit and fork hooks once, on first use (no import-time side effects)."""
    global _hooks_installed
    if not _hooks_installed:
        atexit.register(close_all)
        os.register_at_fork(after_in_child=_reset_in_child)
        _hooks_installed = True


def _usable(index: EmbeddingIndex) -> bool:
    return not index.closed and index.db_path.exists()


def _discard(index: EmbeddingIndex) -> None:
    """Close a handle whose database is gone without trying to save its FAISS cache."""
    index._db.close()


def open_index(
    path: str | os.PathLike[str] | None = None,
    *,
    encoder_version: str | None = None,
    read_only: bool = False,
    dim: int = EMBEDDING_DIM,
) -> EmbeddingIndex:
    """The process-wide open :class:`EmbeddingIndex` of a directory (opened on first use).

    Do not ``close()`` the handle after each use (``with open_index() as idx`` closes it): it is
    shared. Closing is harmless, though; the next call opens a new one.

    Args:
        path: Index directory; default ``nar_home() / "index"`` (``NAR_HOME`` read now).
            Handles are keyed by the resolved path, ``read_only`` and ``dim``.
        encoder_version: Encoder version the caller's embeddings come from; checked on every
            call (and recorded if the index records none and the handle may write).
        read_only: Open a handle that refuses writes of entries (see :class:`EmbeddingIndex`).
            An index in a folder this process may not write is opened read-only anyway
            (queries work; writes raise :class:`~nar_plugin.errors.IndexReadOnlyError`).
        dim: Embedding dimension.

    Returns:
        The shared handle (the same object for the same arguments while it stays open).

    Raises:
        EncoderVersionMismatchError: The index records another encoder version.
        IndexCorruptError, InvalidVectorError, IndexLockedError: As :class:`EmbeddingIndex`.

    Example:
        >>> idx = open_index(encoder_version="nar-enc-1")
        >>> idx is open_index(encoder_version="nar-enc-1")
        True
    """
    key: _Key = (index_path(path).resolve(), bool(read_only), int(dim))
    with _lock:
        _install_hooks()
        index = _handles.get(key)
        if index is not None and not _usable(index):
            del _handles[key]
            _discard(index)
            index = None
        if index is None:
            index = EmbeddingIndex(key[0], encoder_version, key[2], read_only=key[1])
            _handles[key] = index
            return index
    index._require_encoder(encoder_version)
    return index


def close_all() -> int:
    """Close every cached handle (they save their FAISS cache when cheap); returns how many.

    Runs at interpreter exit. Tests call it (or ``open_index.cache_clear()``) between cases.
    """
    with _lock:
        handles = list(_handles.values())
        _handles.clear()
    for index in handles:
        if _usable(index):
            index.close()
        else:  # its directory is gone (e.g. a removed temp NAR_HOME): nothing to save
            _discard(index)
    return len(handles)


open_index.cache_clear = close_all  # type: ignore[attr-defined]  # the functools.lru_cache spelling
