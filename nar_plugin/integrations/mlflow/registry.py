"""Registry deduplication: the ``NAR_DEDUP`` policy around model-version creation.

``off``: nothing. ``warn`` (default): the version is created, tagged ``nar.duplicate_of`` and a
warning names the duplicate. ``tag``: created and tagged, no warning. ``block``:
:class:`~nar_plugin.errors.DuplicateModelError` before anything is created.

A version is a duplicate of an already registered version when their architectures are
``identical`` (same graph hash) or ``near-duplicate`` (cosine at or above the calibrated
threshold). Also :func:`dedup_report` (``nar dedup``): clusters across the whole registry.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.errors import DuplicateModelError

logger = logging.getLogger(__name__)

__all__ = ["DedupPlan", "before_create", "after_create", "DuplicateModelWarning", "tag_version",
           "dedup_report", "find_version_duplicates"]


class DuplicateModelWarning(UserWarning):
    """A registered model version duplicates an existing one (``NAR_DEDUP=warn``)."""


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
                            exclude_key: str | None = None, prefer_name: str | None = None) -> list[tuple[str, float, str]]:
    """Registered versions that are identical or near-duplicates: ``(key, score, relation)``,
    best first: identical before near-duplicate, then versions of ``prefer_name`` (the model
    being registered), then by score (larger = closer), then oldest key."""
    from nar_plugin.search.api import load_thresholds, relation_for

    th = load_thresholds()
    hits = index.search(vector, k=20, filter="mlflow:version:", exclude_keys=(exclude_key,) if exclude_key else ())
    out = []
    for h in hits:
        rel = relation_for(h.score, graph_hash is not None and h.entry.graph_hash == graph_hash, th)
        if rel in ("identical", "near-duplicate"):
            out.append((h.key, float(h.score), rel))
    same = f"mlflow:version:{prefer_name}/" if prefer_name else None

    def rank(t: tuple[str, float, str]) -> tuple[bool, bool, float, str]:
        return (t[2] != "identical", not (same and t[0].startswith(same)), -round(t[1], 4), t[0])

    out.sort(key=rank)
    return out


def _model_id(source: str, model_id: str | None) -> str | None:
    from nar_plugin.integrations.mlflow.sync import _model_id_from_source

    return model_id or _model_id_from_source(source)


def before_create(client: Any, name: str, source: str, model_id: str | None, policy: str,
                  exclude_key: str | None = None) -> DedupPlan | None:
    """Look the new version's architecture up among registered versions (``exclude_key``: a
    version that already exists and must not match itself, as in the webhook receiver).

    Raises:
        DuplicateModelError: ``policy == "block"`` and a duplicate exists.
    """
    from nar_plugin.search.api import open_index
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.integrations.mlflow.hooks import NAR_TAGS, TAG_EMBEDDING, TAG_GRAPH_HASH
    from nar_plugin.integrations.mlflow.sync import TrackingUnavailableError, sync_from_tracking

    mid = _model_id(source, model_id)
    if mid is None:
        logger.info("nar-plugin: %s has no LoggedModel id; no duplicate check", source)
        return None
    lm = client.get_logged_model(mid)
    tags = {k: v for k, v in lm.tags.items() if k in NAR_TAGS}
    if TAG_EMBEDDING not in tags:
        logger.info("nar-plugin: model %s has no nar.embedding (status %s); no duplicate check", mid, tags.get("nar.status"))
        return None
    vector = decode_embedding(tags[TAG_EMBEDDING])
    idx = open_index()
    try:
        sync_from_tracking(index=idx, client=client)
    except TrackingUnavailableError as e:
        logger.warning("%s; checking duplicates against the local index only", e)
    dups = find_version_duplicates(vector, tags.get(TAG_GRAPH_HASH), idx, exclude_key=exclude_key, prefer_name=name)
    plan = DedupPlan(mid, tags, vector, metadata={"model_id": mid, "run_id": lm.source_run_id,
                                                  "experiment_id": lm.experiment_id})
    if dups:
        key, score, rel = dups[0]
        plan.duplicate_of, plan.score, plan.relation = key.removeprefix("mlflow:version:"), score, rel
        if policy == "block":
            raise DuplicateModelError(
                f"refusing to register a new version of {name!r}: model {mid} is {rel} to registered "
                f"version {plan.duplicate_of} (cosine {score:.3f}); NAR_DEDUP=block. Set NAR_DEDUP=warn "
                "to register it anyway",
                duplicate_of=plan.duplicate_of, score=score,
            )
    return plan


def tag_version(client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def after_create(client: Any, mv: Any, plan: DedupPlan | None, policy: str) -> None:
    """Copy the ``nar.*`` tags to the new version, mark duplicates, index the version."""
    from nar_plugin.search.api import open_index
    from nar_plugin.integrations.mlflow.hooks import TAG_DUPLICATE_OF, TAG_DUPLICATE_SCORE, TAG_GRAPH_HASH
    from nar_plugin.integrations.mlflow.sync import _uri_of, version_metadata

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
        warnings.warn(msg, DuplicateModelWarning, stacklevel=4)
    meta = {**version_metadata(mv, _uri_of(client)), **plan.metadata}
    model_entry = open_index().get(f"mlflow:model:{plan.model_id}")
    if model_entry is not None and "description" in model_entry.metadata:
        meta["description"] = model_entry.metadata["description"]
    open_index().upsert(f"mlflow:version:{mv.name}/{mv.version}", plan.vector, source_kind="mlflow",
                    graph_hash=tags.get(TAG_GRAPH_HASH), uri=meta["uri"], metadata=meta)


# ------------------------------------------------------------------ registry-wide report
@dataclass
class DedupCluster:
    """Registered versions sharing one architecture (identical) or nearly (near-duplicate)."""

    relation: str
    members: list[str]
    min_score: float


def dedup_report(index: Any = None, tracking_uri: str | None = None, sync: bool = True) -> list[DedupCluster]:
    """Clusters of identical / near-duplicate registered versions across the registry.

    Identical = same graph hash. Near-duplicate clusters are connected components of the
    "cosine >= near-duplicate threshold" graph among versions not already identical.
    """
    import numpy as np

    from nar_plugin.search.api import open_index, load_thresholds
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking

    idx = open_index(index)
    if sync:
        sync_from_tracking(tracking_uri=tracking_uri, index=idx)
    entries = [e for e in idx.entries() if e.key.startswith("mlflow:version:")]
    th = load_thresholds()
    clusters: list[DedupCluster] = []
    by_hash: dict[str, list[Any]] = {}
    for e in entries:
        by_hash.setdefault(e.graph_hash or e.key, []).append(e)
    reps = []
    for group in by_hash.values():
        if len(group) > 1:
            clusters.append(DedupCluster("identical", sorted(g.key.removeprefix("mlflow:version:") for g in group), 1.0))
        reps.append(group[0])
    if len(reps) > 1:
        mat = np.stack([r.vector for r in reps])
        sim = mat @ mat.T
        parent = list(range(len(reps)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(reps)):
            for j in range(i + 1, len(reps)):
                if sim[i, j] >= th.near_duplicate:
                    parent[find(i)] = find(j)
        comps: dict[int, list[int]] = {}
        for i in range(len(reps)):
            comps.setdefault(find(i), []).append(i)
        for members in comps.values():
            if len(members) > 1:
                sub = sim[np.ix_(members, members)]
                clusters.append(DedupCluster("near-duplicate",
                                             sorted(reps[m].key.removeprefix("mlflow:version:") for m in members),
                                             float(sub.min())))
    return clusters
