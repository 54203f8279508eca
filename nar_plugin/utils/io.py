"""Atomic file writes and versioned JSON files: the one implementation the package uses.

Every persisted artifact is replaced atomically (write a temp file in the same folder, flush,
``fsync``, ``os.replace``, ``fsync`` the folder), so a reader sees the old file or the new one,
never a torn write, and a crash (kill -9, power loss) leaves the old one intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from nar_plugin.errors import CorruptArtifactError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_writer",
           "fsync_dir", "read_versioned_json", "write_versioned_json"]


def _read_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``); elsewhere
    ``os.umask`` must set it to read it, which briefly races with threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _default_mode(dest: Path) -> int:
    """The mode a plain ``open(dest, "w")`` would give: the old file's, else 0o666 less the umask."""
    try:
        return dest.stat().st_mode & 0o7777
    except OSError:
        pass
    return 0o666 & ~_read_umask()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entry table (a rename is durable only once its folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically.

    Args:
        path: destination file.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).
        durable: ``fsync`` the file and its folder (default). ``False`` still renames
            atomically but may lose the write on power loss (caches, throw-away state).

    On an exception the temp file is removed and ``path`` is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', got {mode!r}")
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(tmp, _default_mode(dest))  # mkstemp creates 0600; others sharing the folder may read it
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(dest.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, "wb", durable=durable) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically (see :func:`atomic_writer`)."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1,
                      durable: bool = True, default: Callable[[Any], Any] | None = None) -> None:
    """Replace ``path`` with ``obj`` as JSON (keys sorted, so equal objects give equal bytes)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=default)
    atomic_write_text(path, text + "\n", durable=durable)


def write_versioned_json(path: str | os.PathLike[str], fmt: str, version: int, body: dict[str, Any],
                         *, durable: bool = True) -> None:
    """Write ``{"format": fmt, "format_version": version, **body}`` atomically."""
    atomic_write_json(path, {"format": fmt, "format_version": version, **body}, durable=durable)


def read_versioned_json(path: str | os.PathLike[str], fmt: str, versions: tuple[int, ...] | int) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_versioned_json` and check its format and version.

    Args:
        path: the file.
        fmt: the expected ``format`` field.
        versions: the ``format_version`` values this code reads.

    Returns:
        The whole JSON object.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptArtifactError: not JSON, not an object, another format, or an unknown version.
    """
    accepted = (versions,) if isinstance(versions, int) else tuple(versions)
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptArtifactError(f"{p}: expected a {fmt} JSON file, could not read it ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CorruptArtifactError(f"{p}: expected format {fmt!r}, found {found!r}")
    if obj.get("format_version") not in accepted:
        raise CorruptArtifactError(
            f"{p}: {fmt} format version {obj.get('format_version')!r} is not supported "
            f"(this nar-plugin reads {', '.join(map(str, accepted))}); rebuild it or upgrade nar-plugin")
    return obj
