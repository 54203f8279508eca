"""The client API: ``index_model``, ``index_graph``, ``find_similar``, ``check_duplicate``.

Relations, thresholds and result types live in :mod:`~nar_plugin.search.relations` and
:mod:`~nar_plugin.search.results`; queries that are not index keys or model sources (MLflow run
ids, ``models:/`` URIs...) are resolved by integrations through
:mod:`~nar_plugin.search.resolvers`. Scores are cosine similarities: **larger is closer**.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nar_plugin.errors import InvalidQueryError, KeyExistsError, KeyNotFoundError
from nar_plugin.evaluation.fine_structure import (
    SHORTLIST,
    fine_similarity,
    promote_first,
    promote_score,
)
from nar_plugin.graph import ArchGraph
from nar_plugin.search import resolvers
from nar_plugin.search.relations import (
    DUPLICATE_RELATIONS,
    RELATIONS,
    Thresholds,
    at_least,
    load_thresholds,
    near_duplicate_evidence,
    relation_for,
)
from nar_plugin.search.results import DuplicateReport, Match, describe_graph

logger = logging.getLogger(__name__)

__all__ = [
    "IndexedModel",
    "check_duplicate",
    "default_key",
    "find_similar",
    "index_graph",
    "index_model",
    "open_index",
]

#: room for hits dropped after the search: entries folded into another one, and entries of the
#: query's own model
_FOLD_SLACK = 20


@dataclass(frozen=True)
class IndexedModel:
    """What :func:`index_graph` computed for a model."""

    key: str
    vector: Any
    graph: ArchGraph
    encoder_version: str
    description: dict[str, Any]


def open_index(index: Any = None) -> Any:
    """The ``EmbeddingIndex`` for ``index``: an index as is; a path or ``None`` (under
    ``NAR_HOME``): the process-wide handle of :func:`nar_plugin.index.open_index`, checked
    against the loaded encoder's version.

    Raises:
        EncoderVersionMismatchError: the index holds another encoder's embeddings.
    """
    if index is not None and not isinstance(index, (str, Path)):
        return index
    from nar_plugin.index import open_index as shared_handle
    from nar_plugin.model.inference import encoder_version

    return shared_handle(index, encoder_version=encoder_version())


def default_key(source: Any, graph: ArchGraph | None = None) -> str:
    """A key for a source that has none.

    - an existing file: ``file:<abs path>``;
    - a name: ``<kind>:<name>`` (``timm:resnet18``, ``hf-config:llama``); a name that already
      says its kind (``timm:resnet18``) is kept as it is;
    - anything in memory is keyed by its content, the graph hash: ``module:<Class>@<hash[:12]>``
      (an ``nn.Module``, a config, an ONNX proto...), ``graph:<name>@<hash[:12]>`` (an ArchGraph;
      ``graph:<hash[:16]>`` without a name). The same model always gets the same key and two
      different ones never share one.

    Args:
        source: the model source.
        graph: its extracted graph, when the caller has it (else in-memory sources are
            extracted here).
    """
    from nar_plugin.extract import source_kind

    if isinstance(source, (str, Path)):
        p = Path(source).expanduser()
        if p.exists():
            return f"file:{p.resolve()}"
        kind = source_kind(source)
        name = str(source).removeprefix(f"{kind}:")
        if Path(name).expanduser().exists():  # onnx:/path/model.onnx, pt2:model.pt2
            return f"file:{Path(name).expanduser().resolve()}"
        return f"{kind}:{name}"
    if graph is None:
        from nar_plugin.extract import extract_graph

        graph = source if isinstance(source, ArchGraph) else extract_graph(source)
    if isinstance(source, ArchGraph):
        name = source.metadata.get("name")
        return f"graph:{name}@{graph.graph_hash[:12]}" if name else f"graph:{graph.graph_hash[:16]}"
    return f"module:{type(source).__name__}@{graph.graph_hash[:12]}"


def index_graph(graph: ArchGraph, key: str, metadata: Mapping[str, Any] | None = None,
                index: Any = None, uri: str | None = None, source_kind: str | None = None, *,
                vector: Any = None, description: dict[str, Any] | None = None,
                fingerprint: Any = None) -> IndexedModel:
    """Embed an already extracted graph and upsert it into the index.

    Args:
        graph: the architecture.
        key: index key.
        metadata: JSON-able metadata stored with the entry.
        index: an ``EmbeddingIndex`` or a path (default: the index under ``NAR_HOME``).
        uri: where the model lives.
        source_kind: stored kind (default: the key's scheme).
        vector: the graph's embedding when the caller already computed it (not recomputed).
        description: its :func:`describe_graph` when already computed.
        fingerprint: the model's :class:`~nar_plugin.lineage.fingerprint.WeightFingerprint`,
            stored beside the entry (its weights hash also goes into the metadata).

    Raises:
        GraphTooLargeError: more nodes than ``NAR_MAX_NODES``.
    """
    from nar_plugin.config import NAR_MAX_NODES
    from nar_plugin.errors import GraphTooLargeError
    from nar_plugin.model.inference import embed_graph, encoder_version

    limit = NAR_MAX_NODES.get()
    if graph.num_nodes > limit:
        raise GraphTooLargeError(graph.num_nodes, limit)
    vec = embed_graph(graph) if vector is None else vector
    desc = describe_graph(graph) if description is None else description
    meta = {**(metadata or {}), "description": desc, "name": graph.metadata.get("name")}
    if fingerprint is not None:
        meta["weights_hash"] = fingerprint.weights_hash
    idx = open_index(index)
    idx.upsert(key, vec, source_kind=source_kind or key.split(":", 1)[0], uri=uri,
               graph_hash=graph.graph_hash, encoder_version=encoder_version(), metadata=meta)
    if fingerprint is not None:
        from nar_plugin.search.weights import store_fingerprint

        store_fingerprint(idx, key, fingerprint)
    return IndexedModel(key, vec, graph, encoder_version(), desc)


def index_model(source: Any, key: str | None = None, metadata: Mapping[str, Any] | None = None,
                index: Any = None, example_inputs: Any = None, *, replace: bool = False,
                weights: bool = True) -> str:
    """Extract, embed and index a model; returns its key.

    The weights are fingerprinted too (:mod:`nar_plugin.lineage`) when they are at hand: an
    ``nn.Module`` with real (not meta) weights, or a ``.safetensors`` / ``.pt2`` / ``.onnx`` file.

    Indexing the same architecture again under the same key is idempotent (its metadata is
    refreshed). A key that already holds *another* architecture is never silently overwritten.

    Args:
        source: anything :func:`nar_plugin.extract_graph` accepts.
        key: index key; default from :func:`default_key` (content-derived for in-memory models).
        metadata: extra JSON-able metadata stored with the entry.
        index: an ``EmbeddingIndex`` or a path (default: the index under ``NAR_HOME``).
        example_inputs: for ``nn.Module`` sources.
        replace: overwrite ``key`` even when it holds another architecture.
        weights: fingerprint the weights when they are at hand.

    Raises:
        KeyExistsError: ``key`` holds another architecture (another graph hash) and ``replace``
            is false.

    Example:
        >>> nar_plugin.index_model("resnet50", key="timm:resnet50")
        'timm:resnet50'
    """
    from nar_plugin.extract import extract_graph

    graph = source if isinstance(source, ArchGraph) else extract_graph(source, example_inputs)
    key = key or default_key(source, graph)
    idx = open_index(index)
    existing = idx.get(key)
    if (existing is not None and not replace and existing.graph_hash
            and existing.graph_hash != graph.graph_hash):
        raise KeyExistsError(key, existing.id, message=(
            f"key {key!r} already holds another architecture (graph hash {existing.graph_hash[:12]}, "
            f"this model's is {graph.graph_hash[:12]}); pass replace=True (`nar index add --replace`) "
            "to overwrite it, or give another key"))
    uri = str(source) if isinstance(source, (str, Path)) else None
    index_graph(graph, key, metadata, index=idx, uri=uri, fingerprint=_fingerprint_source(source) if weights else None)
    return key


def _fingerprint_source(source: Any) -> Any:
    """The weight fingerprint of a source whose weights are at hand, else ``None``."""
    from nar_plugin.errors import NarError

    try:
        if isinstance(source, (str, Path)):
            p = Path(source).expanduser()
            if not p.exists() and isinstance(source, str) and ":" in source:
                p = Path(source.split(":", 1)[1]).expanduser()  # onnx:/path/model.onnx
            if p.is_file() and p.suffix.lower() in (".safetensors", ".pt2", ".onnx"):
                from nar_plugin.lineage.readers import fingerprint_file

                return fingerprint_file(p)
            return None
        if hasattr(source, "state_dict") and callable(source.state_dict):
            from nar_plugin.lineage.readers import fingerprint_module

            return fingerprint_module(source)
    except NarError as e:  # e.g. a model built on meta: no weights to fingerprint
        logger.debug("no weight fingerprint for %s: %s", type(source).__name__, e)
    return None


def _resolve_query(query: Any, idx: Any, example_inputs: Any = None) -> resolvers.ResolvedQuery:
    """An index key, a query an integration resolves, or any model source -> ResolvedQuery."""
    from nar_plugin.extract import extract_graph
    from nar_plugin.model.inference import embed_graph

    if isinstance(query, str):
        entry = idx.get(query)
        if entry is not None:
            own = (entry.key, resolvers.parent_of(entry))  # a folded entry's parent is the same model
            return resolvers.ResolvedQuery(
                entry.vector, {"description": entry.metadata.get("description") or {},
                               "metadata": dict(entry.metadata)},
                tuple(k for k in own if k), entry.graph_hash)
        resolve = resolvers.resolver_for(query)
        if resolve is not None:
            return resolve(query, idx)
        if resolvers.is_key_shaped(query):
            raise KeyNotFoundError(f"{query!r} is not in the index ({idx.path}); index it first")
    graph = query if isinstance(query, ArchGraph) else extract_graph(query, example_inputs)
    info: dict[str, Any] = {"description": describe_graph(graph)}
    if not isinstance(query, ArchGraph):
        fp = _fingerprint_source(query)
        if fp is not None:
            info["fingerprint"] = fp
    return resolvers.ResolvedQuery(embed_graph(graph), info, (), graph.graph_hash)


def _query_fingerprint(q: resolvers.ResolvedQuery, idx: Any) -> Any:
    """The query's weight fingerprint: computed from an in-memory model, or stored for one of its
    own entries (an index key; an MLflow model and its versions)."""
    if q.info.get("fingerprint") is not None:
        return q.info["fingerprint"]
    from nar_plugin.search.weights import fingerprint_of

    for key in q.exclude_keys:
        fp = fingerprint_of(idx, key)
        if fp is not None:
            return fp
    return None


def _wanted(value: Any, allowed: Any) -> bool:
    """One column constraint of a dict filter, as the index applies it."""
    if isinstance(allowed, (list, tuple, set, frozenset)):
        return value in allowed
    return value is None if allowed is None else value == allowed


def _admits(flt: Any, entry: Any) -> bool:
    """Does the search filter ``flt`` (key prefix, dict of column values, or predicate) admit ``entry``?"""
    if isinstance(flt, str):
        return entry.key.startswith(flt)
    if isinstance(flt, Mapping):
        return all(_wanted(getattr(entry, col), v) for col, v in flt.items())
    return bool(flt(entry))


def _within(where: Any, scope: Callable[[Any], bool] | None) -> Any:
    """The caller's ``where`` filter, narrowed to the entries a resolved query may be answered
    with (``scope``; e.g. one tracking server's MLflow entries)."""
    if scope is None:
        return where
    if where is None:
        return scope
    from nar_plugin.index.filters import compile_filter

    compile_filter(where)  # the caller's filter is checked as if it were used alone
    if isinstance(where, str):
        return lambda e: e.key.startswith(where) and scope(e)
    if isinstance(where, Mapping):
        return lambda e: all(_wanted(getattr(e, col), v) for col, v in where.items()) and scope(e)
    return lambda e: where(e) and scope(e)


def find_similar(query: Any, k: int = 10, relation: str | None = None, where: Any = None,
                 index: Any = None, thresholds: Thresholds | None = None) -> list[Match]:
    """Rank indexed models by architectural similarity to ``query``.

    Args:
        query: an index key; a query an integration resolves (an MLflow run id, model id or
            ``models:/name/version`` URI); or any source :func:`nar_plugin.extract_graph`
            accepts.
        k: number of matches (an int >= 1).
        relation: keep only matches with at least this relation (``"near-duplicate"`` keeps
            it and every stronger one; the legacy ``"identical"`` means ``"same-architecture"``).
        where: filter passed to :meth:`EmbeddingIndex.search` (dict of column values, key prefix
            or callable).
        index: an ``EmbeddingIndex`` or path (default: under ``NAR_HOME``).
        thresholds: relation thresholds (default: calibrated, see :func:`load_thresholds`).

    Returns:
        Matches with a weight relation first (same weights, then fine-tuned, found by the weight
        fingerprints whatever their rank in the embedding), then the structurally closest of the
        first :data:`~nar_plugin.evaluation.fine_structure.SHORTLIST` hits when its fine
        similarity is at least ``thresholds.promote_fine`` (calibrated; the same network
        written by another library comes first;
        :func:`~nar_plugin.evaluation.fine_structure.promote_first`), then by decreasing score
        (larger = closer). The query itself, and entries
        folded into it, are excluded; an entry folded into another indexed entry is shown once,
        as that entry (see :mod:`nar_plugin.search.resolvers`). A query an integration resolves
        may narrow the candidates (``ResolvedQuery.scope``): an MLflow id is answered with its
        own tracking server's MLflow entries only (and every non-MLflow entry).

    Raises:
        KeyNotFoundError: a key-shaped query that is not indexed, or an id nothing resolves.
        InvalidQueryError: ``k`` is not an int >= 1, or ``where`` is malformed.
        ValueError: ``relation`` is not a relation name.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InvalidQueryError(f"k must be an int >= 1 (the number of matches), found {k!r}")
    k = int(k)
    allowed = at_least(relation)
    idx = open_index(index)
    th = thresholds or load_thresholds()
    q = _resolve_query(query, idx)
    flt = _within(where, q.scope)
    links = _weight_links(q, idx, flt)
    fetch = max(k if relation is None else max(k * 5, 50), SHORTLIST) + _FOLD_SLACK
    hits = idx.search(q.vector, k=fetch, filter=flt, exclude_keys=q.exclude_keys)
    missing = [key for key in links if key not in {h.key for h in hits}]
    if missing:  # weight relatives the k-NN did not reach (many retrains of one architecture)
        wanted = set(missing)
        hits += idx.search(q.vector, k=len(missing), exclude_keys=q.exclude_keys,
                           filter=_within(flt, lambda e: e.key in wanted))
    strength = {r: i for i, r in enumerate(RELATIONS)}
    qdesc = q.info.get("description")
    fine = {h.key: fine_similarity(qdesc, h.entry.metadata.get("description")) for h in hits}
    by_score = sorted((h for h in hits if h.key not in links), key=lambda h: -h.score)
    first = promote_first([promote_score(qdesc, h.entry.metadata.get("description"), th.promote_shapes)
                           for h in by_score], min_similarity=th.promote_fine,
                          cosines=[h.score for h in by_score], related=th.related)
    promoted = by_score[first].key if first is not None else None
    hits.sort(key=lambda h: (strength.get(links[h.key].relation, 9) if h.key in links else 9,
                             h.key != promoted, -h.score))
    by_key = {h.key: h for h in hits}
    query_info = {**q.info, "graph_hash": q.graph_hash}
    out: list[Match] = []
    for item in resolvers.fold([h.entry for h in hits], lambda key: idx.get(key) is not None, q.exclude_keys):
        h = by_key[item.entry.key]
        link = links.get(h.key)
        near, floor = near_duplicate_evidence(qdesc, h.entry.metadata.get("description"), th)
        rel = relation_for(h.score, q.graph_hash is not None and h.entry.graph_hash == q.graph_hash, th,
                           weights=link.relation if link else None, near=near, near_floor=floor)
        if rel not in allowed:
            continue
        meta = {**h.entry.metadata, **item.listings}
        meta.setdefault("source_kind", h.entry.source_kind)
        if h.entry.uri:
            meta.setdefault("uri", h.entry.uri)
        out.append(Match(h.key, float(h.score), rel, meta, h.entry.graph_hash, query_info,
                         link.comparison if link else None, link.lineage if link else None, fine[h.key],
                         h.key == promoted and h.key not in links))
        if len(out) >= k:
            break
    return out


def _weight_links(q: resolvers.ResolvedQuery, idx: Any, flt: Any) -> dict[str, Any]:
    """Weight relatives of the query among the entries ``flt`` admits (empty without a fingerprint)."""
    fp = _query_fingerprint(q, idx)
    if fp is None:
        return {}
    from nar_plugin.search.weights import entry_age, weight_links

    def keep(key: str) -> bool:
        if flt is None:
            return True
        entry = idx.get(key)
        return entry is not None and _admits(flt, entry)

    own = [e for k in q.exclude_keys if (e := idx.get(k)) is not None]
    age = min(entry_age(e) for e in own) if own else None  # an in-memory query is new
    return weight_links(idx, fp, q.graph_hash, exclude=q.exclude_keys, keep=keep, query_age=age)


def check_duplicate(source: Any, index: Any = None, thresholds: Thresholds | None = None,
                    where: Any = None) -> DuplicateReport:
    """Is the same or nearly the same architecture already indexed (``near-duplicate`` or stronger)?

    The best match is the strongest relation (same weights, fine-tuned, same architecture) even
    when a near-duplicate scores higher: equal hashes are proof, a cosine is evidence.

    Example:
        >>> report = nar_plugin.check_duplicate(my_model)
        >>> report.is_duplicate, report.best.key if report.best else None
    """
    matches = find_similar(source, k=10, index=index, thresholds=thresholds, where=where)
    dups = [m for m in matches if m.relation in DUPLICATE_RELATIONS]
    strength = {r: i for i, r in enumerate(RELATIONS)}
    best = min(matches, key=lambda m: (strength[m.relation] if m.relation in RELATIONS[:3] else 9, -m.score),
               default=None)
    return DuplicateReport(bool(dups), best.relation if best else "unrelated", best, dups)
