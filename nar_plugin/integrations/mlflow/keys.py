"""MLflow's index keys and ids: the key scheme belongs to this integration, not to the core index.

- ``mlflow:model:<model_id>``: a LoggedModel (the entry :func:`~nar_plugin.find_similar` shows).
  LoggedModel ids are unique across servers; the entry's ``metadata["server"]`` says which
  tracking server it came from.
- ``mlflow:version:<server>:<name>/<version>``: a registered model version of the tracking
  server ``<server>`` (:func:`server_id`: 12 hex digits of the hash of its normalised URI), so
  that two servers' ``resnet/1`` never share an entry. It carries its LoggedModel's vector and
  ``metadata["model_id"]``, and search folds it into that model's entry
  (:mod:`nar_plugin.integrations.mlflow.resolve`). Keys written before scoping
  (``mlflow:version:<name>/<version>``) stay readable: their server comes from their
  ``tracking_uri`` metadata, and a full sync of that server replaces them.

Ids users type: a run id (32 hex digits), a LoggedModel id (``m-`` + 32 hex digits), or a
``models:/<model_id>``, ``models:/<name>/<version | latest | stage>`` or ``models:/<name>@<alias>``
URI.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "MODEL_PREFIX",
    "PREFIX",
    "SERVER_FIELD",
    "VERSION_PREFIX",
    "entry_server",
    "in_scope",
    "is_mlflow_query",
    "legacy_version_key",
    "model_id_from_source",
    "model_key",
    "normalise_tracking_uri",
    "server_id",
    "version_key",
    "version_of",
    "version_parent",
    "version_prefix",
]

PREFIX = "mlflow:"
MODEL_PREFIX = "mlflow:model:"
VERSION_PREFIX = "mlflow:version:"
#: the index metadata field naming an entry's tracking server (:func:`server_id`)
SERVER_FIELD = "server"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]{32})")
_SCOPED = re.compile(r"mlflow:version:([0-9a-f]{12}):")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAMED_STORES = frozenset({"databricks", "databricks-uc", "uc"})  # URIs without a scheme that are no path


def normalise_tracking_uri(uri: str) -> str:
    """One spelling per tracking store: scheme and host lower-cased, default port, trailing
    ``/`` and credentials dropped; local SQLite and file stores as absolute paths.

    Two names of one host (``localhost`` / ``127.0.0.1``) stay two servers: nothing here can
    know they are the same.
    """
    uri = uri.strip()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in _DEFAULT_PORTS:
        host = (parts.hostname or "").lower()
        if parts.port and parts.port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{parts.port}"
        return f"{scheme}://{host}{parts.path.rstrip('/')}"
    if scheme == "sqlite" and uri.startswith("sqlite:///") and len(uri) > len("sqlite:///"):
        path = unquote(uri[len("sqlite:///"):].split("?")[0])
        return f"sqlite:///{os.path.abspath(path)}"
    if scheme == "file" or (not scheme and uri not in _NAMED_STORES):
        return "file://" + os.path.abspath(unquote(parts.path if scheme else uri))
    return uri.rstrip("/")


def server_id(tracking_uri: str) -> str:
    """12 hex digits naming a tracking server: the SHA-256 of its normalised URI."""
    return hashlib.sha256(normalise_tracking_uri(tracking_uri).encode()).hexdigest()[:12]


def model_key(model_id: str) -> str:
    """The index key of a LoggedModel."""
    return f"{MODEL_PREFIX}{model_id}"


def version_prefix(server: str | None = None) -> str:
    """The key prefix of the registered versions of ``server`` (of every server when ``None``)."""
    return f"{VERSION_PREFIX}{server}:" if server else VERSION_PREFIX


def version_key(name: str, version: str | int, server: str) -> str:
    """The index key of version ``version`` of registered model ``name`` on ``server``
    (a :func:`server_id`)."""
    return f"{version_prefix(server)}{name}/{version}"


def legacy_version_key(name: str, version: str | int) -> str:
    """The key versions had before keys were scoped by server (still read, replaced on sync)."""
    return f"{VERSION_PREFIX}{name}/{version}"


def version_of(key: str) -> str:
    """``"<name>/<version>"`` of a version key (the key itself when it is not one)."""
    m = _SCOPED.match(key)
    return key[m.end():] if m else key.removeprefix(VERSION_PREFIX)


def model_id_from_source(source: str | None) -> str | None:
    """The LoggedModel id of a ``models:/m-...`` source URI, else ``None``."""
    m = _MODEL_URI.match(source or "")
    return m.group(1) if m else None


def is_mlflow_query(query: str) -> bool:
    """A run id, an ``m-...`` LoggedModel id or a ``models:/`` URI."""
    return query.startswith("models:/") or bool(_RUN_ID.fullmatch(query) or _MODEL_ID.fullmatch(query))


def version_parent(entry: Any) -> str | None:
    """The LoggedModel key a version entry folds into (``None`` for other entries)."""
    model_id = (entry.metadata or {}).get("model_id")
    return model_key(model_id) if entry.key.startswith(VERSION_PREFIX) and model_id else None


def entry_server(entry: Any) -> str | None:
    """The tracking server an MLflow entry came from: from its key, its ``server`` metadata or
    its ``tracking_uri`` metadata (entries written before scoping); ``None`` when unknown."""
    m = _SCOPED.match(entry.key)
    if m:
        return m.group(1)
    meta = entry.metadata or {}
    if meta.get(SERVER_FIELD):
        return str(meta[SERVER_FIELD])
    uri = meta.get("tracking_uri")
    return server_id(uri) if uri else None


def in_scope(entry: Any, server: str) -> bool:
    """May ``entry`` answer a query asked of tracking server ``server``? Every entry that is not
    MLflow's does; an MLflow entry does when it is of that server (or of an unknown one)."""
    if not entry.key.startswith(PREFIX):
        return True
    found = entry_server(entry)
    return found is None or found == server
