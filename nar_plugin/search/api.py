"""The client API: ``index_model``, ``find_similar``, ``check_duplicate``.

Relations between a query and a match, strongest first:

- ``identical``: same ``graph_hash`` (the same architecture, weights aside);
- ``near-duplicate``: cosine >= ``Thresholds.near_duplicate``;
- ``related``: cosine >= ``Thresholds.related`` (calibrated as "same family");
- ``unrelated``: anything else.

Scores are cosine similarities of unit embeddings: **larger is closer**.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import KeyNotFoundError
from nar_plugin.graph import ArchGraph

logger = logging.getLogger(__name__)

__all__ = [
    "Thresholds",
    "load_thresholds",
    "Match",
    "Explanation",
    "DuplicateReport",
    "IndexedModel",
    "describe_graph",
    "default_key",
    "index_model",
    "index_graph",
    "find_similar",
    "check_duplicate",
    "relation_for",
    "ResolvedQuery",
    "open_index",
]

RELATIONS = ("identical", "near-duplicate", "related", "unrelated")
_THRESHOLDS_FILE = Path(__file__).resolve().parents[1] / "weights" / "thresholds.json"


@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds (larger = closer) separating relations.

    Attributes:
        near_duplicate: at or above: near-duplicate (e.g. a depth/width variant of one model).
        related: at or above: related (same family).
    """

    near_duplicate: float = 0.95
    related: float = 0.80
    source: str = "defaults"


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Thresholds calibrated on the corpus (``weights/thresholds.json``) for the loaded
    encoder, else the defaults (with a warning when the file belongs to another encoder)."""
    from nar_plugin.model.inference import encoder_version

    p = Path(path) if path else _THRESHOLDS_FILE
    if not p.is_file():
        return Thresholds()
    data = json.loads(p.read_text())
    if data.get("encoder") and data["encoder"] != encoder_version():
        logger.warning("%s was calibrated for encoder %s, not %s; using default thresholds",
                       p, data["encoder"], encoder_version())
        return Thresholds()
    return Thresholds(float(data["near_duplicate"]), float(data["related"]), source=str(p.name))


def relation_for(score: float, same_hash: bool, th: Thresholds) -> str:
    """The relation implied by a cosine ``score`` (larger = closer) and hash equality."""
    if same_hash:
        return "identical"
    if score >= th.near_duplicate:
        return "near-duplicate"
    if score >= th.related:
        return "related"
    return "unrelated"


# ------------------------------------------------------------------ explanations
def describe_graph(graph: ArchGraph, motif_steps: int = 2) -> dict[str, Any]:
    """Compact, JSON-able description stored with every indexed model (used by ``explain``).

    Holds the op histogram and the histogram of motif types (cross-graph stable keys), so two
    models can be compared without keeping either graph.
    """
    from nar_plugin.motifs import sample_motifs

    mg = sample_motifs(graph, steps=motif_steps)
    motifs = Counter(mg.type_keys)
    return {
        "num_nodes": graph.num_nodes,
        "num_edges": graph.num_edges,
        "num_motifs": mg.num_instances,
        "ops": dict(graph.op_histogram()),
        "motifs": dict(motifs.most_common(64)),
    }


@dataclass(frozen=True)
class Explanation:
    """Why two models are close: shared motif types and the op-level difference.

    Attributes:
        shared_motifs: motif type key -> (count in query, count in match), for shared types.
        motif_overlap: weighted Jaccard of the motif histograms, in [0, 1].
        op_diff: op -> (count in query, count in match), only where they differ.
        same_hash: the two graphs are identical architectures.
    """

    shared_motifs: dict[str, tuple[int, int]]
    motif_overlap: float
    op_diff: dict[str, tuple[int, int]]
    same_hash: bool

    def __str__(self) -> str:
        if self.same_hash:
            return "identical architecture (same graph hash)"
        parts = [f"{len(self.shared_motifs)} shared motif types (overlap {self.motif_overlap:.0%})"]
        if self.op_diff:
            diffs = sorted(self.op_diff.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:5]
            parts.append("ops differ: " + ", ".join(f"{op} {a}->{b}" for op, (a, b) in diffs))
        else:
            parts.append("same op counts")
        return "; ".join(parts)


def _explain(q: Mapping[str, Any], m: Mapping[str, Any], same_hash: bool) -> Explanation:
    qm, mm = Counter(q.get("motifs") or {}), Counter(m.get("motifs") or {})
    shared = {k: (qm[k], mm[k]) for k in sorted(set(qm) & set(mm), key=lambda k: -(qm[k] + mm[k]))}
    inter = sum((qm & mm).values())
    union = sum((qm | mm).values())
    qo, mo = Counter(q.get("ops") or {}), Counter(m.get("ops") or {})
    diff = {op: (qo[op], mo[op]) for op in sorted(set(qo) | set(mo)) if qo[op] != mo[op]}
    return Explanation(shared, inter / union if union else 0.0, diff, same_hash)


@dataclass(frozen=True)
class Match:
    """One result of :func:`find_similar`.

    Attributes:
        key: index key of the match (``mlflow:model:...``, ``hf:org/name@sha``...).
        score: cosine similarity to the query, larger = closer.
        relation: ``identical`` / ``near-duplicate`` / ``related`` / ``unrelated``.
        metadata: what was stored with the match (source, uri, run, registered name...).
    """

    key: str
    score: float
    relation: str
    metadata: dict[str, Any] = field(default_factory=dict)
    graph_hash: str | None = None
    _query: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def explain(self) -> Explanation:
        """Shared motif types and op-level differences between the query and this match."""
        return _explain(self._query.get("description") or {}, self.metadata.get("description") or {},
                        self.relation == "identical")

    def to_dict(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.metadata.items() if k != "description"}
        return {"key": self.key, "score": round(self.score, 6), "relation": self.relation,
                "graph_hash": self.graph_hash, "metadata": meta, "explanation": str(self.explain())}


@dataclass(frozen=True)
class DuplicateReport:
    """Result of :func:`check_duplicate`.

    Attributes:
        is_duplicate: an identical or near-duplicate model is already indexed.
        relation: relation of the best match (``unrelated`` when the index is empty).
        best: the best match, if any.
        matches: all matches at or above ``near-duplicate``.
    """

    is_duplicate: bool
    relation: str
    best: Match | None
    matches: list[Match]


@dataclass(frozen=True)
class IndexedModel:
    """What :func:`index_graph` computed for a model."""

    key: str
    vector: Any
    graph: ArchGraph
    encoder_version: str
    description: dict[str, Any]


# ------------------------------------------------------------------ helpers
def open_index(index: Any = None) -> Any:
    """The ``EmbeddingIndex`` for ``index`` (an index, a path, or ``None``: under ``NAR_HOME``)."""
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.index import EmbeddingIndex

    if index is None:
        return EmbeddingIndex(encoder_version=encoder_version())
    if isinstance(index, (str, Path)):
        return EmbeddingIndex(index, encoder_version=encoder_version())
    return index


def default_key(source: Any) -> str:
    """A key for a source that has none: ``file:<abs path>``, ``timm:<name>``,
    ``hf-config:<model_type>`` or ``module:<Class>``."""
    from nar_plugin.extract import source_kind

    if isinstance(source, (str, Path)):
        p = Path(source).expanduser()
        if p.exists():
            return f"file:{p.resolve()}"
        kind = source_kind(source)
        return f"{kind}:{source}"
    if isinstance(source, ArchGraph):
        return f"graph:{source.metadata.get('name') or source.graph_hash[:16]}"
    return f"module:{type(source).__name__}"


def index_graph(graph: ArchGraph, key: str, metadata: Mapping[str, Any] | None = None,
                index: Any = None, uri: str | None = None, source_kind: str | None = None) -> IndexedModel:
    """Embed an already extracted graph and upsert it into the index.

    Raises:
        GraphTooLargeError: more nodes than ``NAR_MAX_NODES``.
    """
    from nar_plugin.config import NAR_MAX_NODES
    from nar_plugin.model.inference import embed_graph, encoder_version
    from nar_plugin.errors import GraphTooLargeError

    limit = NAR_MAX_NODES.get()
    if graph.num_nodes > limit:
        raise GraphTooLargeError(graph.num_nodes, limit)
    vec = embed_graph(graph)
    desc = describe_graph(graph)
    meta = {**(metadata or {}), "description": desc, "name": graph.metadata.get("name")}
    idx = open_index(index)
    idx.upsert(key, vec, source_kind=source_kind or key.split(":", 1)[0], uri=uri,
               graph_hash=graph.graph_hash, encoder_version=encoder_version(), metadata=meta)
    return IndexedModel(key, vec, graph, encoder_version(), desc)


def index_model(source: Any, key: str | None = None, metadata: Mapping[str, Any] | None = None,
                index: Any = None, example_inputs: Any = None) -> str:
    """Extract, embed and index a model; returns its key.

    Args:
        source: anything :func:`nar_plugin.extract_graph` accepts.
        key: index key; default from :func:`default_key`.
        metadata: extra JSON-able metadata stored with the entry.
        index: an ``EmbeddingIndex`` or a path (default: the index under ``NAR_HOME``).
        example_inputs: for ``nn.Module`` sources.

    Example:
        >>> nar_plugin.index_model("resnet50", key="timm:resnet50")
        'timm:resnet50'
    """
    from nar_plugin.extract import extract_graph

    graph = source if isinstance(source, ArchGraph) else extract_graph(source, example_inputs)
    key = key or default_key(source)
    uri = str(source) if isinstance(source, (str, Path)) else None
    index_graph(graph, key, metadata, index=index, uri=uri)
    return key


@dataclass(frozen=True)
class ResolvedQuery:
    """A query turned into a vector: what to search with and what to leave out."""

    vector: Any
    info: dict[str, Any]
    exclude_keys: tuple[str, ...] = ()
    graph_hash: str | None = None
    exclude_model_id: str | None = None


def _resolve_query(query: Any, idx: Any, example_inputs: Any = None) -> ResolvedQuery:
    """Turn an index key, an MLflow id or any model source into a :class:`ResolvedQuery`."""
    from nar_plugin.model.inference import embed_graph
    from nar_plugin.extract import extract_graph

    if isinstance(query, str):
        entry = idx.get(query)
        if entry is not None:
            return ResolvedQuery(entry.vector, {"description": entry.metadata.get("description") or {},
                                                "metadata": dict(entry.metadata)},
                                 (entry.key,), entry.graph_hash, entry.metadata.get("model_id"))
        resolver = _mlflow_resolver(query)
        if resolver is not None:
            return resolver(query, idx)
        if query.startswith(("mlflow:", "hf:", "file:", "graph:", "module:")):
            raise KeyNotFoundError(f"{query!r} is not in the index ({idx.path}); index it first")
    graph = query if isinstance(query, ArchGraph) else extract_graph(query, example_inputs)
    return ResolvedQuery(embed_graph(graph), {"description": describe_graph(graph)}, (), graph.graph_hash)


def _mlflow_resolver(query: str) -> Callable[[str, Any], Any] | None:
    """MLflow run ids, model ids and ``models:/`` URIs resolve through the MLflow integration."""
    import re

    if query.startswith("models:/") or re.fullmatch(r"[0-9a-f]{32}", query) or re.fullmatch(r"m-[0-9a-f]{32}", query):
        try:
            from nar_plugin.integrations.mlflow.sync import resolve_query
        except ImportError:
            return None
        return resolve_query
    return None


def find_similar(query: Any, k: int = 10, relation: str | None = None, where: Any = None,
                 index: Any = None, thresholds: Thresholds | None = None) -> list[Any]:
    """Rank indexed models by architectural similarity to ``query``.

    Args:
        query: an index key, an MLflow run id / model id / ``models:/name/version`` URI, or any
            source :func:`nar_plugin.model.inference` accepts.
        k: number of matches.
        relation: keep only matches with at least this relation (``"near-duplicate"`` keeps
            identical and near-duplicates).
        where: filter passed to :meth:`EmbeddingIndex.search` (dict of column values, key prefix
            or callable).
        index: an ``EmbeddingIndex`` or path (default: under ``NAR_HOME``).
        thresholds: relation thresholds (default: calibrated, see :func:`load_thresholds`).

    Returns:
        Matches sorted by decreasing score (larger = closer); the query itself is excluded.

    Raises:
        KeyNotFoundError: a key-shaped query that is not indexed.
    """
    if relation is not None and relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, found {relation!r}")
    idx = open_index(index)
    th = thresholds or load_thresholds()
    q = _resolve_query(query, idx)
    fetch = k if relation is None else max(k * 5, 50)
    if q.exclude_model_id:
        fetch += 10  # registered versions of the query's own model are dropped below
    fetch += 10  # registered versions of models that are themselves indexed are folded below
    hits = idx.search(q.vector, k=fetch, filter=where, exclude_keys=q.exclude_keys)
    versions: dict[str, list[str]] = {}
    for h in hits:
        mid = h.entry.metadata.get("model_id")
        if h.key.startswith("mlflow:version:") and mid:
            versions.setdefault(mid, []).append(h.key.removeprefix("mlflow:version:"))
    out: list[Match] = []
    allowed = RELATIONS[: RELATIONS.index(relation) + 1] if relation else RELATIONS
    for h in hits:
        if q.exclude_model_id and h.entry.metadata.get("model_id") == q.exclude_model_id:
            continue
        mid = h.entry.metadata.get("model_id")
        if h.key.startswith("mlflow:version:") and mid and idx.get(f"mlflow:model:{mid}") is not None:
            continue  # shown once, as its LoggedModel, with the version listed in the metadata
        rel = relation_for(h.score, q.graph_hash is not None and h.entry.graph_hash == q.graph_hash, th)
        if rel not in allowed:
            continue
        meta = dict(h.entry.metadata)
        if h.key.startswith("mlflow:model:") and mid in versions:
            meta["registered_versions"] = versions[mid]
        meta.setdefault("source_kind", h.entry.source_kind)
        if h.entry.uri:
            meta.setdefault("uri", h.entry.uri)
        out.append(Match(h.key, float(h.score), rel, meta, h.entry.graph_hash, q.info))
        if len(out) >= k:
            break
    return out


def check_duplicate(source: Any, index: Any = None, thresholds: Thresholds | None = None,
                    where: Any = None) -> DuplicateReport:
    """Is an identical or near-duplicate architecture already indexed?

    Example:
        >>> report = nar_plugin.check_duplicate(my_model)
        >>> report.is_duplicate, report.best.key if report.best else None
    """
    matches = find_similar(source, k=10, index=index, thresholds=thresholds, where=where)
    dups = [m for m in matches if m.relation in ("identical", "near-duplicate")]
    best = matches[0] if matches else None
    if best is not None:
        # an identical match outranks a higher-scoring near-duplicate
        ident = [m for m in matches if m.relation == "identical"]
        best = ident[0] if ident else best
    return DuplicateReport(bool(dups), best.relation if best else "unrelated", best, dups)
