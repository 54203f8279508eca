"""Registry deduplication: the ``NAR_DEDUP`` policy around model-version creation.

What counts (see :mod:`~nar_plugin.integrations.mlflow.dedup` for the rules): a new version with
the **same weights** as any registered version is a duplicate; the same or nearly the same
architecture under **another registered name** is a *possible* duplicate; a new version of the
same registered model with new weights (a retrain, a fine-tune) is normal, and tagged with its
relation to the previous version (``nar.relation_to_previous``) and, when the weights say it was
fine-tuned from a registered version, ``nar.parent=models:/<name>/<version>``.

``off``: nothing. ``warn`` (default): the version is created and tagged (``nar.duplicate_of``,
``nar.possible_duplicate_of``, ``nar.relation``), a warning names the duplicate. ``tag``: created
and tagged, no warning. ``block``: :class:`~nar_plugin.errors.DuplicateModelError` before anything
is created, for a same-weights duplicate (and for a same-architecture version under another name
whose weights could not be compared); a possible duplicate is registered with a warning.

``block`` fails closed: when no check can be made (the source is no LoggedModel, the model has
no embedding, e.g. a pickle, the index is locked, nar-plugin itself failed) registration is
refused with :class:`~nar_plugin.errors.DedupCheckFailedError` (a ``DuplicateModelError``) naming
the reason and the override (``NAR_DEDUP=warn``). ``warn`` and ``tag`` fail open: the version is
registered unchecked, with a warning. Also :func:`dedup_report` (``nar dedup``): clusters across
the whole registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.errors import (
    DedupCheckFailedError,
    DuplicateModelError,
    DuplicateModelWarning,
    KeyNotFoundError,
    NarMlflowWarning,
    TrackingUnavailableError,
)
from nar_plugin.integrations.boundary import warn_safely
from nar_plugin.integrations.mlflow.dedup import (
    DedupCluster,
    VersionVerdict,
    classify_version,
    dedup_report,
)
from nar_plugin.integrations.mlflow.keys import (
    model_id_from_source,
    model_key,
    server_id,
    version_key,
)
from nar_plugin.integrations.mlflow.tags import (
    NAR_TAGS,
    TAG_DUPLICATE_OF,
    TAG_DUPLICATE_SCORE,
    TAG_EMBEDDING,
    TAG_GRAPH_HASH,
    TAG_PARENT,
    TAG_POSSIBLE_DUPLICATE_OF,
    TAG_RELATION,
    TAG_RELATION_TO_PREVIOUS,
    TAG_STATUS,
    TAG_WEIGHTS_HASH,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DedupCluster",
    "DedupPlan",
    "DuplicateModelWarning",
    "after_create",
    "before_create",
    "dedup_report",
    "find_version_duplicates",
    "resolve_model_id",
    "tag_version",
]

#: the artifact location of a LoggedModel: ``<experiment artifact root>/models/<model id>/artifacts``
_ARTIFACT_LOCATION = re.compile(r"/models/(m-[0-9a-f]{32})/artifacts/?$")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class DedupPlan:
    """What the pre-creation check found, carried to the post-creation tagging."""

    model_id: str
    tags: dict[str, str]
    vector: Any
    verdict: VersionVerdict = field(default_factory=VersionVerdict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicate_of(self) -> str | None:
        return self.verdict.duplicate_of


def find_version_duplicates(index: Any, name: str, vector: Any, graph_hash: str | None, fingerprint: Any,
                            description: dict[str, Any] | None, server: str | None,
                            exclude_key: str | None = None) -> VersionVerdict:
    """How a new version of ``name`` relates to the registered versions of ``server`` (see
    :func:`~nar_plugin.integrations.mlflow.dedup.classify_version`)."""
    return classify_version(index, name, vector, graph_hash, fingerprint, description, server, exclude_key)


def resolve_model_id(client: Any, source: str, model_id: str | None = None, run_id: str | None = None) -> str | None:
    """The LoggedModel a new version is made from, or ``None`` when it is none.

    In order: the ``model_id`` given; a ``models:/m-...`` source; a source that *is* a
    LoggedModel's artifact location (``create_model_version(source=lm.artifact_location)``: the
    id in the path is checked against that model's recorded location, so a crafted path cannot
    borrow another model's embedding); a ``runs:/<run>/<name>`` source or a ``run_id`` whose run
    logged exactly one model matching the source.
    """
    if model_id:
        return model_id
    mid = model_id_from_source(source)
    if mid:
        return mid
    src = (source or "").rstrip("/")
    m = _ARTIFACT_LOCATION.search(src)
    if m:
        lm = _logged_model_or_none(client, m.group(1))
        if lm is not None and str(lm.artifact_location or "").rstrip("/") == src:
            return lm.model_id
    name = None
    if src.startswith("runs:/"):
        run_id, _, name = src[len("runs:/"):].partition("/")
    if not run_id or not _RUN_ID.fullmatch(run_id):
        return None
    run = client.get_run(run_id)
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    matches = [lm for lm in models
               if (name and lm.name == name.strip("/")) or str(lm.artifact_location or "").rstrip("/") == src]
    return matches[0].model_id if len(matches) == 1 else None


def _logged_model_or_none(client: Any, model_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_logged_model(model_id)
    except MlflowException:
        return None


def _unchecked(name: str, policy: str, reason: str) -> None:
    """No duplicate check could be made: refuse under ``block``, else warn and let it through.

    Raises:
        DedupCheckFailedError: ``policy == "block"``.
    """
    if policy == "block":
        raise DedupCheckFailedError(name, reason)
    msg = f"nar-plugin: no duplicate check for a new version of {name!r} ({reason}); it is registered unchecked"
    logger.warning(msg)
    warn_safely(msg, NarMlflowWarning)


def before_create(client: Any, name: str, source: str, model_id: str | None, policy: str,
                  exclude_key: str | None = None, run_id: str | None = None) -> DedupPlan | None:
    """Look the new version's architecture up among registered versions (``exclude_key``: a
    version that already exists and must not match itself, as in the webhook receiver).

    The model is :func:`resolve_model_id`; a model without a current embedding (logged before
    nar-plugin was installed) is extracted now, unless its ``nar.status`` says it was skipped.
    Returns ``None`` when no check could be made (``warn``/``tag``: with a warning).

    Raises:
        DuplicateModelError: ``policy == "block"`` and a duplicate exists.
        DedupCheckFailedError: ``policy == "block"`` and no check could be made.
    """
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.integrations.mlflow.indexing import embedding_for_model
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import open_index

    mid = resolve_model_id(client, source, model_id, run_id)
    if mid is None:
        return _unchecked(name, policy, f"source {source!r} is not a LoggedModel: no model id in it, in its "
                                        "artifact location or its run")
    lm = client.get_logged_model(mid)
    tags = {k: v for k, v in lm.tags.items() if k in NAR_TAGS}
    if TAG_EMBEDDING not in tags and TAG_STATUS not in tags:  # logged without nar-plugin: extract now
        try:
            embedding_for_model(client, mid)
        except KeyNotFoundError:
            pass  # the status it recorded says why
        tags = {k: v for k, v in client.get_logged_model(mid).tags.items() if k in NAR_TAGS}
    if TAG_EMBEDDING not in tags:
        return _unchecked(name, policy, f"model {mid} has no architecture embedding "
                                        f"({TAG_STATUS}={tags.get(TAG_STATUS, 'missing')})")
    vector = decode_embedding(tags[TAG_EMBEDDING])
    idx = open_index()
    try:
        sync_from_tracking(index=idx, client=client)
    except TrackingUnavailableError as e:
        logger.warning("%s; checking duplicates against the local index only", e)
    from nar_plugin.integrations.mlflow.client import server_of
    from nar_plugin.integrations.mlflow.weights import restore_fingerprint
    from nar_plugin.search.weights import fingerprint_of

    key = model_key(mid)
    if TAG_WEIGHTS_HASH in tags and fingerprint_of(idx, key) is None and key in idx:
        restore_fingerprint(client, idx, key, tags, mid)
    fp = fingerprint_of(idx, key)
    entry = idx.get(key)
    desc = entry.metadata.get("description") if entry is not None else None
    verdict = find_version_duplicates(idx, name, vector, tags.get(TAG_GRAPH_HASH), fp, desc, server_of(client),
                                      exclude_key=exclude_key)
    plan = DedupPlan(mid, tags, vector, verdict, metadata={"model_id": mid, "run_id": lm.source_run_id,
                                                           "experiment_id": lm.experiment_id})
    if policy == "block" and verdict.duplicate_of:
        raise DuplicateModelError(
            f"refusing to register a new version of {name!r}: model {mid} has the same weights as registered "
            f"version {verdict.duplicate_of} (every tensor byte-identical); NAR_DEDUP=block. Set NAR_DEDUP=warn "
            "to register it anyway",
            duplicate_of=verdict.duplicate_of, score=1.0,
        )
    if policy == "block" and verdict.possible_duplicate_of and verdict.unverified:
        raise DuplicateModelError(
            f"refusing to register a new version of {name!r}: model {mid} has the same architecture as registered "
            f"version {verdict.possible_duplicate_of} of another name, and their weights could not be compared "
            "(no weight fingerprint on one side), so it may be a copy; NAR_DEDUP=block. Set NAR_DEDUP=warn to "
            "register it anyway",
            duplicate_of=verdict.possible_duplicate_of, score=verdict.score,
        )
    return plan


def refuse_unchecked(name: str, policy: str) -> Callable[[Exception], BaseException | None]:
    """For :func:`~nar_plugin.integrations.boundary.plugin_boundary` ``fail_closed``: under
    ``block``, a failure of the check refuses the registration instead of letting it through."""

    def refuse(exc: Exception) -> BaseException | None:
        if policy != "block" or isinstance(exc, DuplicateModelError):
            return None
        return DedupCheckFailedError(name, f"{type(exc).__name__}: {exc}")

    return refuse


def discard_if_empty(client: Any, name: str) -> bool:
    """Delete registered model ``name`` if it holds no version (what ``mlflow.register_model``
    created just before a refused ``block`` check). Returns whether it was deleted."""
    try:
        rm = client.get_registered_model(name)
        if rm.latest_versions:
            return False
        client.delete_registered_model(name)
    except Exception as e:  # noqa: BLE001 - best effort; the refusal itself is what the user sees
        logger.debug("nar-plugin: could not remove the empty registered model %s: %s", name, e)
        return False
    logger.info("nar-plugin: removed registered model %r, created for the refused version", name)
    return True


def tag_version(client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    """Set ``tags`` on one model version."""
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def _verdict_tags(v: VersionVerdict) -> dict[str, str]:
    tags: dict[str, str] = {}
    if v.duplicate_of:
        tags[TAG_DUPLICATE_OF] = v.duplicate_of
    elif v.possible_duplicate_of:
        tags[TAG_POSSIBLE_DUPLICATE_OF] = v.possible_duplicate_of
    if v.relation:
        tags[TAG_RELATION] = v.relation
    if v.score is not None and (v.duplicate_of or v.possible_duplicate_of):
        tags[TAG_DUPLICATE_SCORE] = f"{v.score:.4f}"
    if v.parent:
        tags[TAG_PARENT] = f"models:/{v.parent}"
    if v.relation_to_previous:
        tags[TAG_RELATION_TO_PREVIOUS] = v.relation_to_previous
    return tags


def after_create(client: Any, mv: Any, plan: DedupPlan | None, policy: str) -> None:
    """Copy the ``nar.*`` tags to the new version, tag its relations, warn, index the version."""
    from nar_plugin.integrations.mlflow.client import tracking_uri_of
    from nar_plugin.integrations.mlflow.tags import version_metadata
    from nar_plugin.search.api import open_index

    if plan is None:
        return
    v = plan.verdict
    tags = {**plan.tags, **_verdict_tags(v)}
    tag_version(client, mv.name, str(mv.version), tags)
    if policy in ("warn", "block") and (v.duplicate_of or v.possible_duplicate_of):
        if v.duplicate_of:
            msg = (f"nar-plugin: {mv.name} version {mv.version} has the same weights as registered version "
                   f"{v.duplicate_of}; tagged {TAG_DUPLICATE_OF}")
        else:
            why = "weights not compared" if v.unverified else "different weights"
            msg = (f"nar-plugin: {mv.name} version {mv.version} is a possible duplicate of {v.possible_duplicate_of} "
                   f"({v.relation}, cosine {v.score:.3f}, {why}); tagged {TAG_POSSIBLE_DUPLICATE_OF}")
        logger.warning(msg)
        warn_safely(msg, DuplicateModelWarning)
    meta = {**version_metadata(mv, tracking_uri_of(client)), **plan.metadata}
    if plan.tags.get(TAG_WEIGHTS_HASH):
        meta["weights_hash"] = plan.tags[TAG_WEIGHTS_HASH]
    idx = open_index()
    model_entry = idx.get(model_key(plan.model_id))
    if model_entry is not None and "description" in model_entry.metadata:
        meta["description"] = model_entry.metadata["description"]
    vkey = version_key(mv.name, mv.version, server_id(tracking_uri_of(client)))
    idx.upsert(vkey, plan.vector, source_kind="mlflow", graph_hash=tags.get(TAG_GRAPH_HASH), uri=meta["uri"],
               metadata=meta)
    if plan.tags.get(TAG_WEIGHTS_HASH):
        from nar_plugin.index.weights import put_weights

        put_weights(idx, vkey, plan.tags[TAG_WEIGHTS_HASH])  # the blob is the LoggedModel's
