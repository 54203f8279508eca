"""Public MLflow helpers: ``nar_plugin.mlflow.autolog``, ``sync``, ``dedup_report``.

Every function checks first that MLflow is installed: without the ``mlflow`` extra it raises
:class:`~nar_plugin.errors.MissingDependencyError` with the ``pip install 'nar-plugin[mlflow]'``
line (an ``ImportError``), never a bare ``ModuleNotFoundError`` from deep inside. Importing this
module does not import MLflow.
"""

from __future__ import annotations

from nar_plugin.integrations.mlflow.hooks import autolog as _autolog
from nar_plugin.integrations.mlflow.hooks import is_autologging as _is_autologging
from nar_plugin.integrations.mlflow.indexing import (
    index_logged_model as _index_logged_model,
)
from nar_plugin.integrations.mlflow.registry import dedup_report as _dedup_report
from nar_plugin.integrations.mlflow.sync import (
    sync_from_tracking as _sync_from_tracking,
)
from nar_plugin.utils.deps import is_available, requires

__all__ = ["autolog", "dedup_report", "index_logged_model", "is_autologging", "sync"]

_needs_mlflow = requires("mlflow", extra="mlflow")
autolog = _needs_mlflow(_autolog)
dedup_report = _needs_mlflow(_dedup_report)
index_logged_model = _needs_mlflow(_index_logged_model)
sync = _needs_mlflow(_sync_from_tracking)


def is_autologging() -> bool:
    """True while the :func:`autolog` wrappers are installed (always False without MLflow)."""
    return is_available("mlflow") and _is_autologging()
