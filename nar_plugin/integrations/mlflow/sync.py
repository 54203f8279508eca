"""Keep the local index in step with a tracking server.

The ``nar.*`` tags on LoggedModels and model versions are the shared source of truth; every
client's local index is a cache rebuilt from them. :func:`sync_from_tracking` is incremental: it
asks only for entries updated since the last sync of that tracking URI (``last_updated_timestamp
> t``), recorded in ``<index>/sync-state.json`` (with the encoder version: another encoder means
a full sync). LoggedModels are filtered by the server; model versions are listed and filtered
here (the registry search cannot filter on time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError, NarError, TrackingUnavailableError
from nar_plugin.integrations.mlflow.keys import model_key, version_key
from nar_plugin.integrations.mlflow.tags import (
    TAG_DESCRIPTION,
    TAG_EMBEDDING,
    TAG_ENCODER,
    TAG_GRAPH_HASH,
    decode_description,
    model_metadata,
    version_metadata,
)

logger = logging.getLogger(__name__)

__all__ = ["SyncReport", "TrackingUnavailableError", "sync_from_tracking"]

_PAGE = 500
_STATE_FORMAT = "nar-mlflow-sync-state"
_STATE_VERSION = 1


@dataclass
class SyncReport:
    """What one sync did."""

    tracking_uri: str
    models_added: int = 0
    versions_added: int = 0
    skipped_untagged: int = 0
    skipped_other_encoder: int = 0
    incremental: bool = True
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


def _pages(call: Any, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = call(max_results=_PAGE, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def _index_tagged(index: Any, key: str, tags: dict[str, str], metadata: dict[str, Any], encoder: str,
                  report: SyncReport) -> bool:
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
    index.upsert(key, decode_embedding(emb), source_kind="mlflow", graph_hash=tags.get(TAG_GRAPH_HASH),
                 encoder_version=encoder, uri=metadata.get("uri"), metadata=merged)
    return True


def _sync_models(client: Any, idx: Any, uri: str, encoder: str, since: int, report: SyncReport) -> int:
    """Index the LoggedModels updated after ``since``; returns the newest update time seen."""
    exps = [e.experiment_id for e in _pages(client.search_experiments)]
    newest = since
    for i in range(0, len(exps), 100):  # the server takes at most 100 experiments per search
        flt = f"last_updated_timestamp > {since}" if since else None
        for lm in _pages(client.search_logged_models, experiment_ids=exps[i:i + 100], filter_string=flt):
            newest = max(newest, int(lm.last_updated_timestamp or 0))
            meta = {**model_metadata(lm, uri), "uri": f"models:/{lm.model_id}"}
            if _index_tagged(idx, model_key(lm.model_id), dict(lm.tags), meta, encoder, report):
                report.models_added += 1
    return newest


def _sync_versions(client: Any, idx: Any, uri: str, encoder: str, since: int, report: SyncReport) -> int:
    """Index the model versions updated after ``since``; returns the newest update time seen.

    The registry's search does not filter on time (only name, version_number, run_id,
    source_path), so versions are listed and the time filter is applied here.
    """
    newest = since
    for mv in _pages(client.search_model_versions):
        updated = int(mv.last_updated_timestamp or 0)
        newest = max(newest, updated)
        if updated > since and _index_tagged(idx, version_key(mv.name, mv.version), dict(mv.tags),
                                             version_metadata(mv, uri), encoder, report):
            report.versions_added += 1
    return newest


def sync_from_tracking(tracking_uri: str | None = None, index: Any = None, full: bool = False,
                       client: Any = None) -> SyncReport:
    """Pull every ``nar``-tagged LoggedModel and model version into the local index.

    Args:
        tracking_uri: server to read (default: MLflow's current tracking URI).
        index: an ``EmbeddingIndex`` (default: the one under ``NAR_HOME``).
        full: ignore the last-sync time and read everything.
        client: an ``MlflowClient`` to use instead of creating one.

    Raises:
        TrackingUnavailableError: the server did not answer.
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
    report = SyncReport(uri, incremental=bool(mine))
    try:
        newest_m = _sync_models(client, idx, uri, encoder, int(mine.get("models_ms", 0)), report)
        newest_v = _sync_versions(client, idx, uri, encoder, int(mine.get("versions_ms", 0)), report)
    except NarError:
        raise
    except Exception as e:  # noqa: BLE001 - any transport failure means "server unavailable"
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException) and "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")):
            raise
        raise TrackingUnavailableError(f"could not sync from tracking server {uri}: {type(e).__name__}: {e}") from e
    servers[uri] = {"models_ms": newest_m, "versions_ms": newest_v}
    _save_state(idx, encoder, servers)
    return report
