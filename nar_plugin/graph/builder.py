"""GraphBuilder: what every extractor lowers into; :func:`canonicalize` for stored graphs.

Every extraction path (torch.fx, torch.export, a stored pt2 archive, ONNX, HF/timm configs) adds
nodes to a :class:`GraphBuilder` in trace order, folding bookkeeping nodes on the way, and
:meth:`GraphBuilder.build` runs the same canonical passes (:mod:`~nar_plugin.graph.canonical`)
on all of them, so that a model gives one graph whichever way it reached us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from nar_plugin.graph.canonical import Node, graph_nodes, run_passes
from nar_plugin.graph.ir import ArchGraph
from nar_plugin.graph.vocab import NO_ATTRS, OP_INDEX, NodeAttrs

__all__ = ["ADD_GUARD", "GraphBuilder", "canonicalize"]

#: Called with the builder's node count after every :meth:`GraphBuilder.add` while set.
#: :mod:`nar_plugin.extract.limits` installs one so that an extraction stops the moment it passes
#: its node or time budget (it raises), not after the whole graph was built. Per context, so
#: threads do not see each other's guard.
ADD_GUARD: ContextVar[Callable[[int], None] | None] = ContextVar("nar_add_guard", default=None)


class GraphBuilder:
    """Collects nodes from an extractor in trace order, then canonicalises into an ArchGraph.

    Extractors map their native values (fx nodes, aten node names, ONNX value names) to *refs*:
    a ref is a frozenset of builder node ids that produce the value. Folded (bookkeeping) ops
    just pass their inputs' refs through, which is how views, getitem, dropout etc. disappear.
    Constants and parameters have the empty ref.
    """

    def __init__(self) -> None:
        self._nodes: list[Node] = []

    def add(self, op: str, inputs: Iterable[frozenset[int]] = (), attrs: NodeAttrs = NO_ATTRS) -> frozenset[int]:
        """Add a node fed by the union of ``inputs`` refs; returns the new node's ref."""
        if op not in OP_INDEX:
            op = "other"
        srcs: set[int] = set()
        for ref in inputs:
            srcs |= ref
        self._nodes.append(Node(op, attrs, sorted(srcs)))
        guard = ADD_GUARD.get()
        if guard is not None:
            guard(len(self._nodes))
        return frozenset((len(self._nodes) - 1,))

    def add_input(self) -> frozenset[int]:
        """Add a graph input; returns its ref."""
        return self.add("input")

    def add_output(self, refs: Iterable[frozenset[int]]) -> None:
        """Add the graph output fed by ``refs`` (nothing when every ref is a constant)."""
        refs = [r for r in refs if r]
        if refs:
            self.add("output", refs)

    def __len__(self) -> int:
        return len(self._nodes)

    def build(self, metadata: dict[str, Any] | None = None, *, canonical: bool = True) -> ArchGraph:
        """Run the canonical passes (:func:`~nar_plugin.graph.canonical.run_passes`) and return
        the ArchGraph. The builder appends in trace order, which is already topological.

        Args:
            metadata: provenance stored on the graph.
            canonical: ``False`` keeps the nodes exactly as added (only those that reach no
                output are dropped): for hand-built graphs that test something other than the
                passes, e.g. motif sampling on a Conv-BatchNorm chain.
        """
        ops, attrs, edges = run_passes(self._nodes, rewrite=canonical)
        return ArchGraph(ops, attrs, edges, metadata=dict(metadata or {}))


def canonicalize(graph: ArchGraph) -> ArchGraph:
    """Run the canonical passes on an existing graph (one built by an older version, or by hand).

    Idempotent: a graph built by :class:`GraphBuilder` comes back with the same hash. Stored
    graphs are upgraded automatically by :meth:`ArchGraph.from_dict`; this is the same operation
    for graphs held in memory.

    Example:
        >>> canonicalize(old_graph).graph_hash == extract_graph(model).graph_hash
    """
    ops, attrs, edges = run_passes(graph_nodes(graph.ops, graph.attrs, graph.edges))
    return ArchGraph(ops, attrs, edges, metadata=dict(graph.metadata))

