"""``MlflowClient`` construction and the answers to "which tracking server is this, and does it
answer?".

Queries (``find_similar(run_id)``, ``nar index sync``, ``nar dedup``) go through
:func:`client_for`, which first checks the store without MLflow's retries (minutes by default):
an HTTP server must answer ``/health`` within ``NAR_TRACKING_TIMEOUT`` seconds, a database server
must accept a connection, and a local SQLite or file store must already exist (MLflow creates
``./mlflow.db`` on first use; a query must not). Failures raise
:class:`~nar_plugin.errors.TrackingUnavailableError` naming the URI, where it came from and
``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from nar_plugin.errors import TrackingUnavailableError
from nar_plugin.integrations.mlflow.keys import server_id

__all__ = [
    "check_tracking_store",
    "client_for",
    "public_client",
    "resolve_tracking_uri",
    "server_of",
    "tracking_uri_of",
    "using_tracking_uri",
]

ENV_VAR = "MLFLOW_TRACKING_URI"
#: a server that answered is not asked again for this many seconds
_PROBE_TTL_S = 30.0
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_ANSWERED: dict[str, float] = {}
_ANSWERED_LOCK = threading.Lock()
_OVERRIDE: ContextVar[str | None] = ContextVar("nar_tracking_uri", default=None)


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[None]:
    """Within the block, queries that name no tracking URI use ``uri`` (``None``: no change).

    Scoped to the current thread / task; MLflow's own global tracking URI is not touched.
    """
    token = _OVERRIDE.set(uri) if uri else None
    try:
        yield
    finally:
        if token is not None:
            _OVERRIDE.reset(token)


def resolve_tracking_uri(tracking_uri: str | None = None) -> tuple[str, str]:
    """``(uri, origin)``: the tracking URI a query uses and where it came from (for messages)."""
    given = tracking_uri or _OVERRIDE.get()
    if given:
        return str(given), "given with tracking_uri / --tracking-uri"
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    uri = str(mlflow.get_tracking_uri())
    if os.environ.get(ENV_VAR):
        return uri, f"from {ENV_VAR}"
    if is_tracking_uri_set():
        return uri, "set with mlflow.set_tracking_uri()"
    return uri, f"MLflow's default, because {ENV_VAR} is not set"


def _local_path(uri: str) -> Path | None:
    """The file or directory of a local SQLite / file store (``None`` for other stores)."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        rest = uri[len("sqlite://"):].split("?")[0]
        if rest in ("", "/", "/:memory:"):
            return None  # in-memory database: nothing is created on disk
        return Path(unquote(rest.removeprefix("/")))
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme and uri not in ("databricks", "databricks-uc", "uc"):
        return Path(uri)
    return None


def _probe_http(uri: str, timeout: float) -> str | None:
    """Why ``uri`` does not answer ``GET /health`` (``None``: it answered)."""
    import requests
    from mlflow.environment_variables import (
        MLFLOW_TRACKING_INSECURE_TLS,
        MLFLOW_TRACKING_SERVER_CERT_PATH,
    )

    verify: bool | str = MLFLOW_TRACKING_SERVER_CERT_PATH.get() or not MLFLOW_TRACKING_INSECURE_TLS.get()
    try:
        r = requests.get(f"{uri.rstrip('/')}/health", timeout=(timeout, timeout), verify=verify,
                         allow_redirects=False)
    except requests.exceptions.SSLError:
        return None  # it answers; MLflow reports its TLS problem with its own message
    except requests.exceptions.Timeout:
        return f"no answer within {timeout:g} s (NAR_TRACKING_TIMEOUT)"
    except requests.exceptions.RequestException as e:
        reason = getattr(e, "args", [None])[0]
        text = str(getattr(reason, "reason", None) or e)
        return "connection refused" if "refused" in text.lower() else text.split(": ", 1)[-1][:200]
    # a proxy or an auth layer may refuse /health (401, 403, 404): the server is there
    return f"it answered HTTP {r.status_code}" if r.status_code >= 500 else None


def _probe_tcp(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def check_tracking_store(uri: str, origin: str = "") -> None:
    """Raise :class:`TrackingUnavailableError` unless the store at ``uri`` exists and answers.

    A server that answered is not asked again for 30 s. Other stores (Databricks, ...) are
    left to MLflow.

    Raises:
        TrackingUnavailableError: a local store that does not exist, or a server that did not
            answer within ``NAR_TRACKING_TIMEOUT`` seconds.
    """
    from nar_plugin.config import NAR_TRACKING_TIMEOUT

    where = f" ({origin})" if origin else ""
    path = _local_path(uri)
    if path is not None:
        if not path.exists():
            raise TrackingUnavailableError(
                f"no MLflow tracking store at {uri}{where}: {path} does not exist, and a query does not "
                f"create one. Set {ENV_VAR} (or pass --tracking-uri) to your tracking server or store")
        return
    with _ANSWERED_LOCK:
        if time.monotonic() - _ANSWERED.get(uri, -_PROBE_TTL_S) < _PROBE_TTL_S:
            return
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    timeout = NAR_TRACKING_TIMEOUT.get()
    if scheme in ("http", "https"):
        why = _probe_http(uri, timeout)
    elif scheme in _DB_PORTS and parts.hostname:
        why = _probe_tcp(parts.hostname, parts.port or _DB_PORTS[scheme], timeout)
    else:
        return
    if why is not None:
        raise TrackingUnavailableError(
            f"cannot reach the MLflow tracking server at {uri}{where}: {why}. Start it, or set {ENV_VAR} "
            "(or pass --tracking-uri) to a server that answers")
    with _ANSWERED_LOCK:
        _ANSWERED[uri] = time.monotonic()


def client_for(tracking_uri: str | None = None, *, check: bool = True) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (default: :func:`using_tracking_uri`'s, else
    MLflow's current tracking URI), after :func:`check_tracking_store` when ``check``.

    Raises:
        TrackingUnavailableError: ``check`` and the store is missing or does not answer.
    """
    from mlflow import MlflowClient

    uri, origin = resolve_tracking_uri(tracking_uri)
    if check:
        check_tracking_store(uri, origin)
    return MlflowClient(tracking_uri=uri)


def public_client(service_client: Any) -> Any:
    """An ``MlflowClient`` talking to the same servers as a service-layer client."""
    from mlflow import MlflowClient

    tracking = getattr(service_client, "tracking_uri", None)
    registry = getattr(service_client, "registry_uri", None)
    return MlflowClient(tracking_uri=tracking, registry_uri=registry)


def tracking_uri_of(client: Any) -> str:
    """The tracking URI a client talks to (stored in index metadata, keys the sync state).

    ``MlflowClient`` resolves its URI when built; a client-like object without one talks to
    MLflow's current tracking URI.
    """
    uri = getattr(getattr(client, "_tracking_client", None), "tracking_uri", None)
    uri = uri or getattr(client, "tracking_uri", None)
    if not uri:
        import mlflow

        uri = mlflow.get_tracking_uri()
    return str(uri)


def server_of(client: Any) -> str:
    """The :func:`~nar_plugin.integrations.mlflow.keys.server_id` of a client's tracking server."""
    return server_id(tracking_uri_of(client))
