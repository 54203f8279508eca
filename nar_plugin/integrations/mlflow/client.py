"""``MlflowClient`` construction and the one answer to "which tracking server is this?"."""

from __future__ import annotations

from typing import Any

__all__ = ["client_for", "public_client", "tracking_uri_of"]


def client_for(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (default: MLflow's current tracking URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


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
