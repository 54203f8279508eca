"""On-disk corpus: one gzip-JSONL shard per source plus a versioned ``manifest.json``.

Layout of a corpus directory::

    manifest.json          format + version, vocabulary version, library versions, build stats
    timm.jsonl.gz          one record per line (see :func:`make_record`), one source per shard
    transformers.jsonl.gz
    ...

Shards are appended to while a build runs, one gzip *member* per flushed batch, so a crash
loses at most the batch in flight and a truncated tail is detected and cut off on the next
open. When a build finishes, :meth:`CorpusStore.compact` rewrites each shard as a single member
sorted by key (smaller and deterministic). Every record carries a ``status``: ``ok`` records
hold a graph, ``error`` / ``skipped`` records hold the reason, so nothing is dropped silently
and a restarted build skips every key already present.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError, StaleCorpusError
from nar_plugin.graph import VOCAB_VERSION, ArchGraph

logger = logging.getLogger(__name__)

__all__ = [
    "CORPUS_FORMAT",
    "CORPUS_FORMAT_VERSION",
    "CorpusItem",
    "CorpusStore",
    "StaleCorpusError",
    "load_corpus",
    "load_records",
    "make_record",
]

CORPUS_FORMAT = "nar-corpus"
#: Bump when the record schema or the family rules change (a stale corpus is refused).
CORPUS_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".jsonl.gz"


@dataclass(frozen=True)
class CorpusItem:
    """One architecture of the corpus.

    Attributes:
        key: unique, stable id (``timm:resnet50``, ``hf:bert/L4``, ``tv:vgg16``,
            ``nas:darts:<family>/L14-C36-r<hash>``).
        source: ``timm``, ``transformers``, ``torchvision`` or ``nas``.
        family: retrieval label; items with equal family are relevant to each other.
        name: human-readable model name.
        graph: the extracted :class:`ArchGraph`.
        info: extra provenance (tracer, variant, modality, seconds...).
    """

    key: str
    source: str
    family: str
    name: str
    graph: ArchGraph
    info: Mapping[str, Any] = field(default_factory=dict)


def make_record(key: str, source: str, name: str, family: str, status: str, *,
                graph: ArchGraph | None = None, reason: str | None = None,
                category: str | None = None, seconds: float = 0.0,
                info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One shard line. ``status`` is ``ok`` (``graph`` set), ``error`` or ``skipped`` (``reason`` set)."""
    if status not in ("ok", "error", "skipped"):
        raise ValueError(f"status must be ok, error or skipped, found {status!r}")
    if (status == "ok") != (graph is not None):
        raise ValueError(f"a record with status {status!r} must {'' if status == 'ok' else 'not '}carry a graph")
    rec: dict[str, Any] = {
        "key": key, "source": source, "name": name, "family": family, "status": status,
        "seconds": round(float(seconds), 3), "info": dict(info or {}),
    }
    if graph is not None:
        rec["graph"] = graph.to_dict()
        rec["info"].setdefault("num_nodes", graph.num_nodes)
        rec["info"].setdefault("graph_hash", graph.graph_hash)
    else:
        rec["reason"] = reason or "unknown"
        rec["category"] = category or rec["reason"][:80]
    return rec


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "torchvision", "timm", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _read_members(path: Path) -> tuple[list[bytes], int]:
    """Decompress every complete gzip member; returns (payloads, offset after the last good one)."""
    data = path.read_bytes()
    payloads: list[bytes] = []
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data[pos:])
        except zlib.error:
            break
        if not d.eof:  # truncated member: a batch that was being written when the build died
            break
        payloads.append(chunk)
        pos = len(data) - len(d.unused_data)
    return payloads, pos


def _iter_shard(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """Records of a shard (later lines with the same key win), good byte length, file size."""
    payloads, good = _read_members(path)
    records: dict[str, dict[str, Any]] = {}
    for chunk in payloads:
        for line in chunk.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorruptArtifactError(f"{path}: a record does not parse: {e}", str(path)) from e
            records[rec["key"]] = rec
    return list(records.values()), good, path.stat().st_size


class CorpusStore:
    """Reads and appends the shards of one corpus directory; checks versions on open.

    Args:
        root: corpus directory (created when missing).
        create: create a fresh manifest when the directory holds none.
        rebuild: delete the shards of a stale corpus instead of raising.

    Raises:
        StaleCorpusError: the manifest records another corpus format or vocabulary version
            (and ``rebuild`` is false).
        CorruptArtifactError: the manifest does not parse, or a directory without a manifest
            already holds shards.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, rebuild: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.manifest = self._open(create, rebuild)

    # ----------------------------------------------------------------- manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def _fresh_manifest(self) -> dict[str, Any]:
        return {
            "format": CORPUS_FORMAT, "format_version": CORPUS_FORMAT_VERSION,
            "vocab_version": VOCAB_VERSION, "created": _now(), "updated": _now(),
            "libraries": _library_versions(), "sources": {},
        }

    def _open(self, create: bool, rebuild: bool) -> dict[str, Any]:
        path = self.manifest_path
        if not path.is_file():
            if not create:
                raise FileNotFoundError(f"no corpus at {self.root} (missing {MANIFEST}); build one with `nar corpus build`")
            if self.root.is_dir() and list(self.root.glob("*" + SHARD_SUFFIX)):
                if not rebuild:
                    raise CorruptArtifactError(
                        f"{self.root} holds corpus shards but no {MANIFEST}; their version is unknown. "
                        "Rebuild with --rebuild", str(self.root))
                self._clear()
            self.root.mkdir(parents=True, exist_ok=True)
            m = self._fresh_manifest()
            self._write_manifest(m)
            return m
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CorruptArtifactError(f"{path} does not parse: {e}", str(path)) from e
        if not isinstance(m, dict) or m.get("format") != CORPUS_FORMAT:
            raise CorruptArtifactError(f"{path} is not a nar corpus manifest (format {m.get('format')!r})"
                                       if isinstance(m, dict) else f"{path} is not a JSON object", str(path))
        for what, expected in (("format_version", CORPUS_FORMAT_VERSION), ("vocab_version", VOCAB_VERSION)):
            if m.get(what) != expected:
                if not rebuild:
                    raise StaleCorpusError(self.root, what, m.get(what), expected)
                logger.warning("corpus at %s has %s %r (expected %r): deleting its shards and rebuilding",
                               self.root, what, m.get(what), expected)
                self._clear()
                m = self._fresh_manifest()
                self._write_manifest(m)
                return m
        libs = _library_versions()
        changed = {k: (m.get("libraries", {}).get(k), v) for k, v in libs.items()
                   if m.get("libraries", {}).get(k) not in (None, v)}
        if changed and create:
            logger.warning("corpus at %s was started with other library versions %s; cached graphs are "
                           "kept (new keys use the installed versions), --rebuild to redo all", self.root, changed)
        return m

    def _clear(self) -> None:
        for p in self.root.glob("*" + SHARD_SUFFIX):
            p.unlink()
        if self.manifest_path.exists():
            self.manifest_path.unlink()

    def _write_manifest(self, m: dict[str, Any]) -> None:
        m["updated"] = _now()
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.manifest_path)

    def update_source_stats(self, source: str, stats: Mapping[str, Any]) -> None:
        """Merge build statistics of ``source`` into the manifest and save it atomically."""
        self.manifest.setdefault("sources", {}).setdefault(source, {}).update(stats)
        self.manifest["libraries"] = _library_versions()
        self._write_manifest(self.manifest)

    # ----------------------------------------------------------------- shards
    def shard_path(self, source: str) -> Path:
        return self.root / f"{source}{SHARD_SUFFIX}"

    def sources(self) -> list[str]:
        return sorted(p.name[: -len(SHARD_SUFFIX)] for p in self.root.glob("*" + SHARD_SUFFIX))

    def records(self, source: str, *, repair: bool = False) -> list[dict[str, Any]]:
        """All records of one source (empty when the shard does not exist yet).

        A truncated last batch (the build was killed mid-write) is ignored; with ``repair`` it is
        also cut off the file so that appends continue from a clean member boundary.
        """
        path = self.shard_path(source)
        if not path.is_file():
            return []
        recs, good, size = _iter_shard(path)
        if good < size:
            logger.warning("%s: ignoring a truncated last batch (%d of %d bytes are complete)", path, good, size)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(good)
        return recs

    def append(self, source: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records as one gzip member (durable once this returns). Returns the count."""
        lines = [json.dumps(r, separators=(",", ":"), sort_keys=True) for r in records]
        if not lines:
            return 0
        payload = ("\n".join(lines) + "\n").encode()
        with open(self.shard_path(source), "ab") as f:
            f.write(gzip.compress(payload, compresslevel=6, mtime=0))
            f.flush()
            os.fsync(f.fileno())
        return len(lines)

    def compact(self, source: str) -> None:
        """Rewrite a shard as one gzip member, one record per key, sorted by key (atomic)."""
        path = self.shard_path(source)
        if not path.is_file():
            return
        recs = sorted(self.records(source), key=lambda r: r["key"])
        payload = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in recs).encode()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(gzip.compress(payload, compresslevel=9, mtime=0))
        os.replace(tmp, path)

    def drop(self, source: str, keys: Iterable[str]) -> int:
        """Remove records (e.g. failures to retry) from a shard; returns how many were removed."""
        drop = set(keys)
        recs = self.records(source)
        keep = [r for r in recs if r["key"] not in drop]
        if len(keep) == len(recs):
            return 0
        path = self.shard_path(source)
        tmp = path.with_suffix(".tmp")
        payload = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in keep).encode()
        with open(tmp, "wb") as f:
            f.write(gzip.compress(payload, compresslevel=6, mtime=0))
        os.replace(tmp, path)
        return len(recs) - len(keep)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*" + SHARD_SUFFIX))


def load_records(root: str | os.PathLike[str], sources: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every raw record (``ok``, ``error`` and ``skipped``) of a corpus, after version checks.

    Raises:
        FileNotFoundError: no corpus at ``root``.
        StaleCorpusError: built with another corpus format / vocabulary version.
    """
    store = CorpusStore(root, create=False)
    for src in (list(sources) if sources is not None else store.sources()):
        yield from sorted(store.records(src), key=lambda r: r["key"])


def load_corpus(root: str | os.PathLike[str], sources: Iterable[str] | None = None, *,
                dedupe: bool | str = False) -> list[CorpusItem]:
    """Load the successfully built items of a corpus.

    Args:
        root: corpus directory (see :func:`~nar_plugin.corpus.default_corpus_dir`).
        sources: only these sources (default: all shards present).
        dedupe: ``True`` / ``"family"``: keep only the first item (in source, key order) of each
            ``graph_hash`` within a family (timm's ``*_224`` / ``*_384`` twins...);
            ``"global"``: keep the first item of each ``graph_hash`` over the whole corpus (a few
            architectures are registered in two timm modules, e.g. ``deit_base_patch16_224`` and
            ``vit_base_patch16_224``); ``False``: keep everything.

    Returns:
        Items sorted by source then key.

    Raises:
        FileNotFoundError: no corpus at ``root``.
        StaleCorpusError: the corpus was written with another format or vocabulary version.
        CorruptArtifactError: a record does not parse.
        ValueError: ``dedupe`` is not a bool, ``"family"`` or ``"global"``.

    Example:
        >>> items = load_corpus("corpus")
        >>> len(items), items[0].family, items[0].graph.num_nodes
    """
    if dedupe not in (True, False, "family", "global"):
        raise ValueError(f"dedupe must be a bool, 'family' or 'global', found {dedupe!r}")
    items: list[CorpusItem] = []
    seen: set[tuple[str, str]] = set()
    for rec in load_records(root, sources):
        if rec.get("status") != "ok":
            continue
        graph = ArchGraph.from_dict(rec["graph"])
        if dedupe:
            sig = ("" if dedupe == "global" else rec["family"], graph.graph_hash)
            if sig in seen:
                continue
            seen.add(sig)
        info = dict(rec.get("info") or {})
        info["seconds"] = rec.get("seconds", 0.0)
        items.append(CorpusItem(rec["key"], rec["source"], rec["family"], rec["name"], graph, info))
    return items
