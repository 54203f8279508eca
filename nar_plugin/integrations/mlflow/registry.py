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

from nar_plugin.errors import (
    DuplicateModelError,
    DuplicateModelWarning,
    TrackingUnavailableError,
)
from nar_plugin.graph import UnionFind
from nar_plugin.integrations.mlflow.keys import (
    VERSION_PREFIX,
    model_id_from_source,
    model_key,
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
    "tag_version",
]


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
    from nar_plugin.search.relations import (
        DUPLICATE_RELATIONS,
        load_thresholds,
        relation_for,
    )

    th = load_thresholds()
    hits = index.search(vector, k=20, filter=VERSION_PREFIX, exclude_keys=(exclude_key,) if exclude_key else ())
    out = []
    for h in hits:
        rel = relation_for(h.score, graph_hash is not None and h.entry.graph_hash == graph_hash, th)
        if rel in DUPLICATE_RELATIONS:
            out.append((h.key, float(h.score), rel))
    same = version_key(prefer_name, "") if prefer_name else None

    def rank(t: tuple[str, float, str]) -> tuple[bool, bool, float, str]:
        return (t[2] != "identical", not (same and t[0].startswith(same)), -round(t[1], 4), t[0])

    out.sort(key=rank)
    return out


def before_create(client: Any, name: str, source: str, model_id: str | None, policy: str,
                  exclude_key: str | None = None) -> DedupPlan | None:
    """Look the new version's architecture up among registered versions (``exclude_key``: a
    version that already exists and must not match itself, as in the webhook receiver).

    Raises:
        DuplicateModelError: ``policy == "block"`` and a duplicate exists.
    """
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import open_index

    mid = model_id or model_id_from_source(source)
    if mid is None:
        logger.info("nar-plugin: %s has no LoggedModel id; no duplicate check", source)
        return None
    lm = client.get_logged_model(mid)
    tags = {k: v for k, v in lm.tags.items() if k in NAR_TAGS}
    if TAG_EMBEDDING not in tags:
        logger.info("nar-plugin: model %s has no %s (%s %s); no duplicate check", mid, TAG_EMBEDDING,
                    TAG_STATUS, tags.get(TAG_STATUS))
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
        plan.duplicate_of, plan.score, plan.relation = version_of(key), score, rel
        if policy == "block":
            raise DuplicateModelError(
                f"refusing to register a new version of {name!r}: model {mid} is {rel} to registered "
                f"version {plan.duplicate_of} (cosine {score:.3f}); NAR_DEDUP=block. Set NAR_DEDUP=warn "
                "to register it anyway",
                duplicate_of=plan.duplicate_of, score=score,
            )
    return plan


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
        warnings.warn(msg, DuplicateModelWarning, stacklevel=4)
    meta = {**version_metadata(mv, tracking_uri_of(client)), **plan.metadata}
    idx = open_index()
    model_entry = idx.get(model_key(plan.model_id))
    if model_entry is not None and "description" in model_entry.metadata:
        meta["description"] = model_entry.metadata["description"]
    idx.upsert(version_key(mv.name, mv.version), plan.vector, source_kind="mlflow",
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
    """Clusters of identical / near-duplicate registered versions across the registry.

    Identical = same graph hash. Near-duplicate clusters are connected components of the
    "cosine >= near-duplicate threshold" graph among versions not already identical; a
    cluster's ``min_score`` is its lowest pairwise cosine.
    """
    import numpy as np

    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import open_index
    from nar_plugin.search.relations import load_thresholds

    idx = open_index(index)
    if sync:
        sync_from_tracking(tracking_uri=tracking_uri, index=idx)
    by_hash: dict[str, list[Any]] = {}
    for e in idx.entries():
        if e.key.startswith(VERSION_PREFIX):
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
