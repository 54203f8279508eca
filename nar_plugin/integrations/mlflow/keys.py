"""MLflow's index keys and ids: the key scheme belongs to this integration, not to the core index.

- ``mlflow:model:<model_id>``: a LoggedModel (the entry :func:`~nar_plugin.find_similar` shows);
- ``mlflow:version:<name>/<version>``: a registered model version; it carries its LoggedModel's
  vector and ``metadata["model_id"]``, and search folds it into that model's entry
  (:mod:`nar_plugin.integrations.mlflow.resolve`).

Ids users type: a run id (32 hex digits), a LoggedModel id (``m-`` + 32 hex digits), or a
``models:/<model_id>`` / ``models:/<name>/<version or alias>`` URI.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MODEL_PREFIX",
    "PREFIX",
    "VERSION_PREFIX",
    "is_mlflow_query",
    "model_id_from_source",
    "model_key",
    "version_key",
    "version_of",
    "version_parent",
]

PREFIX = "mlflow:"
MODEL_PREFIX = "mlflow:model:"
VERSION_PREFIX = "mlflow:version:"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]{32})")


def model_key(model_id: str) -> str:
    """The index key of a LoggedModel."""
    return f"{MODEL_PREFIX}{model_id}"


def version_key(name: str, version: str | int) -> str:
    """The index key of a registered model version."""
    return f"{VERSION_PREFIX}{name}/{version}"


def version_of(key: str) -> str:
    """``"<name>/<version>"`` of a version key (the key itself when it is not one)."""
    return key.removeprefix(VERSION_PREFIX)


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
