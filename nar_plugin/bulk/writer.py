"""The one writer of a bulk run: on the driver, in batches, through the public index API.

The index is single-writer SQLite + FAISS, so every engine hands its embedded outcomes to one
:class:`Writer`. Each batch is one ``EmbeddingIndex.add_many(..., upsert=True)`` transaction:
a run killed at any moment leaves whole batches, and every entry carries
``metadata["bulk"] = {"sources": {sid: revision}}``, which is what ``--resume`` reads
(:func:`indexed_revisions`). Several sources may write one key (an MLflow listing and a
``models:/name/1`` line both write that version's entry): their records are merged, so each
source keeps its own resume record. Failures are appended, one JSON line each, to the failures file
as they happen, so a killed run still leaves its reasons behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nar_plugin.bulk.stages import Outcome

__all__ = ["BULK_FIELD", "Failure", "Writer", "indexed_revisions"]

logger = logging.getLogger(__name__)

#: the metadata field of every entry a bulk run wrote: ``{"sources": {sid: revision, ...}}``
BULK_FIELD = "bulk"
#: default failures file, in the index folder
FAILURES_NAME = "bulk-failures.jsonl"


@dataclass(frozen=True)
class Failure:
    """One source a bulk run could not index: its sid, the error type and the first line."""

    source: str
    error: str
    message: str
    revision: str | None = None


def indexed_revisions(index: Any) -> dict[str, str]:
    """``sid -> revision`` of every entry a bulk run wrote (one pass over the index, in blocks)."""
    found: dict[str, str] = {}
    for entry in index.entries():
        found.update(_sources_of(entry.metadata))
    return found


def _sources_of(metadata: Any) -> dict[str, str]:
    info = (metadata or {}).get(BULK_FIELD)
    sources = info.get("sources") if isinstance(info, dict) else None
    if not isinstance(sources, dict):
        return {}
    return {str(k): str(v) for k, v in sources.items() if k and v}


class Writer:
    """Writes embedded outcomes to the index in batches of ``batch_size`` sources and keeps the
    run's counts (``indexed``, ``skipped``, ``failed``) and worker statistics.

    Args:
        index: an open ``EmbeddingIndex``.
        batch_size: sources per write transaction.
        failures_path: JSONL file that receives one line per failure (``None``: none). It is
            truncated when the writer starts.
        progress: a :class:`~nar_plugin.utils.progress.Progress` with counters ``ok``,
            ``skipped``, ``failed`` (or ``None``).
    """

    def __init__(self, index: Any, batch_size: int = 64, failures_path: str | Path | None = None,
                 progress: Any = None) -> None:
        from nar_plugin.model.inference import encoder_version

        self.index = index
        self.batch_size = max(1, int(batch_size))
        self.encoder = encoder_version()
        self.progress = progress
        self.indexed: list[str] = []
        self.keys_written = 0
        self.skipped: list[str] = []
        self.failed: list[Failure] = []
        self.workers: dict[str, float] = {}
        self.extract_s = 0.0
        self.embed_s = 0.0
        self.source_seconds: dict[str, float] = {}
        self._pending: list[Outcome] = []
        self._failures = Path(failures_path) if failures_path else None
        if self._failures is not None:
            self._failures.parent.mkdir(parents=True, exist_ok=True)
            self._failures.write_text("")

    def skip(self, sid: str) -> None:
        """Count a source skipped before it was dispatched (its revision was known)."""
        self.skipped.append(sid)
        self._advance(skipped=1)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Take outcomes from an engine; writes every ``batch_size`` ok ones."""
        for o in outcomes:
            if o.worker:
                self.workers[o.worker] = max(self.workers.get(o.worker, 0.0), o.rss_mb)
            self.extract_s += o.extract_s
            self.embed_s += o.embed_s
            self.source_seconds[o.sid] = o.extract_s + o.embed_s
            if o.status == "ok" and o.vector is not None:
                self._pending.append(o)
                if len(self._pending) >= self.batch_size:
                    self.flush()
            elif o.status == "skipped":
                self.skip(o.sid)
            else:
                self._record(Failure(o.sid, o.error or "Error", o.message or "", o.revision))

    def _record(self, failure: Failure) -> None:
        self.failed.append(failure)
        if self._failures is not None:
            with self._failures.open("a") as fh:
                fh.write(json.dumps(failure.__dict__, sort_keys=True) + "\n")
        self._advance(failed=1)

    def _items(self, batch: list[Outcome]) -> list[dict[str, Any]]:
        """The entries of a batch, one item per key (the last outcome's), each carrying the
        resume records of every source that wrote the key (in this batch or before)."""
        items: dict[str, dict[str, Any]] = {}
        records: dict[str, dict[str, str]] = {}
        for o in batch:
            for e in o.entries:
                key = e["key"]
                if key not in records:
                    old = self.index.get(key)
                    records[key] = _sources_of(old.metadata) if old is not None else {}
                records[key][o.sid] = str(o.revision)
                meta = {**e["metadata"], "description": o.description, "name": o.name}
                items[key] = {"key": key, "vector": o.vector, "source_kind": e["source_kind"], "uri": e["uri"],
                              "graph_hash": o.graph_hash, "encoder_version": self.encoder, "metadata": meta}
        for key, item in items.items():
            item["metadata"][BULK_FIELD] = {"sources": dict(sorted(records[key].items()))}
        return list(items.values())

    def flush(self) -> None:
        """Write the pending outcomes in one transaction (all land, or none)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            items = self._items(batch)
            self.index.add_many(items, upsert=True)
        except Exception as e:  # noqa: BLE001 - an index error fails the batch, which is reported
            from nar_plugin.errors import IndexLockedError, IndexReadOnlyError, IndexWriteError

            if isinstance(e, (IndexLockedError, IndexReadOnlyError, IndexWriteError)):
                raise  # the index itself is unusable: stop the run
            if len(batch) == 1:
                self._record(Failure(batch[0].sid, type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                                     batch[0].revision))
                return
            for o in batch:  # one bad item (e.g. a key given twice) must not fail its neighbours
                self._pending = [o]
                self.flush()
            return
        self.keys_written += len(items)
        self.indexed.extend(o.sid for o in batch)
        self._advance(ok=len(batch))
        logger.debug("bulk: wrote %d entries (%d sources)", len(items), len(batch))

    def _advance(self, **counts: int) -> None:
        if self.progress is not None:
            self.progress.advance(sum(counts.values()), **counts)
