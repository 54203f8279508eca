"""Keep the local index in step with a tracking server.

The ``nar.*`` tags on LoggedModels and model versions are the shared source of truth; every
client's local index is a cache rebuilt from them, weight fingerprints included (the blob a
``nar.fingerprint`` tag names is fetched only when the index lacks those weights).
:func:`sync_from_tracking` is incremental: it asks only for entries updated since the last sync of that tracking URI, recorded in
``<index>/sync-state.json`` (with the encoder version: another encoder means a full sync).
LoggedModels are filtered by the server (``last_updated_timestamp > t``). Model versions cannot
be filtered on time by the registry's search (only name, version_number, run_id, source_path),
so the registered models changed since (a new version moves its model's update time) are read
newest first, then their versions, each down to the first one older than the last sync: the
steady-state cost does not grow with the number of versions
(``benchmarks/find_similar_scale.py``).

Setting a tag does not change an entity's ``last_updated_timestamp``, and the hooks tag a model
or version right after creating it; so when the last sync ran soon after its newest entry was
made, the next one also re-reads the minute before that entry (:data:`OVERLAP_MS`) for entries
it has not indexed yet (:func:`_cutoff`).

Entries are scoped by tracking server: version keys carry the server's id
(:func:`~nar_plugin.integrations.mlflow.keys.version_key`), and every entry's metadata its
``server``. A sync replaces the unscoped version keys that older releases wrote for that server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError, NarError, TrackingUnavailableError
from nar_plugin.integrations.mlflow.keys import (
    entry_server,
    legacy_version_key,
    model_key,
    server_id,
    version_key,
)
from nar_plugin.integrations.mlflow.tags import (
    TAG_DESCRIPTION,
    TAG_EMBEDDING,
    TAG_ENCODER,
    TAG_GRAPH_HASH,
    TAG_WEIGHTS_HASH,
    decode_description,
    model_metadata,
    version_metadata,
)
from nar_plugin.integrations.mlflow.weights import restore_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["OVERLAP_MS", "SyncReport", "TrackingUnavailableError", "sync_from_tracking"]

_PAGE = 500
#: first page size while reading versions newest first (then x4 a page, up to _PAGE): most
#: incremental syncs need one short page
_FIRST_PAGE = 10
#: how far before the last sync's newest entry an incremental sync looks again (ms): tags
#: written after an entity's last update do not move its timestamp
OVERLAP_MS = 60_000
#: allowance for the tracking server's clock running behind this machine's (ms)
CLOCK_SKEW_MS = 300_000
_STATE_FORMAT = "nar-mlflow-sync-state"
#: 2: version keys scoped by server (a state of version 1 means one full sync, which rewrites them)
_STATE_VERSION = 2


# counter fields alike in shape to corpus.build.SourceSummary (see docs/architecture.md, "Layout decisions")
@dataclass
class SyncReport:
    """What one sync did (``throttled``: skipped, the last sync was under ``max_age`` ago)."""

    tracking_uri: str
    models_added: int = 0
    versions_added: int = 0
    skipped_untagged: int = 0
    skipped_other_encoder: int = 0
    fingerprints: int = 0
    incremental: bool = True
    throttled: bool = False
    server: str = ""
    errors: list[str] = field(default_factory=list)


def _state_path(index: Any) -> Path:
    return Path(index.path) / "sync-state.json"


def _load_state(index: Any, encoder: str) -> dict[str, Any]:
    """Per-URI sync times; empty (a full sync) when absent, unreadable or of another encoder."""
    from nar_plugin.utils.io import read_versioned_json

    try:
        state = read_versioned_json(_state_path(index), _STATE_FORMAT, _STATE_VERSION)
    except (FileNotFoundError, CorruptArtifactError) as e:
        logger.debug("no usable sync state (%s); syncing everything", e)
        return {}
    return dict(state.get("servers") or {}) if state.get("encoder") == encoder else {}


def _save_state(index: Any, encoder: str, servers: dict[str, Any]) -> None:
    from nar_plugin.utils.io import write_versioned_json

    write_versioned_json(_state_path(index), _STATE_FORMAT, _STATE_VERSION,
                         {"encoder": encoder, "servers": servers}, durable=False)


def _pages(call: Any, page_size: int = _PAGE, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search (pages grow x4 from ``page_size`` up to 500)."""
    token = None
    while True:
        page = call(max_results=page_size, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return
        page_size = min(_PAGE, page_size * 4)


def _cutoff(since: int, synced_at: float | None) -> int:
    """Entries updated after this time (ms) are read again by an incremental sync.

    Those newer than the last sync's newest entry (``since``, which is re-read too: another
    entry may share its millisecond); and, when the last sync ran less than
    ``OVERLAP_MS + CLOCK_SKEW_MS`` after that entry was made, the ``OVERLAP_MS`` before it,
    for entries tagged after that sync read them.
    """
    if synced_at is not None and synced_at * 1000 - since > OVERLAP_MS + CLOCK_SKEW_MS:
        return since - 1
    return since - OVERLAP_MS


def _index_tagged(index: Any, key: str, tags: dict[str, str], metadata: dict[str, Any], encoder: str,
                  report: SyncReport, client: Any = None) -> bool:
    from nar_plugin.index.codec import decode_embedding

    emb = tags.get(TAG_EMBEDDING)
    if not emb:
        report.skipped_untagged += 1
        return False
    if tags.get(TAG_ENCODER) != encoder:
        report.skipped_other_encoder += 1
        return False
    existing = index.get(key)
    merged = dict(existing.metadata) if existing is not None else {}
    merged.update(metadata)  # keep what this machine knew (e.g. the description) unless replaced
    desc = decode_description(tags.get(TAG_DESCRIPTION))
    if desc:
        merged["description"] = desc
    if tags.get(TAG_WEIGHTS_HASH):
        merged["weights_hash"] = tags[TAG_WEIGHTS_HASH]
    index.upsert(key, decode_embedding(emb), source_kind="mlflow", graph_hash=tags.get(TAG_GRAPH_HASH),
                 encoder_version=encoder, uri=metadata.get("uri"), metadata=merged)
    if client is not None and restore_fingerprint(client, index, key, tags, metadata.get("model_id")):
        report.fingerprints += 1
    return True


def _sync_models(client: Any, idx: Any, uri: str, encoder: str, since: int, cutoff: int, report: SyncReport) -> int:
    """Index the LoggedModels updated after ``since`` (and those after ``cutoff`` that are not
    indexed); returns the newest update time seen."""
    exps = [e.experiment_id for e in _pages(client.search_experiments)]
    newest = since
    flt = f"last_updated_timestamp > {cutoff}" if since else None
    for i in range(0, len(exps), 100):  # the server takes at most 100 experiments per search
        for lm in _pages(client.search_logged_models, experiment_ids=exps[i:i + 100], filter_string=flt):
            updated = int(lm.last_updated_timestamp or 0)
            newest = max(newest, updated)
            key = model_key(lm.model_id)
            if updated <= since and key in idx:
                continue  # seen by the last sync: only re-read in the overlap when it was not indexed
            meta = {**model_metadata(lm, uri), "uri": f"models:/{lm.model_id}"}
            if _index_tagged(idx, key, dict(lm.tags), meta, encoder, report, client):
                report.models_added += 1
    return newest


class _Unordered(Exception):
    """The registry ignored ``order_by``."""


def _newer_than(call: Any, cutoff: int, **kwargs: Any) -> Iterator[Any]:
    """The items of a paged search, newest first, down to the first updated at or before
    ``cutoff`` (ms).

    Raises:
        _Unordered: the items did not come newest first.
    """
    last = None
    for item in _pages(call, _FIRST_PAGE, order_by=["last_updated_timestamp DESC"], **kwargs):
        updated = int(item.last_updated_timestamp or 0)
        if last is not None and updated > last:
            raise _Unordered(f"{item.name} came after an older entry")
        if updated <= cutoff:
            return
        last = updated
        yield item


def _name_filter(name: str) -> str:
    quote = '"' if "'" in name else "'"
    return f"name = {quote}{name}{quote}"


def _versions_since(client: Any, since: int, cutoff: int) -> Iterator[Any]:
    """The model versions updated after ``cutoff`` (all of them when ``since`` is 0).

    A new version moves its registered model's ``last_updated_timestamp``: the registered
    models changed since ``cutoff`` are read newest first, then their versions newest first,
    each down to the first older one. (Asking for the newest versions directly makes a SQL
    server sort every version: there is no index on their update time.) A registry that does
    not order by update time, or rejects the ordering, is read in full.
    """
    from mlflow.exceptions import MlflowException

    if not since:
        yield from _pages(client.search_model_versions)
        return
    seen: set[tuple[str, str]] = set()
    try:
        names = [rm.name for rm in _newer_than(client.search_registered_models, cutoff)]
        for name in names:
            for mv in _newer_than(client.search_model_versions, cutoff, filter_string=_name_filter(name)):
                seen.add((mv.name, str(mv.version)))
                yield mv
        return
    except (_Unordered, MlflowException) as e:
        if isinstance(e, MlflowException) and "INVALID_PARAMETER_VALUE" not in str(e.error_code):
            raise
        logger.info("the registry does not list models by update time (%s); reading every version", e)
    for mv in _pages(client.search_model_versions):
        if int(mv.last_updated_timestamp or 0) > cutoff and (mv.name, str(mv.version)) not in seen:
            yield mv


def _sync_versions(client: Any, idx: Any, uri: str, encoder: str, since: int, cutoff: int,
                   report: SyncReport) -> int:
    """Index the model versions updated after ``since`` (and those after ``cutoff`` that are not
    indexed); returns the newest update time seen."""
    sid = server_id(uri)
    newest = since
    for mv in _versions_since(client, since, cutoff):
        updated = int(mv.last_updated_timestamp or 0)
        newest = max(newest, updated)
        key = version_key(mv.name, mv.version, sid)
        if updated <= since and key in idx:
            continue
        if _index_tagged(idx, key, dict(mv.tags), version_metadata(mv, uri), encoder, report, client):
            report.versions_added += 1
            legacy = idx.get(legacy_version_key(mv.name, mv.version))
            if legacy is not None and entry_server(legacy) == sid:
                idx.remove(legacy.key)  # the unscoped key an older release wrote for this version
    return newest


def sync_from_tracking(tracking_uri: str | None = None, index: Any = None, full: bool = False,
                       client: Any = None, max_age: float | None = None) -> SyncReport:
    """Pull every ``nar``-tagged LoggedModel and model version into the local index.

    Args:
        tracking_uri: server to read (default: MLflow's current tracking URI).
        index: an ``EmbeddingIndex`` (default: the one under ``NAR_HOME``).
        full: ignore the last-sync time and read everything.
        client: an ``MlflowClient`` to use instead of creating one (not checked first).
        max_age: skip the sync (``report.throttled``) when the last one of this server was
            less than this many seconds ago.

    Raises:
        TrackingUnavailableError: the server did not answer, or the local store does not exist.
    """
    from nar_plugin.integrations.mlflow.client import client_for, tracking_uri_of
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.search.api import open_index

    client = client or client_for(tracking_uri)
    idx = open_index(index)
    uri = tracking_uri_of(client)
    encoder = encoder_version()
    servers = _load_state(idx, encoder)
    mine = {} if full else servers.get(uri, {})
    report = SyncReport(uri, incremental=bool(mine), server=server_id(uri))
    if max_age and mine.get("synced_at") is not None and time.time() - float(mine["synced_at"]) < max_age:
        report.throttled = True
        return report
    try:
        since_m, since_v, synced_at = int(mine.get("models_ms", 0)), int(mine.get("versions_ms", 0)), mine.get("synced_at")
        newest_m = _sync_models(client, idx, uri, encoder, since_m, _cutoff(since_m, synced_at), report)
        newest_v = _sync_versions(client, idx, uri, encoder, since_v, _cutoff(since_v, synced_at), report)
    except NarError:
        raise
    except Exception as e:  # any transport failure means "server unavailable"
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException) and "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")):
            raise
        raise TrackingUnavailableError(f"could not sync from tracking server {uri}: {type(e).__name__}: {e}") from e
    servers[uri] = {"models_ms": newest_m, "versions_ms": newest_v, "synced_at": time.time(),
                    "server": report.server}
    _save_state(idx, encoder, servers)
    return report
