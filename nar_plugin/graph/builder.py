"""GraphBuilder: what every extractor lowers into, and the canonical passes it runs.

Every extraction path (torch.fx, torch.export, a stored pt2 archive, ONNX, HF/timm configs) adds
nodes to a :class:`GraphBuilder` in trace order, folding bookkeeping nodes on the way, and
:meth:`GraphBuilder.build` runs the same canonical passes on all of them, so that a model gives
(near-)identical graphs whichever way it reached us.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nar_plugin.graph.ir import ArchGraph
from nar_plugin.graph.vocab import NO_ATTRS, OP_INDEX, NodeAttrs

__all__ = ["GraphBuilder"]


class _Node:
    """A builder node: op, attributes and the builder ids of its inputs (sorted)."""

    __slots__ = ("attrs", "inputs", "op")

    def __init__(self, op: str, attrs: NodeAttrs, inputs: list[int]) -> None:
        self.op = op
        self.attrs = attrs
        self.inputs = inputs


class GraphBuilder:
    """Collects nodes from an extractor in trace order, then canonicalises into an ArchGraph.

    Extractors map their native values (fx nodes, aten node names, ONNX value names) to *refs*:
    a ref is a frozenset of builder node ids that produce the value. Folded (bookkeeping) ops
    just pass their inputs' refs through, which is how views, getitem, dropout etc. disappear.
    Constants and parameters have the empty ref.
    """

    def __init__(self) -> None:
        self._nodes: list[_Node] = []

    def add(self, op: str, inputs: Iterable[frozenset[int]] = (), attrs: NodeAttrs = NO_ATTRS) -> frozenset[int]:
        """Add a node fed by the union of ``inputs`` refs; returns the new node's ref."""
        if op not in OP_INDEX:
            op = "other"
        srcs: set[int] = set()
        for ref in inputs:
            srcs |= ref
        self._nodes.append(_Node(op, attrs, sorted(srcs)))
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

    def build(self, metadata: dict[str, Any] | None = None) -> ArchGraph:
        """Run the canonical passes and return the ArchGraph.

        Passes: drop nodes that do not reach an output (dead code, shape computations), fuse
        hand-written attention (matmul -> scale -> [mask] -> softmax -> matmul) into
        ``attention``, fuse hand-written RMSNorm (pow -> mean -> add -> rsqrt -> mul [-> mul])
        into ``rms_norm``, then renumber in (already topological) trace order.
        """
        nodes = self._nodes
        _fuse_attention(nodes)
        _fuse_rms_norm(nodes)
        keep = _live(nodes)
        return _finalise(nodes, keep, metadata or {})


def _consumers(nodes: list[_Node]) -> list[list[int]]:
    cons: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for p in n.inputs:
            cons[p].append(i)
    return cons


_SCORE_OPS = frozenset({"mul", "div", "add", "sub", "where"})


def _fuse_attention(nodes: list[_Node]) -> None:
    """matmul -> (mul|div|add|where)* -> softmax -> matmul  ==>  attention.

    Hand-rolled attention, ``F.scaled_dot_product_attention`` and the ONNX decomposition of the
    latter all end up as one ``attention`` node, so coding style does not change the graph. Only
    private chains are fused: every intermediate node must have exactly one consumer.
    """
    cons = _consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op != "softmax" or len(n.inputs) != 1 or len(cons[i]) != 1:
            continue
        out = cons[i][0]
        if nodes[out].op != "matmul":
            continue
        chain = [i]
        cur = i
        while nodes[cur].op != "matmul":
            cands = [p for p in nodes[cur].inputs
                     if (nodes[p].op in _SCORE_OPS or nodes[p].op == "matmul") and len(cons[p]) == 1]
            if len(cands) != 1:
                break
            cur = cands[0]
            chain.append(cur)
        if nodes[cur].op != "matmul":
            continue
        # scaling of q or k before the score matmul (ONNX's decomposition of SDPA, or
        # ``q = q * scale`` by hand) belongs to the attention too
        for p in list(nodes[cur].inputs):
            if nodes[p].op in ("mul", "div") and len(nodes[p].inputs) == 1 and len(cons[p]) == 1:
                chain.append(p)
        members = set(chain) | {out}
        ins: set[int] = set()
        for m in members:
            ins |= set(nodes[m].inputs)
        nodes[out] = _Node("attention", NO_ATTRS, sorted(ins - members))
        for m in chain:
            nodes[m] = _Node("__dead__", NO_ATTRS, [])


def _fuse_rms_norm(nodes: list[_Node]) -> None:
    """x -> pow -> mean -> add -> rsqrt -> mul(x, .) [-> mul(weight)]  ==>  rms_norm."""
    cons = _consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op != "rsqrt" or len(n.inputs) != 1:
            continue
        a = n.inputs[0]
        if nodes[a].op == "add" and len(nodes[a].inputs) == 1:
            m = nodes[a].inputs[0]
        elif nodes[a].op == "mean":
            m, a = a, -1
        else:
            continue
        if nodes[m].op != "mean" or len(nodes[m].inputs) != 1:
            continue
        p = nodes[m].inputs[0]
        if nodes[p].op not in ("pow", "mul") or len(nodes[p].inputs) != 1:
            continue
        x = nodes[p].inputs[0]
        muls = [c for c in cons[i] if nodes[c].op == "mul"]
        if len(muls) != 1 or set(nodes[muls[0]].inputs) != {x, i}:
            continue
        out = muls[0]
        # optional trailing multiply by the learned scale (a parameter: one data input)
        c2 = cons[out]
        if len(c2) == 1 and nodes[c2[0]].op == "mul" and nodes[c2[0]].inputs == [out]:
            out = c2[0]
        dead = {p, m, i} | ({a} if a >= 0 else set())
        if out != muls[0]:
            dead.add(muls[0])
        nodes[out] = _Node("rms_norm", NO_ATTRS, [x])
        for d in dead:
            nodes[d] = _Node("__dead__", NO_ATTRS, [])


def _live(nodes: list[_Node]) -> list[bool]:
    """Nodes that reach an output (or every non-dead node when there is no output node)."""
    outs = [i for i, n in enumerate(nodes) if n.op == "output"]
    if not outs:
        return [n.op != "__dead__" for n in nodes]
    keep = [False] * len(nodes)
    stack = list(outs)
    while stack:
        v = stack.pop()
        if keep[v] or nodes[v].op == "__dead__":
            continue
        keep[v] = True
        stack.extend(nodes[v].inputs)
    # unused inputs (optional arguments fixed to None) are dropped, but every graph keeps one
    inputs = [i for i, n in enumerate(nodes) if n.op == "input"]
    if inputs and not any(keep[i] for i in inputs):
        keep[inputs[0]] = True
    return keep


def _finalise(nodes: list[_Node], keep: list[bool], metadata: dict[str, Any]) -> ArchGraph:
    # The builder appends in trace order, which is already topological (inputs come first), so
    # renumbering the kept nodes preserves a deterministic topological order.
    pos: dict[int, int] = {}
    ops: list[str] = []
    attrs: list[NodeAttrs] = []
    for i, n in enumerate(nodes):
        if keep[i]:
            pos[i] = len(ops)
            ops.append(n.op)
            attrs.append(n.attrs)
    edges: set[tuple[int, int]] = set()
    for i, n in enumerate(nodes):
        if not keep[i]:
            continue
        for p in n.inputs:
            if p in pos and pos[p] < pos[i]:
                edges.add((pos[p], pos[i]))
    return ArchGraph(ops, attrs, sorted(edges), metadata=dict(metadata))
