"""MLflow in search: run ids, ``m-...`` model ids and ``models:/`` URIs as queries, and registered
versions folded into their LoggedModel.

:func:`register` is named in :data:`nar_plugin.config.SEARCH_INTEGRATIONS`, so search calls it
the first time it needs a resolver; importing this module imports nothing from MLflow.
"""

from __future__ import annotations

import logging
from typing import Any

from nar_plugin.errors import KeyNotFoundError, TrackingUnavailableError
from nar_plugin.integrations.mlflow.keys import (
    PREFIX,
    is_mlflow_query,
    model_id_from_source,
    model_key,
    version_of,
    version_parent,
)

logger = logging.getLogger(__name__)

__all__ = ["model_id_for", "register", "resolve_query"]


def register() -> None:
    """Register the MLflow key scheme, query resolver and version folding with search."""
    from nar_plugin.search import resolvers

    resolvers.register_key_scheme(PREFIX, owner="mlflow")
    resolvers.register_resolver("mlflow", is_mlflow_query, resolve_query)
    resolvers.register_fold_rule(resolvers.FoldRule(
        "mlflow-versions", parent_of=version_parent, label=lambda e: version_of(e.key),
        listed_as="registered_versions"))


def _model_id_of_uri(client: Any, query: str) -> str | None:
    rest = query[len("models:/"):]
    if rest.startswith("m-"):
        return rest.split("/")[0]
    name, _, version = rest.rpartition("/")
    if not name or not version:
        raise KeyNotFoundError(f"{query!r} is not models:/<name>/<version> or models:/<model_id>")
    if version.isdigit():
        mv = client.get_model_version(name, version)
    else:
        mv = client.get_model_version_by_alias(name, version)
    return getattr(mv, "model_id", None) or model_id_from_source(mv.source)


def _model_id_of_run(client: Any, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise KeyNotFoundError(f"{run_id!r} is not a run id known to the tracking server") from e
    outputs = list(getattr(getattr(run, "outputs", None), "model_outputs", None) or [])
    if not outputs:
        raise KeyNotFoundError(f"run {run_id} logged no model")
    return max(outputs, key=lambda o: o.step or 0).model_id  # the run's last-step model


def model_id_for(client: Any, query: str) -> str:
    """The LoggedModel id a run id, model id or ``models:/`` URI points to.

    Raises:
        KeyNotFoundError: nothing with that id exists, or it has no LoggedModel.
    """
    if query.startswith("models:/"):
        model_id = _model_id_of_uri(client, query)
    elif query.startswith("m-"):
        model_id = query
    else:
        model_id = _model_id_of_run(client, query)
    if model_id is None:
        raise KeyNotFoundError(f"{query!r} does not point to a LoggedModel")
    return model_id


def resolve_query(query: str, index: Any) -> Any:
    """Resolve a run id, ``m-...`` model id or ``models:/name/version`` URI for find_similar.

    Syncs the local index first (incremental); an unreachable server leaves the local index as
    it is, with a warning. The query's own LoggedModel (and so its registered versions) is left
    out of the results.

    Raises:
        KeyNotFoundError: nothing with that id exists, or it has no model.
    """
    from nar_plugin.integrations.mlflow.client import client_for
    from nar_plugin.integrations.mlflow.indexing import embedding_for_model
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.resolvers import ResolvedQuery

    client = client_for(None)
    try:
        sync_from_tracking(index=index, client=client)
    except TrackingUnavailableError as e:
        logger.warning("%s; searching the local index as it is", e)
    model_id = model_id_for(client, query)
    vector, graph_hash = embedding_for_model(client, model_id)
    own = model_key(model_id)
    entry = index.get(own)
    desc = entry.metadata.get("description") if entry is not None else None
    return ResolvedQuery(vector, {"description": desc or {}}, (own,), graph_hash)

