"""Public MLflow helpers: ``nar_plugin.mlflow.autolog``, ``sync``, ``dedup_report``."""

from __future__ import annotations

from nar_plugin.integrations.mlflow.hooks import (
    autolog,
    index_logged_model,
    is_autologging,
)
from nar_plugin.integrations.mlflow.registry import dedup_report
from nar_plugin.integrations.mlflow.sync import sync_from_tracking as sync

__all__ = ["autolog", "dedup_report", "index_logged_model", "is_autologging", "sync"]
