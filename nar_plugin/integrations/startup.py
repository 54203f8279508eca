"""What the one documented import-time hook turns on besides MLflow autologging.

``import mlflow`` imports our MLflow entry point
(:mod:`nar_plugin.integrations.mlflow.entrypoint`); that is nar-plugin's only import-time side
effect. The Hugging Face Hub has no plugin hook of its own, so ``NAR_HF_AUTOLOG=true`` rides on
this one: the entry point calls :func:`activate_companions`. This module sits beside the
integrations, so that the MLflow integration itself never imports the HF one.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["activate_companions"]


def activate_companions() -> None:
    """Turn on HF push stamping when ``NAR_HF_AUTOLOG=true``. Never raises (it runs inside
    ``import mlflow``)."""
    try:
        from nar_plugin.integrations.hf import maybe_autolog

        maybe_autolog()
    except Exception as e:  # noqa: BLE001 - must never break `import mlflow`
        logger.debug("nar-plugin: HF autolog not enabled: %s", e)
