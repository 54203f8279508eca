"""MLflow integration: index every logged model, tag it, deduplicate registrations.

Activation: ``import mlflow`` imports our ``mlflow.run_context_provider`` entry point
(:mod:`nar_plugin.integrations.mlflow.entrypoint`), which calls :func:`autolog` unless
``NAR_AUTOLOG=false``. :func:`autolog` wraps two ``MlflowClient`` methods, idempotently and
revertibly (our own wrapper, not MLflow's private ``safe_patch``). The wrappers sit on the
service-layer clients that ``MlflowClient`` delegates to, because MLflow imports our entry point
while ``mlflow.tracking.client`` is itself still being imported (``MlflowClient`` does not exist
yet); the service modules are imported later, and the entry point patches them the moment they
finish loading:

- ``TrackingServiceClient.log_model_artifacts(model_id, local_dir)`` (behind
  ``MlflowClient.log_model_artifacts``): every ``mlflow.<flavor>.log_model`` passes the saved
  model directory through it. After the upload,
  :func:`~nar_plugin.integrations.mlflow.indexing.index_logged_model` reads the graph from what
  was saved (pt2 ``model.json``, ONNX, transformers ``config.json``), embeds it, writes the
  ``nar.*`` tags on the LoggedModel and its source run, and upserts ``mlflow:model:<model_id>``
  into the index.
- ``ModelRegistryClient.create_model_version`` (behind ``mlflow.register_model`` and
  ``MlflowClient.create_model_version``): the ``NAR_DEDUP`` policy runs before the
  version is created (``block`` raises :class:`~nar_plugin.errors.DuplicateModelError`, and
  :class:`~nar_plugin.errors.DedupCheckFailedError` when no check could be made), tags are
  written after (``nar.duplicate_of`` on the new version for ``warn`` and ``tag``).
- ``ModelRegistryClient.create_registered_model``: remembers (per thread) the name it created, so
  that a registration refused by ``block`` removes the then empty registered model
  (``mlflow.register_model`` creates the name before the version).

Errors: :func:`nar_plugin.integrations.boundary.plugin_boundary` (the user's own call propagates
its errors; ours are one :class:`~nar_plugin.errors.NarMlflowWarning`, recorded as
``nar.status=error:<Type>``; ``NAR_TESTING=true`` re-raises them).
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from nar_plugin.errors import DuplicateModelError, NarMlflowWarning
from nar_plugin.integrations.boundary import plugin_boundary
from nar_plugin.integrations.mlflow.client import public_client
from nar_plugin.integrations.mlflow.indexing import index_logged_model
from nar_plugin.integrations.mlflow.tags import TAG_STATUS, set_model_and_run_tags

logger = logging.getLogger(__name__)

__all__ = ["PATCHES", "NarMlflowWarning", "autolog", "index_logged_model", "is_autologging", "patch_module"]


def _index_after_upload(service_client: Any, model_id: str, local_dir: str) -> None:
    """Index a just-uploaded model; a failure is recorded as ``nar.status=error:<Type>``."""
    client = None

    def record(exc: Exception) -> None:
        if client is not None:
            set_model_and_run_tags(client, model_id, {TAG_STATUS: f"error:{type(exc).__name__}"})

    with plugin_boundary(f"indexing logged model {model_id}", category=NarMlflowWarning,
                         consequence="the MLflow call itself succeeded", on_error=record):
        client = public_client(service_client)
        index_logged_model(client, model_id, local_dir)


def _wrap_log_model_artifacts(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def log_model_artifacts(self: Any, model_id: str, local_dir: str, artifact_path: str | None = None) -> Any:
        result = original(self, model_id, local_dir, artifact_path)  # the user's call: errors propagate
        if artifact_path is None:  # the model directory itself, not an extra artifact folder
            _index_after_upload(self, model_id, local_dir)
        return result

    log_model_artifacts.__nar_wrapped__ = original  # type: ignore[attr-defined]
    return log_model_artifacts


#: the registered model this thread's last ``create_registered_model`` created (``mlflow.register_model``
#: creates the name, then the version: a refused ``block`` check removes the name again)
_CREATED = threading.local()


def _wrap_create_registered_model(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_registered_model(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        result = original(self, name, *args, **kwargs)  # the user's call: its errors propagate
        _CREATED.name = name
        return result

    create_registered_model.__nar_wrapped__ = original  # type: ignore[attr-defined]
    return create_registered_model


def _wrap_create_model_version(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_model_version(self: Any, name: str, source: str, run_id: str | None = None,
                             *args: Any, **kwargs: Any) -> Any:
        from nar_plugin.config import NAR_DEDUP
        from nar_plugin.integrations.mlflow.registry import (
            after_create,
            before_create,
            discard_if_empty,
            refuse_unchecked,
        )

        just_created = getattr(_CREATED, "name", None) == name
        _CREATED.name = None
        policy, plan, client = "off", None, None
        with plugin_boundary(f"reading NAR_DEDUP for {name}", category=NarMlflowWarning,
                             consequence="the version is registered unchecked"):
            policy = NAR_DEDUP.get()
        if policy != "off":
            try:
                # DuplicateModelError (NAR_DEDUP=block) is the one plugin error meant to stop the
                # call; under block a check that could not be made stops it too (fail closed)
                with plugin_boundary(f"duplicate check for {name}", category=NarMlflowWarning,
                                     consequence="the version is registered unchecked",
                                     passthrough=(DuplicateModelError,), fail_closed=refuse_unchecked(name, policy)):
                    client = public_client(self)
                    plan = before_create(client, name, source, kwargs.get("model_id"), policy, run_id=run_id)
            except DuplicateModelError:
                if just_created:  # nothing of the refused registration stays behind
                    discard_if_empty(self, name)
                raise
        mv = original(self, name, source, run_id, *args, **kwargs)  # the user's call
        if policy != "off" and client is not None:
            with plugin_boundary(f"tagging model version {name}/{getattr(mv, 'version', '?')}",
                                 category=NarMlflowWarning, consequence="the version is registered"):
                after_create(client, mv, plan, policy)
        return mv

    create_model_version.__nar_wrapped__ = original  # type: ignore[attr-defined]
    return create_model_version


#: (module, class, method, wrapper factory)
PATCHES: list[tuple[str, str, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
    ("mlflow.tracking._tracking_service.client", "TrackingServiceClient", "log_model_artifacts",
     _wrap_log_model_artifacts),
    ("mlflow.tracking._model_registry.client", "ModelRegistryClient", "create_model_version",
     _wrap_create_model_version),
    ("mlflow.tracking._model_registry.client", "ModelRegistryClient", "create_registered_model",
     _wrap_create_registered_model),
]


def patch_module(module: Any, disable: bool = False) -> None:
    """Install (or remove) our wrappers on the classes of an already imported module."""
    for mod_name, cls_name, meth, factory in PATCHES:
        if module.__name__ != mod_name:
            continue
        cls = getattr(module, cls_name, None)
        current = getattr(cls, meth, None) if cls is not None else None
        if current is None:
            logger.debug("%s.%s.%s does not exist in this MLflow; not wrapped", mod_name, cls_name, meth)
            continue
        wrapped = hasattr(current, "__nar_wrapped__")
        if disable and wrapped:
            setattr(cls, meth, current.__nar_wrapped__)
        elif not disable and not wrapped:
            setattr(cls, meth, factory(current))


def is_autologging() -> bool:
    """True while :func:`autolog` wrappers are installed."""
    for mod_name, cls_name, meth, _ in PATCHES:
        cls = getattr(importlib.import_module(mod_name), cls_name)
        if hasattr(getattr(cls, meth), "__nar_wrapped__"):
            return True
    return False


def autolog(disable: bool = False, silent: bool = False) -> None:
    """Turn automatic indexing of logged models (and registry dedup) on or off.

    Idempotent: calling it twice installs one wrapper. ``disable=True`` restores MLflow's own
    methods exactly.

    Args:
        disable: remove the wrappers.
        silent: do not log the state change.

    Example:
        >>> import nar_plugin.mlflow
        >>> nar_plugin.mlflow.autolog()            # already on after `import mlflow`
        >>> nar_plugin.mlflow.autolog(disable=True)
    """
    for mod_name in dict.fromkeys(p[0] for p in PATCHES):
        patch_module(importlib.import_module(mod_name), disable=disable)
    if not silent:
        logger.info("nar-plugin MLflow autologging %s", "disabled" if disable else "enabled")
