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
  model directory through it. After the upload we read the graph from what was saved
  (pt2 ``model.json``, ONNX, transformers ``config.json``), embed it, write the ``nar.*`` tags on
  the LoggedModel and its source run, and upsert ``mlflow:model:<model_id>`` into the index.
- ``ModelRegistryClient.create_model_version`` (behind ``mlflow.register_model`` and
  ``MlflowClient.create_model_version``): the ``NAR_DEDUP`` policy runs before the
  version is created (``block`` raises :class:`~nar_plugin.errors.DuplicateModelError`), tags are
  written after (``nar.duplicate_of`` on the new version for ``warn`` and ``tag``).

The exception boundary follows MLflow autologging: an error raised by the user's own call
propagates unchanged; an error raised by nar-plugin is caught, logged once as a warning, recorded
as ``nar.status=error:<Type>``, and the user's result is returned. ``NAR_TESTING=true`` re-raises
plugin errors so tests see them.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nar_plugin.config import NAR_DEDUP, NAR_TESTING
from nar_plugin.errors import DuplicateModelError, GraphTooLargeError, NarError

logger = logging.getLogger(__name__)

__all__ = [
    "autolog",
    "is_autologging",
    "index_logged_model",
    "nar_tags",
    "TAG_EMBEDDING",
    "TAG_ENCODER",
    "TAG_GRAPH_HASH",
    "TAG_NUM_NODES",
    "TAG_NUM_MOTIFS",
    "TAG_STATUS",
    "TAG_DUPLICATE_OF",
    "NarMlflowWarning",
]

TAG_EMBEDDING = "nar.embedding"
TAG_ENCODER = "nar.encoder"
TAG_GRAPH_HASH = "nar.graph_hash"
TAG_NUM_NODES = "nar.num_nodes"
TAG_NUM_MOTIFS = "nar.num_motifs"
TAG_STATUS = "nar.status"
TAG_DUPLICATE_OF = "nar.duplicate_of"
TAG_DUPLICATE_SCORE = "nar.duplicate_score"
#: compact op/motif histograms (LoggedModels only: run tags are capped at 8,000 chars), so that
#: ``Match.explain()`` works on entries synced from other machines
TAG_DESCRIPTION = "nar.description"
NAR_TAGS = (TAG_EMBEDDING, TAG_ENCODER, TAG_GRAPH_HASH, TAG_NUM_NODES, TAG_NUM_MOTIFS, TAG_STATUS)


class NarMlflowWarning(UserWarning):
    """A nar-plugin failure inside an MLflow call (the call itself still succeeded)."""


# ------------------------------------------------------------------ exception boundary
def _report(what: str, exc: BaseException) -> None:
    msg = f"nar-plugin: {what} failed ({type(exc).__name__}: {exc}); the MLflow call itself succeeded"
    logger.warning(msg)
    warnings.warn(msg, NarMlflowWarning, stacklevel=4)


def _testing() -> bool:
    try:
        return bool(NAR_TESTING.get())
    except NarError:
        return False


# ------------------------------------------------------------------ tags
def nar_tags(graph: Any, vector: Any, encoder: str, num_motifs: int) -> dict[str, str]:
    """The ``nar.*`` tags for an embedded graph (all strings, ~400 chars in total)."""
    from nar_plugin.index.codec import encode_embedding

    return {
        TAG_EMBEDDING: encode_embedding(vector),
        TAG_ENCODER: encoder,
        TAG_GRAPH_HASH: graph.graph_hash,
        TAG_NUM_NODES: str(graph.num_nodes),
        TAG_NUM_MOTIFS: str(num_motifs),
        TAG_STATUS: "ok",
    }


def encode_description(desc: dict[str, Any], top_motifs: int = 24) -> str:
    """:func:`nar_plugin.search.api.describe_graph` output as compact JSON (a few hundred chars)."""
    motifs = dict(sorted((desc.get("motifs") or {}).items(), key=lambda kv: -kv[1])[:top_motifs])
    return json.dumps({**desc, "motifs": motifs}, separators=(",", ":"), sort_keys=True)


def decode_description(text: str | None) -> dict[str, Any]:
    """Inverse of :func:`encode_description`; an absent or malformed tag gives ``{}``."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _set_model_and_run_tags(client: Any, model_id: str, tags: dict[str, str]) -> Any:
    client.set_logged_model_tags(model_id, tags)
    lm = client.get_logged_model(model_id)
    if lm.source_run_id:
        for k, v in tags.items():
            client.set_tag(lm.source_run_id, k, v)
    return lm


def model_metadata(lm: Any, tracking_uri: str | None) -> dict[str, Any]:
    """Index metadata for a LoggedModel: ids, names, experiment, and the user's own tags."""
    user_tags = {k: v for k, v in (lm.tags or {}).items()
                 if not k.startswith(("mlflow.", "nar.")) and len(v) <= 256}
    return {
        "model_id": lm.model_id,
        "run_id": lm.source_run_id,
        "experiment_id": lm.experiment_id,
        "model_name": lm.name,
        "tracking_uri": tracking_uri,
        "created_ms": lm.creation_timestamp,
        "tags": user_tags,
    }


def index_logged_model(client: Any, model_id: str, local_dir: str | Path) -> dict[str, str]:
    """Extract, embed, tag and index one logged model from its saved directory.

    Returns the tags written. Skips (``nar.status=skipped:<reason>``) pickle-only models unless
    ``NAR_TRUST_PICKLE=true`` and graphs over ``NAR_MAX_NODES``.

    Raises:
        NarError: extraction or embedding failed (the caller records ``error:<Type>``).
    """
    from nar_plugin.search.api import describe_graph, index_graph
    from nar_plugin.model.inference import embed_graph, encoder_version
    from nar_plugin.extract.mlflow_model import PickleOnlyModelError, graph_from_mlflow_dir

    try:
        graph = graph_from_mlflow_dir(local_dir)
    except PickleOnlyModelError:
        tags = {TAG_STATUS: "skipped:pickle"}
        _set_model_and_run_tags(client, model_id, tags)
        logger.info("nar-plugin: model %s is pickle-only; skipped (NAR_TRUST_PICKLE=true to read it)", model_id)
        return tags
    from nar_plugin.config import NAR_MAX_NODES

    if graph.num_nodes > NAR_MAX_NODES.get():
        tags = {TAG_STATUS: "skipped:too-large", TAG_NUM_NODES: str(graph.num_nodes)}
        _set_model_and_run_tags(client, model_id, tags)
        logger.warning("nar-plugin: %s", GraphTooLargeError(graph.num_nodes, NAR_MAX_NODES.get()))
        return tags
    vector = embed_graph(graph)
    desc = describe_graph(graph)
    tags = nar_tags(graph, vector, encoder_version(), desc["num_motifs"])
    lm = _set_model_and_run_tags(client, model_id, tags)
    client.set_logged_model_tags(model_id, {TAG_DESCRIPTION: encode_description(desc)})
    try:
        index_graph(graph, f"mlflow:model:{model_id}", model_metadata(lm, _tracking_uri(client)),
                    source_kind="mlflow", uri=f"models:/{model_id}")
    except Exception as e:  # noqa: BLE001 - the tags are the source of truth; `nar index sync` repairs the index
        _report(f"adding model {model_id} to the local index", e)
        if _testing():
            raise
    return tags


def _tracking_uri(client: Any) -> str | None:
    uri = getattr(client, "_tracking_client", None)
    uri = getattr(uri, "tracking_uri", None) or getattr(client, "tracking_uri", None)
    return str(uri) if uri else None


def _record_error(client: Any, model_id: str, exc: BaseException) -> None:
    try:
        _set_model_and_run_tags(client, model_id, {TAG_STATUS: f"error:{type(exc).__name__}"})
    except Exception as e:  # noqa: BLE001 - best effort: the server may be what failed
        logger.debug("could not record nar.status on %s: %s", model_id, e)


# ------------------------------------------------------------------ wrappers
def _public_client(service_client: Any) -> Any:
    """An ``MlflowClient`` talking to the same servers as a service-layer client."""
    from mlflow import MlflowClient

    tracking = getattr(service_client, "tracking_uri", None)
    registry = getattr(service_client, "registry_uri", None)
    return MlflowClient(tracking_uri=tracking, registry_uri=registry)


def _wrap_log_model_artifacts(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def log_model_artifacts(self: Any, model_id: str, local_dir: str, artifact_path: str | None = None) -> Any:
        result = original(self, model_id, local_dir, artifact_path)  # the user's call: errors propagate
        if artifact_path is None:  # the model directory itself, not an extra artifact folder
            client = None
            try:
                client = _public_client(self)
                index_logged_model(client, model_id, local_dir)
            except Exception as e:  # noqa: BLE001 - the exception boundary of the hook
                if client is not None:
                    _record_error(client, model_id, e)
                if _testing():
                    raise
                _report(f"indexing logged model {model_id}", e)
        return result

    log_model_artifacts.__nar_wrapped__ = original  # type: ignore[attr-defined]
    return log_model_artifacts


def _wrap_create_model_version(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_model_version(self: Any, name: str, source: str, *args: Any, **kwargs: Any) -> Any:
        from nar_plugin.integrations.mlflow.registry import after_create, before_create

        policy = "warn"
        plan = None
        client = None
        try:
            policy = NAR_DEDUP.get()
            if policy != "off":
                client = _public_client(self)
                plan = before_create(client, name, source, kwargs.get("model_id"), policy)
        except DuplicateModelError:
            raise  # NAR_DEDUP=block: the one plugin error that is meant to stop the call
        except Exception as e:  # noqa: BLE001
            if _testing():
                raise
            _report(f"duplicate check for {name}", e)
        mv = original(self, name, source, *args, **kwargs)  # the user's call
        if policy != "off" and client is not None:
            try:
                after_create(client, mv, plan, policy)
            except Exception as e:  # noqa: BLE001
                if _testing():
                    raise
                _report(f"tagging model version {name}/{getattr(mv, 'version', '?')}", e)
        return mv

    create_model_version.__nar_wrapped__ = original  # type: ignore[attr-defined]
    return create_model_version


#: (module, class, method, wrapper factory)
PATCHES: list[tuple[str, str, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
    ("mlflow.tracking._tracking_service.client", "TrackingServiceClient", "log_model_artifacts",
     _wrap_log_model_artifacts),
    ("mlflow.tracking._model_registry.client", "ModelRegistryClient", "create_model_version",
     _wrap_create_model_version),
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
    import importlib

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
    import importlib

    for mod_name in dict.fromkeys(p[0] for p in PATCHES):
        patch_module(importlib.import_module(mod_name), disable=disable)
    if not silent:
        logger.info("nar-plugin MLflow autologging %s", "disabled" if disable else "enabled")
