"""MLflow entry point (group ``mlflow.run_context_provider``): zero-code activation.

MLflow imports this module while ``import mlflow`` runs. Importing it turns on
:func:`nar_plugin.integrations.mlflow.hooks.autolog` unless ``NAR_AUTOLOG=false``; this is the one
documented import-time side effect of nar-plugin. The provider itself adds no run tags.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Patches MLflow's service-layer client modules right after they finish importing.

    MLflow imports this entry point in the middle of importing ``mlflow.tracking.client``, before
    the client modules we wrap exist, so the wrappers are installed when those modules load.
    """

    def __init__(self, targets: set[str]) -> None:
        self.targets = set(targets)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.targets:
            return None
        self.targets.discard(fullname)
        if not self.targets and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                from nar_plugin.integrations.mlflow.hooks import patch_module

                patch_module(module)
            except Exception as e:  # noqa: BLE001 - must never break `import mlflow`
                logger.warning("nar-plugin: could not enable MLflow autologging: %s", e)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _activate() -> None:
    from nar_plugin.config import NAR_AUTOLOG
    from nar_plugin.errors import ConfigError
    from nar_plugin.integrations.startup import activate_companions

    activate_companions()  # NAR_HF_AUTOLOG=true also stamps HF pushes in any process that imports mlflow
    try:
        enabled = NAR_AUTOLOG.get()
    except ConfigError as e:
        logger.warning("nar-plugin: %s; autologging stays off", e)
        return
    if not enabled:
        return
    try:
        from nar_plugin.integrations.mlflow.hooks import PATCHES, patch_module

        pending = set()
        for mod_name in dict.fromkeys(p[0] for p in PATCHES):
            module = sys.modules.get(mod_name)
            spec = getattr(module, "__spec__", None)
            if module is not None and not getattr(spec, "_initializing", False):
                patch_module(module)
            else:
                pending.add(mod_name)
        if pending:
            sys.meta_path.insert(0, _PatchAfterImport(pending))
    except Exception as e:  # noqa: BLE001 - must never break `import mlflow`
        logger.warning("nar-plugin: could not enable MLflow autologging: %s", e)


class NarContextProvider:
    """A run-context provider that contributes no tags (activation happens on import)."""

    def in_context(self) -> bool:
        return False

    def tags(self) -> dict[str, str]:
        return {}


_activate()
