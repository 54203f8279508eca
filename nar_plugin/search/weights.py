"""Weight relations in the index: store and read fingerprints, find the models that share a
query's weights or were fine-tuned from / into it, and a model's lineage.

Candidates never come from the embedding: ``same-weights`` is an indexed lookup of the weights
hash, ``fine-tuned-from`` compares the query with the fingerprinted entries of its own
architecture (same graph hash; at most :data:`MAX_CANDIDATES`, newest first), each distinct set
of weights once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.lineage.compare import (
    LineageThresholds,
    WeightComparison,
    compare,
    weight_relation,
)
from nar_plugin.lineage.fingerprint import WeightFingerprint

logger = logging.getLogger(__name__)

__all__ = ["LineageReport", "WeightLink", "fingerprint_of", "lineage", "store_fingerprint", "weight_links"]

#: fingerprinted entries of one architecture compared with a query, at most
MAX_CANDIDATES = 2000
#: relatives of a query whose model tree is rebuilt to place them (above: pairwise directions)
MAX_TREE = 200


@functools.lru_cache(maxsize=256)
def _decode(weights_hash: str, digest: str, blob: bytes) -> WeightFingerprint:
    return WeightFingerprint.from_bytes(blob, f"stored fingerprint {weights_hash[:12]}")


def fingerprint_of(index: Any, key: str) -> WeightFingerprint | None:
    """The stored fingerprint of ``key`` (``None``: none, or its blob is unreadable: logged)."""
    from nar_plugin.index.weights import weights_blob, weights_of

    linked = weights_of(index, key)
    if linked is None:
        return None
    found = weights_blob(index, linked[0])
    if found is None:
        return None
    try:
        return _decode(linked[0], found[0], found[1])
    except CorruptArtifactError as e:
        logger.warning("%s; ignoring the weights of %s", e, key)
        return None


def store_fingerprint(index: Any, key: str, fp: WeightFingerprint | None) -> None:
    """Store ``fp`` for ``key`` (``None`` removes the key's link)."""
    from nar_plugin.index.weights import put_weights

    if fp is None:
        put_weights(index, key, None)
    else:
        put_weights(index, key, fp.weights_hash, fp.digest, fp.to_bytes())


@dataclass(frozen=True)
class WeightLink:
    """A weight relation of an indexed entry to a query.

    Attributes:
        key: the entry.
        relation: ``same-weights`` or ``fine-tuned-from``.
        comparison: the evidence.
        lineage: ``parent`` (the entry is the query's parent), ``child`` (fine-tuned from the
            query), ``relative`` (same model tree, not adjacent: a sibling, a grandparent...),
            ``None`` (same weights).
    """

    key: str
    relation: str
    comparison: WeightComparison
    lineage: str | None = None


def entry_age(entry: Any) -> float:
    """When an entry's model was made (seconds since the epoch): its ``created_ms`` metadata
    (an MLflow model or version), else when it was indexed."""
    from datetime import datetime

    ms = (entry.metadata or {}).get("created_ms")
    if isinstance(ms, (int, float)) and ms > 0:
        return float(ms) / 1000.0
    try:
        return datetime.fromisoformat(str(entry.created_at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def weight_links(index: Any, fp: WeightFingerprint, graph_hash: str | None, *, exclude: Iterable[str] = (),
                 keep: Callable[[str], bool] | None = None, query_age: float | None = None,
                 thresholds: LineageThresholds | None = None) -> dict[str, WeightLink]:
    """Entries with the same weights as ``fp`` anywhere, and entries of architecture
    ``graph_hash`` fine-tuned from or into it (``keep``: which keys may be answered).

    Places: the model tree of the query and its relatives is rebuilt (their weights only; a tie in
    direction goes to the older model: ``query_age`` is when the query was made, ``None``: now,
    e.g. a version being registered or a model in memory)."""
    import time

    from nar_plugin.index.weights import keys_with_weights, weighted_keys_for_graph

    skip = set(exclude)
    out: dict[str, WeightLink] = {}
    same = WeightComparison(True, 1.0, 1.0, 0.0, 0.0, None, len(fp))
    for key in keys_with_weights(index, fp.weights_hash):
        if key not in skip and (keep is None or keep(key)):
            out[key] = WeightLink(key, "same-weights", same)
    if not graph_hash:
        return out
    by_hash: dict[str, list[str]] = {}
    for key, wh in weighted_keys_for_graph(index, graph_hash, MAX_CANDIDATES):
        if wh != fp.weights_hash and key not in skip and (keep is None or keep(key)):
            by_hash.setdefault(wh, []).append(key)
    now = time.time() if query_age is None else query_age
    kin: dict[str, tuple[WeightFingerprint, WeightComparison, list[str]]] = {}
    for wh, keys in by_hash.items():
        other = fingerprint_of(index, keys[0])
        if other is None:
            continue
        c = compare(fp, other, thresholds)  # a = the query, b = the entry
        if weight_relation(c, thresholds) == "fine-tuned-from":
            kin[keys[0]] = (other, c, keys)
    for rep, role in _roles(index, fp, kin, now, thresholds).items():
        _, c, keys = kin[rep]
        for key in keys:
            out[key] = WeightLink(key, "fine-tuned-from", c, role)
    return out


_QUERY = "\0query"


def _roles(index: Any, fp: WeightFingerprint, kin: dict[str, tuple[WeightFingerprint, WeightComparison, list[str]]],
           now: float, thresholds: LineageThresholds | None) -> dict[str, str | None]:
    """Each relative's place next to the query in their model tree: ``parent``, ``child`` or
    ``relative`` (same tree, not adjacent: a sibling, a grandparent...). The tree is rebuilt from
    the query and its relatives (:func:`~nar_plugin.lineage.compare.reconstruct_tree`); a tie in
    direction goes to the older model."""
    from nar_plugin.lineage.compare import reconstruct_tree

    if not kin:
        return {}
    if len(kin) > MAX_TREE:  # too many to rebuild their tree: each pair on its own
        return {rep: {"a->b": "child", "b->a": "parent"}.get(c.direction or "", "relative")
                for rep, (_, c, _) in kin.items()}
    fps = {_QUERY: fp, **{rep: other for rep, (other, _, _) in kin.items()}}
    ages = {_QUERY: now}
    for rep, (_, _, keys) in kin.items():  # a set of weights is as old as its oldest entry
        found = [entry_age(e) for k in keys if (e := index.get(k)) is not None]
        ages[rep] = min(found) if found else now
    roles: dict[str, str | None] = {rep: "relative" for rep in kin}
    for edge in reconstruct_tree(fps, thresholds, order=ages):
        if edge.child == _QUERY:
            roles[edge.parent] = "parent"
        elif edge.parent == _QUERY:
            roles[edge.child] = "child"
    return roles


@dataclass
class LineageReport:
    """A model's place in its model tree (:func:`lineage`).

    Attributes:
        key: the model.
        parents: its parent chain, nearest first: ``(key, similarity)``.
        children: models fine-tuned from it: ``(key, similarity)``.
        copies: entries with the same weights.
        tree: every edge of its model tree, ``(parent, child, similarity)``.
    """

    key: str
    parents: list[tuple[str, float]] = field(default_factory=list)
    children: list[tuple[str, float]] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    tree: list[tuple[str, str, float]] = field(default_factory=list)


def lineage(index: Any, key: str, *, keep: Callable[[str], bool] | None = None, max_models: int = 200,
            thresholds: LineageThresholds | None = None) -> LineageReport:
    """The parent chain, the children and the copies of the indexed model ``key``.

    Its model tree is rebuilt from the fingerprints of its relatives (the models reachable by
    ``fine-tuned-from`` links, at most ``max_models`` sets of weights) with
    :func:`~nar_plugin.lineage.compare.reconstruct_tree`; ties in direction go to the older model.

    Raises:
        KeyNotFoundError: ``key`` is not indexed or has no stored fingerprint.
    """
    from nar_plugin.errors import KeyNotFoundError
    from nar_plugin.index.weights import keys_with_weights
    from nar_plugin.lineage.compare import reconstruct_tree

    entry = index.get(key)
    fp = fingerprint_of(index, key) if entry is not None else None
    if fp is None:
        raise KeyNotFoundError(f"{key!r} has no weight fingerprint in the index ({index.path}); "
                               "log it with nar-plugin installed, or `nar index sync`")
    fps: dict[str, WeightFingerprint] = {key: fp}
    ages = {key: entry_age(entry)}
    frontier = [key]
    while frontier and len(fps) < max_models:
        k = frontier.pop()
        e = index.get(k)
        for other, link in weight_links(index, fps[k], e.graph_hash if e else None, exclude=(k,), keep=keep,
                                        thresholds=thresholds).items():
            if link.relation != "fine-tuned-from" or other in fps:
                continue
            ofp, oe = fingerprint_of(index, other), index.get(other)
            if ofp is None or oe is None or any(f.weights_hash == ofp.weights_hash for f in fps.values()):
                continue
            fps[other] = ofp
            ages[other] = min(entry_age(e) for k in keys_with_weights(index, ofp.weights_hash)
                              if (e := index.get(k)) is not None)  # as old as its oldest copy
            frontier.append(other)
    edges = reconstruct_tree(fps, thresholds, order=ages)
    parent = {e.child: (e.parent, e.similarity) for e in edges}
    copies = [k for k in keys_with_weights(index, fp.weights_hash) if k != key and (keep is None or keep(k))]
    report = LineageReport(key, copies=sorted(copies), tree=[(e.parent, e.child, e.similarity) for e in edges])
    report.children = sorted(((e.child, e.similarity) for e in edges if e.parent == key), key=lambda t: -t[1])
    node, seen = key, {key}
    while node in parent and parent[node][0] not in seen:
        node, sim = parent[node]
        seen.add(node)
        report.parents.append((node, sim))
    return report
