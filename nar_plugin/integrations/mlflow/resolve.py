"""MLflow in search: run ids, ``m-...`` model ids and ``models:/`` URIs as queries, and registered
versions folded into their LoggedModel.

:func:`register` is named in :data:`nar_plugin.config.SEARCH_INTEGRATIONS`, so search calls it
the first time it needs a resolver; importing this module imports nothing from MLflow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from nar_plugin.errors import KeyNotFoundError, TrackingUnavailableError
from nar_plugin.integrations.mlflow.keys import (
    PREFIX,
    in_scope,
    is_mlflow_query,
    model_id_from_source,
    model_key,
    server_id,
    version_of,
    version_parent,
)

logger = logging.getLogger(__name__)

__all__ = ["model_id_for", "register", "resolve_query"]

#: the registry stages ``models:/<name>/<stage>`` may name (MLflow's deprecated stage URIs)
_STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
#: MLflow error codes that mean "no such run / model / version / alias"
_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def register() -> None:
    """Register the MLflow key scheme, query resolver and version folding with search."""
    from nar_plugin.search import resolvers

    resolvers.register_key_scheme(PREFIX, owner="mlflow")
    resolvers.register_resolver("mlflow", is_mlflow_query, resolve_query)
    resolvers.register_fold_rule(resolvers.FoldRule(
        "mlflow-versions", parent_of=version_parent, label=lambda e: version_of(e.key),
        listed_as="registered_versions"))


@contextlib.contextmanager
def _mlflow_errors(query: str, uri: str) -> Iterator[None]:
    """MLflow's "does not exist" -> KeyNotFoundError naming ``query``; a failed request ->
    TrackingUnavailableError naming ``uri``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        code = str(getattr(e, "error_code", ""))
        if any(c in code for c in _NOT_FOUND_CODES):
            raise KeyNotFoundError(f"{query!r} was not found on the tracking server {uri}: {e.message}") from e
        raise TrackingUnavailableError(f"the tracking server {uri} failed while resolving {query!r}: "
                                       f"{code or type(e).__name__}: {e.message}") from e


def _latest_version(client: Any, query: str, name: str) -> Any:
    quote = '"' if "'" in name else "'"
    found = client.search_model_versions(f"name = {quote}{name}{quote}", max_results=1,
                                         order_by=["version_number DESC"])
    if not found:
        raise KeyNotFoundError(f"{query!r} was not found: registered model {name!r} has no versions "
                               "(or does not exist)")
    return found[0]


def _model_id_of_uri(client: Any, query: str) -> str | None:
    """The LoggedModel of ``models:/<model_id>``, ``models:/<name>@<alias>`` or
    ``models:/<name>/<version | latest | stage | alias>``."""
    rest = query[len("models:/"):]
    if rest.startswith("m-"):
        return rest.split("/")[0]
    name, at, alias = rest.rpartition("@")
    if at and name and alias and "/" not in alias:
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = rest.rpartition("/")
        if not name or not version:
            raise KeyNotFoundError(f"{query!r} is not models:/<name>/<version>, models:/<name>/latest, "
                                   "models:/<name>@<alias> or models:/<model_id>")
        if version.isdigit():
            mv = client.get_model_version(name, version)
        elif version.lower() == "latest":
            mv = _latest_version(client, query, name)
        elif version.lower() in _STAGES:
            found = client.get_latest_versions(name, stages=[_STAGES[version.lower()]])
            if not found:
                raise KeyNotFoundError(f"{query!r} was not found: registered model {name!r} has no version "
                                       f"in stage {version!r}")
            mv = found[0]
        else:  # models:/<name>/<alias>, as older releases accepted
            mv = client.get_model_version_by_alias(name, version)
    return getattr(mv, "model_id", None) or model_id_from_source(mv.source)


def _model_id_of_run(client: Any, run_id: str) -> str:
    run = client.get_run(run_id)
    outputs = list(getattr(getattr(run, "outputs", None), "model_outputs", None) or [])
    if not outputs:
        raise KeyNotFoundError(f"run {run_id} logged no model (nothing to search with)")
    return max(outputs, key=lambda o: o.step or 0).model_id  # the run's last-step model


def model_id_for(client: Any, query: str) -> str:
    """The LoggedModel id a run id, model id or ``models:/`` URI points to.

    Raises:
        KeyNotFoundError: nothing with that id exists, or it has no LoggedModel.
        TrackingUnavailableError: the server failed to answer.
    """
    from nar_plugin.integrations.mlflow.client import tracking_uri_of

    with _mlflow_errors(query, tracking_uri_of(client)):
        if query.startswith("models:/"):
            model_id = _model_id_of_uri(client, query)
        elif query.startswith("m-"):
            model_id = query  # checked when its embedding is read
        else:
            model_id = _model_id_of_run(client, query)
    if model_id is None:
        raise KeyNotFoundError(f"{query!r} does not point to a LoggedModel")
    return model_id


def _sync_first(client: Any, index: Any) -> None:
    """Bring the local index up to date (incremental; at most every ``NAR_SYNC_INTERVAL`` s).

    A read-only index is searched as it is; a server that fails mid-sync leaves the index as it
    is, with a warning.
    """
    from nar_plugin.config import NAR_SYNC_INTERVAL
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking

    if getattr(index, "read_only", False):
        logger.info("the index %s is read-only: searching it without syncing from MLflow first", index.path)
        return
    try:
        sync_from_tracking(index=index, client=client, max_age=NAR_SYNC_INTERVAL.get())
    except TrackingUnavailableError as e:
        logger.warning("%s; searching the local index as it is", e)


def resolve_query(query: str, index: Any) -> Any:
    """Resolve a run id, ``m-...`` model id or ``models:/`` URI for find_similar.

    Checks the tracking server first (a bounded check, see
    :func:`~nar_plugin.integrations.mlflow.client.check_tracking_store`) and syncs the local
    index (incremental). The query's own LoggedModel (and so its registered versions) is left
    out of the results, and so are the MLflow entries of other tracking servers.

    Raises:
        KeyNotFoundError: nothing with that id exists, or it has no model.
        TrackingUnavailableError: the tracking server does not answer or the local store does
            not exist.
    """
    from nar_plugin.integrations.mlflow.client import client_for, tracking_uri_of
    from nar_plugin.integrations.mlflow.indexing import embedding_for_model
    from nar_plugin.search.resolvers import ResolvedQuery

    client = client_for(None)
    uri = tracking_uri_of(client)
    _sync_first(client, index)
    model_id = model_id_for(client, query)
    with _mlflow_errors(query, uri):
        vector, graph_hash = embedding_for_model(client, model_id)
    own = model_key(model_id)
    entry = index.get(own)
    desc = entry.metadata.get("description") if entry is not None else None
    server = server_id(uri)
    return ResolvedQuery(vector, {"description": desc or {}, "tracking_uri": uri}, (own,), graph_hash,
                         scope=lambda e: in_scope(e, server))
