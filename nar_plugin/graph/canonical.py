"""The canonical passes: what makes one model give one graph, whichever way it reached us.

Every extraction path lowers into a plain node list (op, attributes, producer ids, in trace order)
and :func:`run_passes` turns it into the ArchGraph's ops / attrs / edges. The passes undo what
exporters, optimisers and coding styles do differently:

1. **attention**: ``matmul -> (scale | mask)* -> softmax -> matmul`` is one ``attention`` node;
2. **rms_norm**: ``pow -> mean -> add -> rsqrt -> mul (-> mul)`` is one ``rms_norm`` node, and no
   ``rms_norm`` carries widths (the written-out form has none to give);
3. **activations** written out elementwise are the activation: ``x * sigmoid(x)`` is ``silu``,
   ``x * hardsigmoid(x)`` ``hardswish``, ``x * tanh(softplus(x))`` ``mish``, and the erf and tanh
   forms of GELU (``0.5 x (1 + erf(x / sqrt 2))``...) and the sigmoid one (``x * sigmoid(1.702
   x)``, onnxruntime's QuickGelu) are ``gelu``;
4. **inference folding**: a ``batch_norm``, or a multiplication / division by a constant
   (LayerScale), that is the only consumer of a ``conv`` / ``conv_transpose`` / ``linear`` is
   folded into that layer, and a ``pad`` whose only consumer is a ``conv`` into the conv. ONNX
   exporters and optimisers (torch.onnx with constant folding, onnxscript, onnxruntime's
   Conv+BN / Conv+Mul / MatMul+Scale fusions) do exactly this, and a folded graph cannot be
   unfolded, so the IR is the folded one on every path;
5. **coding style** (:mod:`~nar_plugin.graph.canonical_styles`, v3): concatenation chains,
   global pooling written as a fixed-kernel pool, hard sigmoid / hard swish and layer norm
   written out, separate q/k/v projections;
6. **dead code**: nodes that do not reach an output are dropped.

The passes only look at ops and data flow (constants and parameters are not nodes), so they run
as well on a stored :class:`~nar_plugin.graph.ArchGraph` as on a fresh trace: graphs written by an
older version (:data:`CANON_VERSION`) are upgraded when read.
"""

from __future__ import annotations

from collections.abc import Iterable

from nar_plugin.graph.canonical_nodes import DEAD, Node, consumers, kill
from nar_plugin.graph.canonical_styles import STYLE_PASSES
from nar_plugin.graph.vocab import NO_ATTRS, NodeAttrs

__all__ = ["CANON_VERSION", "DEAD", "Node", "consumers", "graph_nodes", "kill", "run_passes"]

#: Version of the canonical passes, written into every graph's JSON. 1: attention, rms_norm,
#: dead code. 2: + activation fusion and inference folding (batch_norm and constant scales into
#: conv/linear, pad into conv). 3: + coding-style invariance (:mod:`~nar_plugin.graph.canonical_styles`:
#: concatenation chains, global pooling, hard sigmoid, written-out layer norm, q/k/v projections).
#: Graphs read with an older version are re-canonicalised (the passes are idempotent).
CANON_VERSION = 3

def graph_nodes(ops: list[str], attrs: list[NodeAttrs], edges: Iterable[tuple[int, int]]) -> list[Node]:
    """The node list of a graph given as ops / attrs / edges (``src < dst``), for :func:`run_passes`."""
    nodes = [Node(o, a, []) for o, a in zip(ops, attrs)]
    for s, d in edges:
        nodes[d].inputs.append(s)
    for n in nodes:
        n.inputs = sorted(set(n.inputs))
    return nodes


def run_passes(nodes: list[Node], rewrite: bool = True) -> tuple[list[str], list[NodeAttrs], list[tuple[int, int]]]:
    """Run every canonical pass on ``nodes`` (in place) and renumber the survivors.

    Args:
        nodes: in a topological order (every input id smaller than the node's own).
        rewrite: ``False`` runs dead-code removal only (a hand-built graph kept as written).

    Returns:
        ``(ops, attrs, edges)`` of the canonical graph, nodes in the same relative order.
    """
    if rewrite:
        for style_pass, early in STYLE_PASSES:
            if early:
                style_pass(nodes)
        _fuse_attention(nodes)
        _fuse_rms_norm(nodes)
        _fuse_activations(nodes)
        _fold_into_layers(nodes)
        for style_pass, early in STYLE_PASSES:
            if not early:
                style_pass(nodes)
    return _finalise(nodes, _live(nodes))


def _absorb_scale(nodes: list[Node], cons: list[list[int]], out: int, absorbed: set[int]) -> int:
    """A trailing multiply by a learned scale (a parameter: one data input) belongs to the op that
    ``out`` ends; returns the op's new last node and adds the old one to ``absorbed``."""
    c = cons[out]
    if len(c) == 1 and nodes[c[0]].op == "mul" and nodes[c[0]].inputs == [out]:
        absorbed.add(out)
        return c[0]
    return out


def _rewire(nodes: list[Node], alias: dict[int, int]) -> None:
    """Consumers of a removed node ``d`` read ``alias[d]`` instead (chains resolved)."""
    if not alias:
        return

    def find(i: int) -> int:
        while i in alias:
            i = alias[i]
        return i

    for n in nodes:
        if n.op != DEAD and any(p in alias for p in n.inputs):
            n.inputs = sorted({find(p) for p in n.inputs})


_SCORE_OPS = frozenset({"mul", "div", "add", "sub", "where"})


def _fuse_attention(nodes: list[Node]) -> None:
    """matmul -> (mul|div|add|sub|where)* -> softmax [-> where] -> matmul  ==>  attention.

    Hand-rolled attention, ``F.scaled_dot_product_attention`` and the ONNX decompositions of the
    latter all end up as one ``attention`` node, so coding style does not change the graph. Only
    private chains are fused: every intermediate node must have exactly one consumer. Absorbed
    with it: the scaling of q and k, the conversion of a boolean mask into an additive one
    (ONNX does it in every layer, torch once, outside), and the NaN guard after the softmax.
    """
    cons = consumers(nodes)

    def private(p: int, ops: frozenset[str] | set[str]) -> bool:
        return nodes[p].op in ops and len(cons[p]) == 1

    for i, n in enumerate(nodes):
        if n.op != "softmax" or len(n.inputs) != 1 or len(cons[i]) != 1:
            continue
        chain = [i]
        out = cons[i][0]
        while nodes[out].op == "where" and len(nodes[out].inputs) == 1 and len(cons[out]) == 1:
            chain.append(out)  # where(isnan(p), 0, p): safe softmax
            out = cons[out][0]
        if nodes[out].op != "matmul":
            continue
        cur = i
        while nodes[cur].op != "matmul":
            cands = [p for p in nodes[cur].inputs if private(p, _SCORE_OPS | {"matmul"})]
            mm = [p for p in cands if nodes[p].op == "matmul"]
            if mm:
                cands = mm[:1]
            elif len(cands) > 1:  # mask preparation beside the score path: follow the score path
                cands = [p for p in cands if nodes[p].op != "where"] or cands
            if len(cands) != 1:
                break
            for p in nodes[cur].inputs:  # a mask turned additive here belongs to the attention
                if p != cands[0] and private(p, {"where"}) and len(nodes[p].inputs) == 1:
                    chain.append(p)
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
        nodes[out] = Node("attention", NO_ATTRS, sorted(ins - members))
        kill(nodes, chain)


def _fuse_rms_norm(nodes: list[Node]) -> None:
    """x -> pow -> mean -> add -> rsqrt -> mul(x, .) [-> mul(weight)]  ==>  rms_norm.

    ``rsqrt`` may also be written ``1 / sqrt`` (ONNX: Sqrt -> Reciprocal) or the normalisation
    ``x / sqrt(...)``.
    """
    cons = consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op not in ("rsqrt", "sqrt") or len(n.inputs) != 1:
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
        dead = {p, m, i} | ({a} if a >= 0 else set())
        inv, norm_ops = i, ("mul",)
        if n.op == "sqrt":
            if len(cons[i]) != 1 or nodes[cons[i][0]].op != "div":
                continue
            d = cons[i][0]
            if nodes[d].inputs == [i]:  # reciprocal: 1 / sqrt
                inv = d
                dead.add(d)
            else:  # x / sqrt(...)
                norm_ops = ("div",)
        muls = [c for c in cons[inv] if nodes[c].op in norm_ops]
        if len(muls) != 1 or set(nodes[muls[0]].inputs) != {x, inv}:
            continue
        out = _absorb_scale(nodes, cons, muls[0], dead)
        nodes[out] = Node("rms_norm", NO_ATTRS, [x])
        kill(nodes, dead - {out})
    # the written-out form has no width to give, so no rms_norm carries one (nn.RMSNorm,
    # F.rms_norm and ONNX's RMSNormalization would otherwise differ from it)
    for i, n in enumerate(nodes):
        if n.op == "rms_norm" and n.attrs != NO_ATTRS:
            nodes[i] = Node("rms_norm", NO_ATTRS, n.inputs)


#: ``x * gate(x)`` == activation: gate op -> fused op.
_GATED = {"sigmoid": "silu", "hardsigmoid": "hardswish"}
#: Elementwise ops a written-out GELU consists of (constants are not nodes).
_GELU_PARTS = frozenset({"mul", "div", "add", "sub", "pow", "erf", "tanh"})


def _fuse_activations(nodes: list[Node]) -> None:
    """Written-out activations become the activation (see the module docstring)."""
    cons = consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op in ("erf", "tanh"):
            _fuse_gelu(nodes, cons, i)
        if n.op != "mul" or len(n.inputs) != 2:
            continue
        a, b = n.inputs
        for x, g in ((a, b), (b, a)):
            gate = nodes[g]
            if len(cons[g]) != 1:
                continue
            if gate.op in _GATED and gate.inputs == [x]:
                nodes[i] = Node(_GATED[gate.op], NO_ATTRS, [x])
                kill(nodes, [g])
                break
            if gate.op == "sigmoid" and len(gate.inputs) == 1:  # x * sigmoid(1.702 x): quick GELU
                s = gate.inputs[0]
                if nodes[s].op == "mul" and nodes[s].inputs == [x] and len(cons[s]) == 1:
                    nodes[i] = Node("gelu", NO_ATTRS, [x])
                    kill(nodes, [g, s])
                    break
            if gate.op == "tanh" and len(gate.inputs) == 1:
                sp = gate.inputs[0]
                if nodes[sp].op == "softplus" and nodes[sp].inputs == [x] and len(cons[sp]) == 1:
                    nodes[i] = Node("mish", NO_ATTRS, [x])
                    kill(nodes, [g, sp])
                    break


def _fuse_gelu(nodes: list[Node], cons: list[list[int]], anchor: int) -> None:
    """An elementwise island around one ``erf`` / ``tanh`` fed by one tensor ``x`` that it
    multiplies back in: ``gelu``.

    Walks back from the anchor through single-consumer elementwise ops to ``x``, then forward
    along the single-consumer chain to the multiply that uses ``x`` (or ``0.5 * x``) again, plus
    an optional trailing constant multiply.
    """
    inside: set[int] = set()
    sources: set[int] = set()
    stack = [anchor]
    while stack:
        v = stack.pop()
        if v in inside:
            continue
        inside.add(v)
        for p in nodes[v].inputs:
            if p != anchor and nodes[p].op in _GELU_PARTS - {"erf", "tanh"} and len(cons[p]) == 1:
                stack.append(p)
            elif p not in inside:
                sources.add(p)
    sources -= inside
    if len(sources) != 1 or len(inside) > 8:
        return
    (x,) = sources
    cur = anchor
    for _ in range(4):  # erf -> add(1) -> mul(x or 0.5x, .) [-> mul(0.5)]
        if len(cons[cur]) != 1:
            return
        nxt = cons[cur][0]
        if nodes[nxt].op not in _GELU_PARTS - {"erf", "tanh"}:
            return
        extra = [p for p in nodes[nxt].inputs if p != cur]
        if extra == [x] or (len(extra) == 1 and nodes[extra[0]].op in ("mul", "div")
                            and nodes[extra[0]].inputs == [x] and cons[extra[0]] == [nxt]):
            if extra != [x]:
                inside.add(extra[0])
            inside.add(nxt)
            out = _absorb_scale(nodes, cons, nxt, inside)
            nodes[out] = Node("gelu", NO_ATTRS, [x])
            kill(nodes, inside - {out})
            return
        if extra:
            return
        inside.add(nxt)
        cur = nxt


#: Layers an exporter folds a following batch norm into.
_FOLD_TARGETS = frozenset({"conv", "conv_transpose", "linear"})


def _fold_into_layers(nodes: list[Node]) -> None:
    """``layer -> batch_norm | constant scale`` and ``pad -> conv`` lose the batch norm, scale or
    pad (see the module docstring)."""
    cons = consumers(nodes)
    alias: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if len(n.inputs) != 1:
            continue
        p = n.inputs[0]
        while p in alias and nodes[p].op != "pad":  # conv -> bn -> scale: both fold, in one sweep
            p = alias[p]
        # a batch norm, or a constant scale (LayerScale), applied to a layer's output alone
        bn = (n.op in ("batch_norm", "mul", "div") and nodes[p].op in _FOLD_TARGETS and len(cons[p]) == 1
              and len(cons[n.inputs[0]]) == 1)
        pad = n.op == "pad" and len(cons[i]) == 1 and nodes[cons[i][0]].op == "conv"
        if bn or pad:
            alias[i] = p
    kill(nodes, list(alias))
    _rewire(nodes, alias)


def _live(nodes: list[Node]) -> list[bool]:
    """Nodes that reach an output (or every non-dead node when there is no output node)."""
    outs = [i for i, n in enumerate(nodes) if n.op == "output"]
    if not outs:
        return [n.op != DEAD for n in nodes]
    keep = [False] * len(nodes)
    stack = list(outs)
    while stack:
        v = stack.pop()
        if keep[v] or nodes[v].op == DEAD:
            continue
        keep[v] = True
        stack.extend(nodes[v].inputs)
    # unused inputs (optional arguments fixed to None) are dropped, but every graph keeps one
    inputs = [i for i, n in enumerate(nodes) if n.op == "input"]
    if inputs and not any(keep[i] for i in inputs):
        keep[inputs[0]] = True
    return keep


def _finalise(nodes: list[Node], keep: list[bool]) -> tuple[list[str], list[NodeAttrs], list[tuple[int, int]]]:
    # Nodes are in a topological order, so renumbering the kept nodes keeps one.
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
    return ops, attrs, sorted(edges)
