"""Keep the local index in step with a tracking server, and resolve MLflow ids to embeddings.

The ``nar.*`` tags on LoggedModels and model versions are the shared source of truth; every
client's local index is a cache rebuilt from them. :func:`sync_from_tracking` is incremental: it
asks only for entries updated since the last sync of that tracking URI (``last_updated_timestamp
> t``), recorded in ``<index>/sync-state.json``. LoggedModels are filtered by the server; model
versions are listed and filtered here (the registry search cannot filter on time).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import KeyNotFoundError, NarError

logger = logging.getLogger(__name__)

__all__ = ["SyncReport", "sync_from_tracking", "resolve_query", "TrackingUnavailableError", "embedding_for_model"]

_PAGE = 500


class TrackingUnavailableError(NarError, ConnectionError):
    """The tracking server could not be reached."""


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


def _load_state(index: Any) -> dict[str, Any]:
    p = _state_path(index)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_state(index: Any, state: dict[str, Any]) -> None:
    p = _state_path(index)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, p)


def _client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def _uri_of(client: Any) -> str:
    return str(getattr(getattr(client, "_tracking_client", None), "tracking_uri", None) or "default")


def _experiment_ids(client: Any) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=_PAGE, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def _index_tagged(index: Any, key: str, tags: dict[str, str], metadata: dict[str, Any], encoder: str,
                  report: SyncReport) -> bool:
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.integrations.mlflow.hooks import TAG_EMBEDDING, TAG_ENCODER, TAG_GRAPH_HASH

    from nar_plugin.integrations.mlflow.hooks import TAG_DESCRIPTION, decode_description

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
    from nar_plugin.search.api import open_index
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.integrations.mlflow.hooks import model_metadata

    client = client or _client(tracking_uri)
    idx = open_index(index)
    uri = _uri_of(client)
    encoder = encoder_version()
    state = _load_state(idx)
    mine = state.get(uri, {})
    report = SyncReport(uri, incremental=not full and bool(mine))
    since_models = 0 if full else int(mine.get("models_ms", 0))
    since_versions = 0 if full else int(mine.get("versions_ms", 0))
    try:
        exps = _experiment_ids(client)
        newest_m = since_models
        for i in range(0, len(exps), 100):
            token = None
            while True:
                page = client.search_logged_models(
                    experiment_ids=exps[i:i + 100],
                    filter_string=f"last_updated_timestamp > {since_models}" if since_models else None,
                    max_results=_PAGE, page_token=token)
                for lm in page:
                    newest_m = max(newest_m, int(lm.last_updated_timestamp or 0))
                    meta = {**model_metadata(lm, uri), "uri": f"models:/{lm.model_id}"}
                    if _index_tagged(idx, f"mlflow:model:{lm.model_id}", dict(lm.tags), meta, encoder, report):
                        report.models_added += 1
                token = page.token
                if not token:
                    break
        # The registry's search does not filter on time (only name, version_number, run_id,
        # source_path), so versions are listed and the time filter is applied here.
        newest_v = since_versions
        token = None
        while True:
            page = client.search_model_versions(max_results=_PAGE, page_token=token)
            for mv in page:
                updated = int(mv.last_updated_timestamp or 0)
                newest_v = max(newest_v, updated)
                if updated <= since_versions:
                    continue
                meta = version_metadata(mv, uri)
                if _index_tagged(idx, f"mlflow:version:{mv.name}/{mv.version}", dict(mv.tags), meta, encoder, report):
                    report.versions_added += 1
            token = page.token
            if not token:
                break
    except NarError:
        raise
    except Exception as e:  # noqa: BLE001 - any transport failure means "server unavailable"
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException) and "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")):
            raise
        raise TrackingUnavailableError(f"could not sync from tracking server {uri}: {type(e).__name__}: {e}") from e
    state[uri] = {"models_ms": newest_m, "versions_ms": newest_v}
    _save_state(idx, state)
    return report


def version_metadata(mv: Any, uri: str | None) -> dict[str, Any]:
    """Index metadata for a model version."""
    return {
        "registered_name": mv.name,
        "version": str(mv.version),
        "model_id": getattr(mv, "model_id", None) or _model_id_from_source(mv.source),
        "run_id": mv.run_id,
        "tracking_uri": uri,
        "uri": f"models:/{mv.name}/{mv.version}",
        "created_ms": mv.creation_timestamp,
    }


def _model_id_from_source(source: str | None) -> str | None:
    m = re.match(r"models:/(m-[0-9a-f]{32})", source or "")
    return m.group(1) if m else None


# ------------------------------------------------------------------ resolving ids
def _download_model_files(client: Any, model_id: str) -> Path:
    """Download only what extraction reads (MLmodel, pt2 archive / ONNX file / config.json)."""
    import tempfile

    from mlflow.artifacts import download_artifacts

    lm = client.get_logged_model(model_id)
    base = lm.artifact_location.rstrip("/")
    out = Path(tempfile.mkdtemp(prefix="nar-mlflow-"))
    download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(out))
    from nar_plugin.extract.mlflow_model import read_mlmodel

    flavors = read_mlmodel(out).get("flavors") or {}
    wanted: list[str] = []
    if "pytorch" in flavors:
        wanted.append("data")
    if "onnx" in flavors and isinstance(flavors["onnx"], dict) and flavors["onnx"].get("data"):
        wanted.append(flavors["onnx"]["data"])
    if "transformers" in flavors:
        wanted.append("model/config.json")
    for rel in wanted:
        try:
            download_artifacts(artifact_uri=f"{base}/{rel}", dst_path=str(out))
        except Exception as e:  # noqa: BLE001 - missing optional piece: extraction will say what's absent
            logger.debug("could not download %s of %s: %s", rel, model_id, e)
    return out


def embedding_for_model(client: Any, model_id: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(vector, graph_hash, description) of a LoggedModel, from its tags or by extracting.

    A model logged before nar-plugin was installed has no tags: its graph files are downloaded
    (never its pickles), embedded, and the tags are back-filled.
    """
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.integrations.mlflow.hooks import TAG_EMBEDDING, TAG_ENCODER, TAG_GRAPH_HASH, index_logged_model

    lm = client.get_logged_model(model_id)
    tags = dict(lm.tags)
    if not tags.get(TAG_EMBEDDING) or tags.get(TAG_ENCODER) != encoder_version():
        local = _download_model_files(client, model_id)
        tags = index_logged_model(client, model_id, local)
        if TAG_EMBEDDING not in tags:
            raise KeyNotFoundError(f"model {model_id} has no embeddable graph (nar.status={tags.get('nar.status')})")
    return decode_embedding(tags[TAG_EMBEDDING]), tags.get(TAG_GRAPH_HASH), {}


def resolve_query(query: str, index: Any) -> Any:
    """Resolve a run id, ``m-...`` model id or ``models:/name/version`` URI for find_similar.

    Syncs the local index first (incremental); an unreachable server leaves the local index as
    it is, with a warning.

    Raises:
        KeyNotFoundError: nothing with that id exists, or it has no model.
    """
    from nar_plugin.search.api import ResolvedQuery

    client = _client(None)
    try:
        sync_from_tracking(index=index, client=client)
    except TrackingUnavailableError as e:
        logger.warning("%s; searching the local index as it is", e)
    model_id: str | None = None
    if query.startswith("models:/"):
        rest = query[len("models:/"):]
        if rest.startswith("m-"):
            model_id = rest.split("/")[0]
        else:
            name, _, version = rest.rpartition("/")
            if not name or not version:
                raise KeyNotFoundError(f"{query!r} is not models:/<name>/<version> or models:/<model_id>")
            if not version.isdigit():
                mv = client.get_model_version_by_alias(name, version)
            else:
                mv = client.get_model_version(name, version)
            model_id = getattr(mv, "model_id", None) or _model_id_from_source(mv.source)
    elif query.startswith("m-"):
        model_id = query
    else:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(query)
        except MlflowException as e:
            raise KeyNotFoundError(f"{query!r} is not a run id known to the tracking server") from e
        outputs = getattr(run, "outputs", None)
        model_outputs = list(getattr(outputs, "model_outputs", None) or [])
        if not model_outputs:
            raise KeyNotFoundError(f"run {query} logged no model")
        model_id = max(model_outputs, key=lambda o: o.step or 0).model_id
    if model_id is None:
        raise KeyNotFoundError(f"{query!r} does not point to a LoggedModel")
    vector, ghash, _ = embedding_for_model(client, model_id)
    own = f"mlflow:model:{model_id}"
    entry = index.get(own)
    desc = entry.metadata.get("description") if entry is not None else None
    return ResolvedQuery(vector, {"description": desc or {}}, (own,), ghash, exclude_model_id=model_id)
