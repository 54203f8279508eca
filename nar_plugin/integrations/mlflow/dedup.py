"""What a new model version is to the registry, and the registry-wide report (``nar dedup``).

A retrain (a new version of the same registered model with new weights) is the normal case.
:func:`classify_version` sorts a new version's relatives among the registered versions:

- ``same-weights`` with any registered version, of any name: a **duplicate** (``NAR_DEDUP=block``
  refuses it; ``warn`` tags ``nar.duplicate_of`` and warns);
- ``fine-tuned-from`` a registered version (the weights say that version is the parent):
  ``nar.parent=models:/<name>/<version>``; never a duplicate;
- ``same-architecture`` / ``near-duplicate`` under **another** registered name: a **possible
  duplicate** (``nar.possible_duplicate_of``, a warning under ``warn`` and ``block``), unless an
  earlier version of the same name already had that architecture (it was said then) or the
  other name is the new version's parent's (a fine-tune keeps its parent's architecture). When the
  weights could not be compared (no fingerprint on one side), ``block`` refuses a
  same-architecture match under another name: it cannot rule out a copy;
- the previous version of the same registered model: ``nar.relation_to_previous``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.graph import UnionFind
from nar_plugin.integrations.mlflow.keys import VERSION_PREFIX, in_scope, version_of

logger = logging.getLogger(__name__)

__all__ = ["DedupCluster", "VersionVerdict", "classify_version", "dedup_report"]

_VERSION_NO = re.compile(r"/(\d+)$")


@dataclass
class VersionVerdict:
    """How a new version relates to the registered ones (what :func:`classify_version` found).

    Attributes:
        duplicate_of: ``<name>/<version>`` with the same weights (a duplicate), or ``None``.
        possible_duplicate_of: same or nearly the same architecture under another name.
        relation: the relation behind ``duplicate_of`` / ``possible_duplicate_of``.
        score: its cosine (architecture embedding; larger = closer).
        unverified: the possible duplicate's weights could not be compared with the new ones.
        parent: ``<name>/<version>`` the new version was fine-tuned from.
        parent_similarity: the weight similarity to it.
        relation_to_previous: relation to the latest earlier version of the same name.
        previous: that version (``<name>/<version>``).
    """

    duplicate_of: str | None = None
    possible_duplicate_of: str | None = None
    relation: str | None = None
    score: float | None = None
    unverified: bool = False
    parent: str | None = None
    parent_similarity: float | None = None
    relation_to_previous: str | None = None
    previous: str | None = None
    notes: list[str] = field(default_factory=list)


def _number(key: str) -> int:
    m = _VERSION_NO.search(key)
    return int(m.group(1)) if m else -1


def classify_version(index: Any, name: str, vector: Any, graph_hash: str | None, fingerprint: Any,
                     description: dict[str, Any] | None, server: str | None,
                     exclude_key: str | None = None) -> VersionVerdict:
    """Classify a new version of registered model ``name`` against the registered versions of
    ``server`` in ``index`` (see the module docstring)."""
    from nar_plugin.search.relations import (
        load_thresholds,
        near_duplicate_evidence,
        relation_for,
    )
    from nar_plugin.search.weights import WeightLink, weight_links

    def mine(key: str) -> bool:
        if not key.startswith(VERSION_PREFIX) or key == exclude_key:
            return False
        entry = index.get(key)
        return entry is not None and (server is None or in_scope(entry, server))

    verdict = VersionVerdict()
    links: dict[str, WeightLink] = {}
    if fingerprint is not None:
        links = weight_links(index, fingerprint, graph_hash, keep=mine)
    same = sorted((k for k, link in links.items() if link.relation == "same-weights"),
                  key=lambda k: (not version_of(k).startswith(f"{name}/"), _number(k)))
    if same:
        verdict.duplicate_of, verdict.relation, verdict.score = version_of(same[0]), "same-weights", 1.0
    parents = sorted(((float(link.comparison.similarity or 0.0), k) for k, link in links.items()
                      if link.relation == "fine-tuned-from" and link.lineage == "parent"), reverse=True)
    if parents:
        verdict.parent_similarity, pkey = parents[0]
        verdict.parent = version_of(pkey)
    th = load_thresholds()
    flt = (lambda e: e.key.startswith(VERSION_PREFIX) and e.key != exclude_key
           and (server is None or in_scope(e, server)))
    hits = index.search(vector, k=20, filter=flt)
    relations: dict[str, tuple[str, float]] = {}
    for h in hits:
        link = links.get(h.key)
        near, floor = near_duplicate_evidence(description, h.entry.metadata.get("description"), th)
        rel = relation_for(h.score, graph_hash is not None and h.entry.graph_hash == graph_hash, th,
                           weights=link.relation if link else None, near=near, near_floor=floor)
        relations[h.key] = (rel, float(h.score))
    for key, link in links.items():
        relations.setdefault(key, (link.relation, 1.0))
    ours = [k for k in relations if version_of(k).startswith(f"{name}/")]
    if ours:
        prev = max(ours, key=_number)
        verdict.previous, verdict.relation_to_previous = version_of(prev), relations[prev][0]
    # a model whose earlier versions already have this architecture was told at its first version
    known = verdict.relation_to_previous in ("fine-tuned-from", "same-architecture", "near-duplicate")
    # a fine-tune shares its parent's architecture by definition: the parent's model is no news
    parent_name = verdict.parent.rpartition("/")[0] if verdict.parent else None
    if verdict.duplicate_of is None and not known:
        others = [(k, rel, score) for k, (rel, score) in relations.items()
                  if rel in ("same-architecture", "near-duplicate") and not version_of(k).startswith(f"{name}/")
                  and version_of(k).rpartition("/")[0] != parent_name]
        others.sort(key=lambda t: (t[1] != "same-architecture", -round(t[2], 4), _number(t[0])))
        if others:
            key, rel, score = others[0]
            verdict.possible_duplicate_of, verdict.relation, verdict.score = version_of(key), rel, score
            verdict.unverified = rel == "same-architecture" and (
                fingerprint is None or _weights_unknown(index, key))
    return verdict


def _weights_unknown(index: Any, key: str) -> bool:
    from nar_plugin.search.weights import fingerprint_of

    return fingerprint_of(index, key) is None


# ------------------------------------------------------------------ registry-wide report
@dataclass
class DedupCluster:
    """Registered versions that belong together.

    Attributes:
        relation: ``same-weights`` (byte-identical copies), ``fine-tuned-from`` (one model tree),
            ``same-architecture`` (one graph, several sets of weights), ``near-duplicate``.
        members: ``<name>/<version>``, sorted.
        min_score: lowest pairwise cosine of the architecture embeddings (1.0 for a graph hash).
        edges: for ``fine-tuned-from``: ``(parent, child)`` pairs.
    """

    relation: str
    members: list[str]
    min_score: float
    edges: list[tuple[str, str]] = field(default_factory=list)


def _near_duplicate_groups(idx: Any, groups: list[list[Any]], th: Any, scope: Any) -> list[list[int]]:
    """Connected components of the ``near-duplicate`` relation
    (:func:`~nar_plugin.search.relations.near_duplicate_evidence`: parameter shapes agreeing up to
    a head at cosine >= ``th.shapes_floor``, else fine similarity at cosine >= ``th.near_duplicate``)
    among ``groups`` (of same-architecture versions): each group's first version asks the index
    for its nearest versions (FAISS k-NN, widening k while the farthest hit is above the lower
    floor)."""
    from nar_plugin.search.relations import near_duplicate_evidence

    threshold = min(th.near_duplicate, th.shapes_floor)
    pos = {e.key: i for i, group in enumerate(groups) for e in group}
    uf = UnionFind(range(len(groups)))
    for i, group in enumerate(groups):
        rep = group[0]
        k = 16
        while True:
            hits = idx.search(rep.vector, k=k, filter=scope, exclude_keys=(rep.key,))
            if len(hits) < k or hits[-1].score < threshold:
                break
            k *= 4
        for h in hits:
            j = pos.get(h.key)
            if j is None:
                continue
            near, floor = near_duplicate_evidence(rep.metadata.get("description"),
                                                  h.entry.metadata.get("description"), th)
            if h.score >= floor and near is not False:
                uf.union(i, j)
    comps: dict[Any, list[int]] = {}
    for i in range(len(groups)):
        comps.setdefault(uf.find(i), []).append(i)
    return [members for members in comps.values() if len(members) > 1]


def _weight_clusters(idx: Any, by_hash: dict[str, list[Any]]) -> list[DedupCluster]:
    """Same-weights clusters and fine-tuned trees, per architecture."""
    from nar_plugin.index.weights import weights_of
    from nar_plugin.lineage.compare import reconstruct_tree
    from nar_plugin.search.weights import entry_age, fingerprint_of

    out: list[DedupCluster] = []
    for group in by_hash.values():
        by_weights: dict[str, list[str]] = {}
        for e in group:
            linked = weights_of(idx, e.key)
            if linked is not None:
                by_weights.setdefault(linked[0], []).append(e.key)
        for keys in by_weights.values():
            if len(keys) > 1:
                out.append(DedupCluster("same-weights", sorted(version_of(k) for k in keys), 1.0))
        fps = {keys[0]: fp for keys in by_weights.values() if (fp := fingerprint_of(idx, keys[0])) is not None}
        ages = {e.key: entry_age(e) for e in group}
        edges = reconstruct_tree(fps, order=ages) if len(fps) > 1 else []
        if not edges:
            continue
        uf = UnionFind(list(fps))
        for edge in edges:
            uf.union(edge.parent, edge.child)
        trees: dict[Any, list[Any]] = {}
        for edge in edges:
            trees.setdefault(uf.find(edge.child), []).append(edge)
        for tree in trees.values():
            members = sorted({version_of(k) for edge in tree for k in (edge.parent, edge.child)})
            out.append(DedupCluster("fine-tuned-from", members, 1.0,
                                    sorted((version_of(e.parent), version_of(e.child)) for e in tree)))
    return out


def dedup_report(index: Any = None, tracking_uri: str | None = None, sync: bool = True) -> list[DedupCluster]:
    """Clusters of the registered versions of ``tracking_uri`` (default: MLflow's current one),
    by relation: same weights, fine-tuned trees, same architecture, near-duplicates (other
    servers' versions are left out).

    ``same-architecture`` clusters hold every version of one graph hash (several retrains of a
    model are one cluster: expected, not a problem); near-duplicate clusters are connected
    components of "cosine >= near-duplicate threshold and structurally near" among them.
    """
    import numpy as np

    from nar_plugin.integrations.mlflow.client import resolve_tracking_uri
    from nar_plugin.integrations.mlflow.keys import server_id
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
    clusters = _weight_clusters(idx, by_hash)
    clusters += [DedupCluster("same-architecture", sorted(version_of(g.key) for g in group), 1.0)
                 for group in by_hash.values() if len(group) > 1]
    groups = list(by_hash.values())
    reps = [group[0] for group in groups]

    def scope(e: Any) -> bool:
        return e.key.startswith(VERSION_PREFIX) and in_scope(e, server)

    for members in _near_duplicate_groups(idx, groups, load_thresholds(), scope):
        vecs = np.stack([reps[m].vector for m in members])  # one cluster: small
        clusters.append(DedupCluster("near-duplicate", sorted(version_of(reps[m].key) for m in members),
                                     float((vecs @ vecs.T).min())))
    return clusters
