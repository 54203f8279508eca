"""ArchGraph: the one intermediate representation of a model architecture.

A node is an op type from the fixed, versioned vocabulary :data:`~nar_plugin.graph.vocab.OPS`
plus a few structural attributes (:class:`~nar_plugin.graph.vocab.NodeAttrs`). Edges are directed
data flow. Nodes are stored in a deterministic topological order.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.graph.algorithms import induced_edges, topological_order, wl_refine
from nar_plugin.graph.canonical import CANON_VERSION, graph_nodes, run_passes
from nar_plugin.graph.vocab import NO_ATTRS, OP_INDEX, VOCAB_VERSION, NodeAttrs

__all__ = ["ArchGraph"]


@dataclass
class ArchGraph:
    """A model architecture as a directed data-flow graph of canonical ops.

    Args:
        ops: canonical op type per node (each in :data:`OPS`), in topological order.
        attrs: :class:`NodeAttrs` per node.
        edges: directed ``(src, dst)`` pairs with ``src < dst``, sorted, de-duplicated.
        metadata: free-form provenance (``source``, ``name``, ``tracer``...); not hashed.

    Example:
        >>> g = nar_plugin.extract_graph("resnet18")
        >>> g.num_nodes, g.graph_hash[:8]
    """

    ops: list[str]
    attrs: list[NodeAttrs]
    edges: list[tuple[int, int]]
    metadata: dict[str, Any] = field(default_factory=dict)
    vocab_version: int = VOCAB_VERSION

    def __post_init__(self) -> None:
        if len(self.ops) != len(self.attrs):
            raise ValueError(f"ops and attrs differ in length: {len(self.ops)} vs {len(self.attrs)}")
        for op in self.ops:
            if op not in OP_INDEX:
                raise ValueError(f"op {op!r} is not in the canonical vocabulary v{VOCAB_VERSION}")
        n = len(self.ops)
        for s, d in self.edges:
            if not (0 <= s < d < n):
                raise ValueError(f"edge ({s}, {d}) is not forward in a topological order of {n} nodes")
        self._preds: list[list[int]] | None = None
        self._succs: list[list[int]] | None = None

    # ----------------------------------------------------------------- structure
    # one-line size properties, alike in shape to MotifGraph's (shape-alike pairs listed by `duplicates` are deliberate: see docs/architecture.md, "Layout decisions")
    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        """Number of (directed) edges."""
        return len(self.edges)

    def _adjacency(self) -> tuple[list[list[int]], list[list[int]]]:
        """``(preds, succs)`` adjacency lists, built once on first use (``O(N + E)``)."""
        if self._preds is None or self._succs is None:
            preds: list[list[int]] = [[] for _ in self.ops]
            succs: list[list[int]] = [[] for _ in self.ops]
            for s, d in self.edges:
                succs[s].append(d)
                preds[d].append(s)
            self._preds, self._succs = preds, succs
        return self._preds, self._succs

    def predecessors(self, i: int) -> list[int]:
        """Nodes with an edge into ``i`` (a cached list: do not modify it)."""
        return self._adjacency()[0][i]

    def successors(self, i: int) -> list[int]:
        """Nodes with an edge from ``i`` (a cached list: do not modify it)."""
        return self._adjacency()[1][i]

    def label(self, i: int) -> str:
        """The node's initial label: op type plus non-zero attributes (what hashing starts from)."""
        a = self.attrs[i]
        if a == NO_ATTRS:
            return self.ops[i]
        return f"{self.ops[i]}|{a.kernel},{a.stride},{a.groups},{a.width_in},{a.width_out}"

    def op_histogram(self) -> Counter[str]:
        """Number of nodes per op type."""
        return Counter(self.ops)

    # ----------------------------------------------------------------- hashing
    def wl_labels(self, steps: int) -> list[list[str]]:
        """Weisfeiler-Lehman labels over in- and out-neighbours for ``steps`` rounds.

        Returns a list of ``steps + 1`` label lists; round 0 is :meth:`label`.
        """
        preds, succs = self._adjacency()
        return wl_refine([self.label(i) for i in range(self.num_nodes)], preds, succs, steps)

    @property
    def graph_hash(self) -> str:
        """WL hash of the architecture: equal for identical architectures (weights ignored).

        Five WL rounds over in- and out-neighbours plus node and edge counts. Different
        architectures hash differently unless they are WL-indistinguishable, which does not
        happen for the DAGs real models produce.
        """
        cached = getattr(self, "_hash", None)
        if cached is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(f"v{self.vocab_version}:{self.num_nodes}:{self.num_edges}".encode())
            for labels in self.wl_labels(5):
                h.update(("|".join(sorted(labels))).encode())
            cached = h.hexdigest()
            self._hash = cached
        return cached

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (``format: nar-archgraph``), read back by :meth:`from_dict`."""
        return {
            "format": "nar-archgraph",
            "vocab_version": self.vocab_version,
            "canonical": CANON_VERSION,
            "ops": self.ops,
            "attrs": [list(a) for a in self.attrs],
            "edges": [list(e) for e in self.edges],
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchGraph:
        """Rebuild a graph from :meth:`to_dict` output.

        A graph written before the current canonical passes (its ``canonical`` field is missing
        or older than :data:`~nar_plugin.graph.canonical.CANON_VERSION`) is re-canonicalised on
        the way in, so corpora and graph files written by an older version give the graph (and
        hash) a fresh extraction gives, without re-extracting.

        Raises:
            CorruptArtifactError: the dict is not an ArchGraph or has another vocabulary version.
        """
        if not isinstance(data, dict) or data.get("format") != "nar-archgraph":
            raise CorruptArtifactError("expected an ArchGraph JSON object with format 'nar-archgraph'")
        if data.get("vocab_version") != VOCAB_VERSION:
            raise CorruptArtifactError(
                f"ArchGraph has vocabulary v{data.get('vocab_version')}, this nar-plugin reads "
                f"v{VOCAB_VERSION}; re-extract the graph"
            )
        try:
            ops = list(data["ops"])
            attrs = [NodeAttrs(*a) for a in data["attrs"]]
            edges = [(int(s), int(d)) for s, d in data["edges"]]
            version = int(data.get("canonical", 1))
            if version < CANON_VERSION:
                cls(ops, attrs, edges)  # validate before the passes index into it
                ops, attrs, edges = run_passes(graph_nodes(ops, attrs, edges))
            return cls(ops=ops, attrs=attrs, edges=edges, metadata=dict(data.get("metadata") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptArtifactError(f"malformed ArchGraph JSON: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> ArchGraph:
        """Parse :meth:`to_json` output.

        Raises:
            CorruptArtifactError: the text is not JSON or not a graph of this vocabulary.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorruptArtifactError(f"ArchGraph JSON does not parse: {e}") from e
        return cls.from_dict(data)

    # ----------------------------------------------------------------- ML views
    def feature_matrix(self) -> list[list[int]]:
        """Integer features per node: ``[op index, kernel, stride, groups, width_in, width_out]``."""
        return [[OP_INDEX[o], *a] for o, a in zip(self.ops, self.attrs)]

    def to_pyg(self) -> Any:
        """A ``torch_geometric.data.Data`` with ``x`` (long, ``[N, 6]``, see
        :meth:`feature_matrix`) and ``edge_index`` (long, ``[2, E]``)."""
        import torch
        from torch_geometric.data import Data

        x = torch.tensor(self.feature_matrix(), dtype=torch.long).reshape(-1, 6)
        if self.edges:
            ei = torch.tensor(self.edges, dtype=torch.long).t().contiguous()
        else:
            ei = torch.zeros((2, 0), dtype=torch.long)
        return Data(x=x, edge_index=ei, num_nodes=self.num_nodes)

    def canonical_order(self, steps: int = 3) -> ArchGraph:
        """The same graph with its nodes renumbered in a canonical topological order.

        Two traces of one model can list independent branches in different orders (a tracer
        visits ``forward`` statements as written, export and ONNX have their own orders). Kahn's
        algorithm that always takes the ready node with the smallest ``steps``-round WL label
        gives one order for all of them, so order-sensitive steps downstream (motif sampling)
        see the same graph. Only nodes with equal WL labels that are ready at the same time are
        ordered by their old index; in practice those are symmetric (interchangeable) nodes.

        Returns:
            ``self`` when the order is already canonical, else a new :class:`ArchGraph` (same
            metadata, same :attr:`graph_hash`). Cost: one :meth:`wl_labels` call + ``O(E log N)``.
        """
        n = self.num_nodes
        order = topological_order(self._adjacency()[1], self.wl_labels(steps)[-1])
        if order == list(range(n)):
            return self
        pos = [0] * n
        for i, v in enumerate(order):
            pos[v] = i
        edges = sorted((pos[s], pos[d]) for s, d in self.edges)
        out = ArchGraph([self.ops[v] for v in order], [self.attrs[v] for v in order], edges,
                        metadata=dict(self.metadata))
        if getattr(self, "_hash", None) is not None:
            out._hash = self._hash
        return out

    def subgraph(self, nodes: Sequence[int]) -> ArchGraph:
        """The induced subgraph on ``nodes`` (kept in their topological order; no metadata).

        Args:
            nodes: node indices, any order, duplicates allowed.

        Complexity: ``O(len(nodes) * deg)`` once the adjacency is built (see
        :func:`~nar_plugin.graph.algorithms.induced_edges`), so extracting every motif of a
        graph stays linear.
        """
        keep, edges = induced_edges(nodes, self._adjacency()[0])
        return ArchGraph([self.ops[v] for v in keep], [self.attrs[v] for v in keep], edges)

    def summary(self) -> dict[str, Any]:
        """Plain-data summary: sizes, hash, op histogram (most frequent first), metadata."""
        return {
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "graph_hash": self.graph_hash,
            "ops": dict(sorted(self.op_histogram().items(), key=lambda kv: (-kv[1], kv[0]))),
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        name = self.metadata.get("name", "")
        return f"ArchGraph({name!r}, nodes={self.num_nodes}, edges={self.num_edges}, hash={self.graph_hash[:12]})"
