"""ArchGraph: the one intermediate representation of a model architecture.

Every extraction path (torch.fx, torch.export, a stored pt2 archive, ONNX, HF/timm configs) lowers
into a :class:`GraphBuilder`, which folds bookkeeping nodes, and :meth:`GraphBuilder.build` runs the
same canonical passes on all of them, so that a model gives (near-)identical graphs whichever way
it reached us.

A node is an op type from the fixed, versioned vocabulary :data:`OPS` plus a few structural
attributes (:class:`NodeAttrs`). Edges are directed data flow. Nodes are stored in a deterministic
topological order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nar_plugin.errors import CorruptArtifactError

__all__ = [
    "VOCAB_VERSION",
    "OPS",
    "OP_INDEX",
    "NodeAttrs",
    "ArchGraph",
    "GraphBuilder",
    "width_bucket",
]

#: Bump when the vocabulary, the attributes or the canonical passes change: every persisted
#: graph, embedding and index records it.
VOCAB_VERSION = 1

#: Canonical op vocabulary. Order is part of the format (feature indices); append only.
OPS: tuple[str, ...] = (
    "input", "output",
    # parametrised compute
    "conv", "conv_transpose", "linear", "matmul", "embedding", "attention", "lstm", "gru", "rnn",
    # normalisation
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
    # activations
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "mish",
    "elu", "leaky_relu", "prelu", "softplus", "softmax", "log_softmax",
    # elementwise arithmetic
    "add", "sub", "mul", "div", "pow", "sqrt", "rsqrt", "exp", "log", "neg", "abs", "clamp",
    "where", "erf", "sin_cos",
    # reductions
    "mean", "sum", "max", "min", "norm",
    # routing
    "cat", "pad", "gather", "scatter", "roll", "cumsum", "topk", "sort",
    # pooling / resampling
    "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "upsample", "pixel_shuffle",
    "other",
)
OP_INDEX: dict[str, int] = {op: i for i, op in enumerate(OPS)}

#: Ops whose width attributes are meaningful (they own weights with in/out widths).
PARAMETRISED = frozenset({"conv", "conv_transpose", "linear", "embedding", "lstm", "gru", "rnn"})

GROUPS_NONE, GROUPS_DEPTHWISE, GROUPS_GROUPED = 0, 1, 2


def width_bucket(width: int | None) -> int:
    """log2 bucket of a channel/feature width: 0 = unknown, else ``1 + round(log2(width))``."""
    if not width or width <= 0:
        return 0
    return 1 + int(round(math.log2(width)))


class NodeAttrs(NamedTuple):
    """Structural attributes of a node; 0 means "not applicable / unknown".

    Attributes:
        kernel: largest kernel extent (conv/pool), e.g. 3 for a 3x3 conv.
        stride: largest stride (conv/pool).
        groups: 0 = dense, 1 = depthwise, 2 = grouped (conv only).
        width_in: :func:`width_bucket` of the input channels / features.
        width_out: :func:`width_bucket` of the output channels / features.
    """

    kernel: int = 0
    stride: int = 0
    groups: int = 0
    width_in: int = 0
    width_out: int = 0


NO_ATTRS = NodeAttrs()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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
    @property
    def num_nodes(self) -> int:
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def _adjacency(self) -> None:
        preds: list[list[int]] = [[] for _ in self.ops]
        succs: list[list[int]] = [[] for _ in self.ops]
        for s, d in self.edges:
            succs[s].append(d)
            preds[d].append(s)
        self._preds, self._succs = preds, succs

    def predecessors(self, i: int) -> list[int]:
        if self._preds is None:
            self._adjacency()
        assert self._preds is not None
        return self._preds[i]

    def successors(self, i: int) -> list[int]:
        if self._succs is None:
            self._adjacency()
        assert self._succs is not None
        return self._succs[i]

    def label(self, i: int) -> str:
        """The node's initial label: op type plus non-zero attributes (what hashing starts from)."""
        a = self.attrs[i]
        if a == NO_ATTRS:
            return self.ops[i]
        return f"{self.ops[i]}|{a.kernel},{a.stride},{a.groups},{a.width_in},{a.width_out}"

    def op_histogram(self) -> Counter[str]:
        return Counter(self.ops)

    # ----------------------------------------------------------------- hashing
    def wl_labels(self, steps: int) -> list[list[str]]:
        """Weisfeiler-Lehman labels over in- and out-neighbours for ``steps`` rounds.

        Returns a list of ``steps + 1`` label lists; round 0 is :meth:`label`.
        """
        cur = [_digest(self.label(i)) for i in range(self.num_nodes)]
        rounds = [cur]
        for _ in range(steps):
            nxt = []
            for i in range(self.num_nodes):
                ins = ",".join(sorted(cur[p] for p in self.predecessors(i)))
                outs = ",".join(sorted(cur[s] for s in self.successors(i)))
                nxt.append(_digest(f"{cur[i]}({ins})[{outs}]"))
            cur = nxt
            rounds.append(cur)
        return rounds

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
        return {
            "format": "nar-archgraph",
            "vocab_version": self.vocab_version,
            "ops": self.ops,
            "attrs": [list(a) for a in self.attrs],
            "edges": [list(e) for e in self.edges],
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchGraph:
        """Rebuild a graph from :meth:`to_dict` output.

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
            return cls(
                ops=list(data["ops"]),
                attrs=[NodeAttrs(*a) for a in data["attrs"]],
                edges=[(int(s), int(d)) for s, d in data["edges"]],
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptArtifactError(f"malformed ArchGraph JSON: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> ArchGraph:
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
        labels = self.wl_labels(steps)[-1]
        indeg = [len(self.predecessors(v)) for v in range(n)]
        heap = [(labels[v], v) for v in range(n) if indeg[v] == 0]
        heapq.heapify(heap)
        order: list[int] = []
        while heap:
            _, v = heapq.heappop(heap)
            order.append(v)
            for w in self.successors(v):
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(heap, (labels[w], w))
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
        """The induced subgraph on ``nodes`` (kept in their topological order)."""
        keep = sorted(set(nodes))
        pos = {v: i for i, v in enumerate(keep)}
        edges = sorted({(pos[s], pos[d]) for s, d in self.edges if s in pos and d in pos})
        return ArchGraph([self.ops[v] for v in keep], [self.attrs[v] for v in keep], edges)

    def summary(self) -> dict[str, Any]:
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


# ===================================================================== builder
class _Node:
    __slots__ = ("op", "attrs", "inputs")

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
        return self.add("input")

    def add_output(self, refs: Iterable[frozenset[int]]) -> None:
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
