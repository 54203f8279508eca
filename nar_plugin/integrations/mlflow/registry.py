"""Registry deduplication: the ``NAR_DEDUP`` policy around model-version creation.

``off``: nothing. ``warn`` (default): the version is created, tagged ``nar.duplicate_of`` and a
warning names the duplicate. ``tag``: created and tagged, no warning. ``block``:
:class:`~nar_plugin.errors.DuplicateModelError` before anything is created.

``block`` fails closed: when no check can be made (the source is no LoggedModel, the model has
no embedding, e.g. a pickle, the index is locked, nar-plugin itself failed) registration is
refused with :class:`~nar_plugin.errors.DedupCheckFailedError` (a ``DuplicateModelError``) naming
the reason and the override (``NAR_DEDUP=warn``). ``warn`` and ``tag`` fail open: the version is
registered unchecked, with a warning.

A version is a duplicate of an already registered version when their architectures are
``identical`` (same graph hash) or ``near-duplicate`` (cosine at or above the calibrated
threshold). Also :func:`dedup_report` (``nar dedup``): clusters across the whole registry.
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
from nar_plugin.graph import UnionFind
from nar_plugin.integrations.boundary import warn_safely
from nar_plugin.integrations.mlflow.keys import (
    VERSION_PREFIX,
    in_scope,
    model_id_from_source,
    model_key,
    server_id,
    version_key,
    version_of,
)
from nar_plugin.integrations.mlflow.tags import (
    NAR_TAGS,
    TAG_DUPLICATE_OF,
    TAG_DUPLICATE_SCORE,
    TAG_EMBEDDING,
    TAG_GRAPH_HASH,
    TAG_STATUS,
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
    duplicate_of: str | None = None
    score: float | None = None
    relation: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def find_version_duplicates(vector: Any, graph_hash: str | None, index: Any,
                            exclude_key: str | None = None, prefer_name: str | None = None,
                            server: str | None = None) -> list[tuple[str, float, str]]:
    """Registered versions that are identical or near-duplicates: ``(key, score, relation)``,
    best first: identical before near-duplicate, then versions of ``prefer_name`` (the model
    being registered), then by score (larger = closer), then oldest key. ``server``: only
    versions of that tracking server (a ``keys.server_id``; ``None``: of any)."""
    from nar_plugin.search.relations import (
        DUPLICATE_RELATIONS,
        load_thresholds,
        relation_for,
    )

    th = load_thresholds()
    flt = VERSION_PREFIX if server is None else (lambda e: e.key.startswith(VERSION_PREFIX) and in_scope(e, server))
    hits = index.search(vector, k=20, filter=flt, exclude_keys=(exclude_key,) if exclude_key else ())
    out = []
    for h in hits:
        rel = relation_for(h.score, graph_hash is not None and h.entry.graph_hash == graph_hash, th)
        if rel in DUPLICATE_RELATIONS:
            out.append((h.key, float(h.score), rel))
    same = f"{prefer_name}/" if prefer_name else None

    def rank(t: tuple[str, float, str]) -> tuple[bool, bool, float, str]:
        return (t[2] != "identical", not (same and version_of(t[0]).startswith(same)), -round(t[1], 4), t[0])

    out.sort(key=rank)
    return out


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

    dups = find_version_duplicates(vector, tags.get(TAG_GRAPH_HASH), idx, exclude_key=exclude_key, prefer_name=name,
                                   server=server_of(client))
    plan = DedupPlan(mid, tags, vector, metadata={"model_id": mid, "run_id": lm.source_run_id,
                                                  "experiment_id": lm.experiment_id})
    if dups:
        key, score, rel = dups[0]
        plan.duplicate_of, plan.score, plan.relation = version_of(key), score, rel
        if policy == "block":
            raise DuplicateModelError(
                f"refusing to register a new version of {name!r}: model {mid} is {rel} to registered "
                f"version {plan.duplicate_of} (cosine {score:.3f}); NAR_DEDUP=block. Set NAR_DEDUP=warn "
                "to register it anyway",
                duplicate_of=plan.duplicate_of, score=score,
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


def after_create(client: Any, mv: Any, plan: DedupPlan | None, policy: str) -> None:
    """Copy the ``nar.*`` tags to the new version, mark duplicates, index the version."""
    from nar_plugin.integrations.mlflow.client import tracking_uri_of
    from nar_plugin.integrations.mlflow.tags import version_metadata
    from nar_plugin.search.api import open_index

    if plan is None:
        return
    tags = dict(plan.tags)
    if plan.duplicate_of:
        tags[TAG_DUPLICATE_OF] = plan.duplicate_of
        tags[TAG_DUPLICATE_SCORE] = f"{plan.score:.4f}"
    tag_version(client, mv.name, str(mv.version), tags)
    if plan.duplicate_of and policy == "warn":
        msg = (f"nar-plugin: {mv.name} version {mv.version} is {plan.relation} to registered version "
               f"{plan.duplicate_of} (cosine {plan.score:.3f}); tagged {TAG_DUPLICATE_OF}")
        logger.warning(msg)
        warn_safely(msg, DuplicateModelWarning)
    meta = {**version_metadata(mv, tracking_uri_of(client)), **plan.metadata}
    idx = open_index()
    model_entry = idx.get(model_key(plan.model_id))
    if model_entry is not None and "description" in model_entry.metadata:
        meta["description"] = model_entry.metadata["description"]
    idx.upsert(version_key(mv.name, mv.version, server_id(tracking_uri_of(client))), plan.vector, source_kind="mlflow",
               graph_hash=tags.get(TAG_GRAPH_HASH), uri=meta["uri"], metadata=meta)


# ------------------------------------------------------------------ registry-wide report
@dataclass
class DedupCluster:
    """Registered versions sharing one architecture (identical) or nearly (near-duplicate)."""

    relation: str
    members: list[str]
    min_score: float


def _near_duplicate_groups(idx: Any, groups: list[list[Any]], threshold: float) -> list[list[int]]:
    """Connected components of "cosine >= threshold" among ``groups`` (of identical versions).

    Each group's first version asks the index for its nearest versions (FAISS k-NN, memory
    bounded by k), widening k while the farthest hit is still above the threshold; no N x N
    matrix is built.
    """
    pos = {e.key: i for i, group in enumerate(groups) for e in group}
    uf = UnionFind(range(len(groups)))
    for i, group in enumerate(groups):
        rep = group[0]
        k = 16
        while True:
            hits = idx.search(rep.vector, k=k, filter=VERSION_PREFIX, exclude_keys=(rep.key,))
            if len(hits) < k or hits[-1].score < threshold:
                break
            k *= 4
        for h in hits:
            j = pos.get(h.key)
            if j is not None and h.score >= threshold:
                uf.union(i, j)
    comps: dict[Any, list[int]] = {}
    for i in range(len(groups)):
        comps.setdefault(uf.find(i), []).append(i)
    return [members for members in comps.values() if len(members) > 1]


def dedup_report(index: Any = None, tracking_uri: str | None = None, sync: bool = True) -> list[DedupCluster]:
    """Clusters of identical / near-duplicate registered versions across the registry of
    ``tracking_uri`` (default: MLflow's current one); other servers' versions are left out.

    Identical = same graph hash. Near-duplicate clusters are connected components of the
    "cosine >= near-duplicate threshold" graph among versions not already identical; a
    cluster's ``min_score`` is its lowest pairwise cosine.
    """
    import numpy as np

    from nar_plugin.integrations.mlflow.client import resolve_tracking_uri
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import open_index
    from nar_plugin.search.relations import load_thresholds

    idx = open_index(index)
    if sync:
        sync_from_tracking(tracking_uri=tracking_uri, index=idx)
    server = server_id(resolve_tracking_uri(tracking_uri)[0])  # one server's versions only
    by_hash: dict[str, list[Any]] = {}
    for e in idx.entries():
        if e.key.startswith(VERSION_PREFIX) and in_scope(e, server):
            by_hash.setdefault(e.graph_hash or e.key, []).append(e)
    clusters = [DedupCluster("identical", sorted(version_of(g.key) for g in group), 1.0)
                for group in by_hash.values() if len(group) > 1]
    groups = list(by_hash.values())
    reps = [group[0] for group in groups]
    for members in _near_duplicate_groups(idx, groups, load_thresholds().near_duplicate):
        vecs = np.stack([reps[m].vector for m in members])  # one cluster: small
        clusters.append(DedupCluster("near-duplicate", sorted(version_of(reps[m].key) for m in members),
                                     float((vecs @ vecs.T).min())))
    return clusters
