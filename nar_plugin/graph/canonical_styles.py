"""Coding-style invariance passes (canonical v3): one network written two ways is one graph.

Each pass undoes a difference measured between libraries that implement the same network
(``benchmarks/crosslib_style_gaps.py`` over the cross-library benchmark; numbers in
docs/cross-library.md, "Invariance passes"):

1. **concatenation chains** (:func:`flatten_cats`): a ``cat`` fed by another ``cat`` reads the
   inner one's inputs directly, and an inner ``cat`` left without consumers disappears. DenseNet
   written as a chain of two-input concatenations (pytorchcv: ``x = cat(x, new)``) and as one
   concatenation of the whole feature list per layer (timm / torchvision: ``cat(features)``)
   become the same graph. The IR has no axis, so nested concatenations along different axes are
   flattened too (no benchmark model has one);
2. **global pooling** (:func:`global_pools`): a fixed-kernel ``avg_pool`` / ``max_pool`` that
   feeds only a classifier head (dense layers, activations, norms, the output) whose first dense
   layers read one feature per channel pools the whole map (``nn.AvgPool2d(7)`` before the
   classifier: pytorchcv, pretrainedmodels) and is ``adaptive_avg_pool`` / ``adaptive_max_pool``
   (timm, torchvision);
3. **hard sigmoid** (:func:`fuse_hard_sigmoid`): ``relu6(x + 3) / 6`` is ``hardsigmoid`` and
   ``x * relu6(x + 3) / 6`` is ``hardswish`` (pytorchcv's MobileNetV3 vs ``nn.Hardswish``);
4. **layer norm** (:func:`fuse_layer_norm`): ``(x - mean(x)) / sqrt(var(x) + eps) [* g + b]``
   (the variance written as ``var`` or as ``mean((x - mean)^2)``, ``sqrt`` or ``rsqrt``) is one
   ``layer_norm`` (vit_pytorch's and timm's channel LayerNorms vs ``nn.LayerNorm``); it takes the
   width of the nearest producer with one, as the written-out form has none of its own;
5. **q/k/v projections** (:func:`merge_qkv`): three ``linear`` layers of one tensor read only by
   one ``attention`` (transformers) are one projection, as timm, open_clip, vit_pytorch and
   ``nn.MultiheadAttention`` write it; the projection's output width is one head group's (``d``,
   not ``3d``) in both spellings, because a log2 bucket of ``3d`` cannot be derived from the
   bucket of ``d`` or back;
6. **pointwise layers** (:func:`pointwise_linear`): a dense 1x1 convolution with stride 1 is a
   ``linear`` layer (NCHW ``nn.Conv2d(c, d, 1)`` vs channels-last ``nn.Linear(c, d)``: ConvNeXt-V2,
   FocalNet, NesT, classifier and squeeze-excite heads).

The run order is :data:`STYLE_PASSES`. Every pass is one sweep over the nodes (``O(N + E)``, the concatenation pass ``O`` of the
concatenated inputs), only looks at ops and data flow, and is idempotent, so stored graphs are
upgraded when read like every other canonical pass.
"""

from __future__ import annotations

from nar_plugin.graph.canonical_nodes import DEAD, Node, consumers, kill
from nar_plugin.graph.vocab import GROUPS_NONE, NO_ATTRS, NodeAttrs

__all__ = [
    "STYLE_PASSES",
    "flatten_cats",
    "fuse_hard_sigmoid",
    "fuse_layer_norm",
    "global_pools",
    "merge_qkv",
    "pointwise_linear",
]


def flatten_cats(nodes: list[Node]) -> None:
    """``cat(cat(a, b), c)`` ==> ``cat(a, b, c)``; a ``cat`` of one tensor is that tensor. Inner
    cats left unread are dropped by dead-code removal."""
    alias: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if alias and any(p in alias for p in n.inputs):
            n.inputs = sorted({alias.get(p, p) for p in n.inputs})  # aliases point to live nodes
        if n.op != "cat":
            continue
        if len(n.inputs) == 1:
            # ``torch.cat([x])`` (timm's first DenseNet layer) is a copy; the IR keeps producer
            # sets, so ``cat([x, x])`` reads the same and goes too (no benchmark model has one)
            alias[i] = n.inputs[0]
            kill(nodes, [i])
        elif any(nodes[p].op == "cat" for p in n.inputs):
            ins: set[int] = set()
            for p in n.inputs:
                # inner cats come first in the topological order, so they are already flat
                ins.update(nodes[p].inputs if nodes[p].op == "cat" else (p,))
            n.inputs = sorted(ins)


def pointwise_linear(nodes: list[Node]) -> None:
    """A dense 1x1 convolution with stride 1 is a ``linear`` layer over the channels.

    The same layer written as ``nn.Conv2d(c, d, 1)`` on NCHW and as ``nn.Linear(c, d)`` on
    channels-last (ConvNeXt, FocalNet, NesT MLPs; classifier and squeeze-excite heads on a
    pooled map) is one node with the same widths.
    """
    for i, n in enumerate(nodes):
        a = n.attrs
        if n.op == "conv" and a.kernel == 1 and a.stride <= 1 and a.groups == GROUPS_NONE:
            nodes[i] = Node("linear", NodeAttrs(0, 0, 0, a.width_in, a.width_out), n.inputs)


_GLOBAL = {"avg_pool": "adaptive_avg_pool", "max_pool": "adaptive_max_pool"}


#: What a classifier head after a global pool consists of (``conv`` only as a 1x1 layer).
_HEAD = frozenset({"linear", "conv", "output", "relu", "relu6", "gelu", "silu", "hardswish", "mish", "elu",
                   "leaky_relu", "tanh", "sigmoid", "softmax", "log_softmax", "layer_norm", "batch_norm"})


def _is_head(nodes: list[Node], cons: list[list[int]], pool: int, width: int, limit: int = 8) -> bool:
    """Everything downstream of ``pool`` is a classifier head (dense layers, activations, norms)
    ending at the output, and its first dense layers read ``width`` features (one per channel)."""
    stack, seen = list(cons[pool]), set(cons[pool])
    first = set(cons[pool])
    while stack:
        v = stack.pop()
        n = nodes[v]
        if n.op not in _HEAD or len(seen) > limit or (n.op == "conv" and (n.attrs.kernel != 1 or n.attrs.stride > 1)):
            return False
        dense = n.op in ("linear", "conv")
        if dense and v in first and n.attrs.width_in != width:
            return False
        if n.op == "output":
            continue
        if not cons[v]:
            return False
        for c in cons[v]:
            if c not in seen:
                seen.add(c)
                if not dense:  # past the first dense layer the features are not the pool's
                    first.add(c)
                stack.append(c)
    return True


def global_pools(nodes: list[Node]) -> None:
    """A fixed-kernel pool that feeds only a classifier head whose dense layers read one feature
    per channel pools the whole map: the adaptive pool. A pool whose classifier reads more
    features than there are channels (VGG's 7x7 map flattened), or that feeds a convolution
    (DLA's downsampling shortcut), is left alone."""
    cons = consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op not in _GLOBAL or not cons[i] or len(n.inputs) != 1:
            continue
        width = _width_above(nodes, n.inputs[0])
        if width and _is_head(nodes, cons, i, width):
            nodes[i] = Node(_GLOBAL[n.op], NO_ATTRS, n.inputs)


def fuse_hard_sigmoid(nodes: list[Node]) -> None:
    """``relu6(x + 3) / 6`` ==> ``hardsigmoid(x)``; ``x * relu6(x + 3) / 6`` ==> ``hardswish(x)``."""
    cons = consumers(nodes)

    def only(i: int, op: str | tuple[str, ...]) -> int | None:
        """The single consumer of ``i`` when it has op ``op``."""
        if len(cons[i]) != 1:
            return None
        c = cons[i][0]
        return c if nodes[c].op in ((op,) if isinstance(op, str) else op) else None

    for i, n in enumerate(nodes):
        if n.op != "relu6" or len(n.inputs) != 1:
            continue
        a = n.inputs[0]
        if nodes[a].op != "add" or len(nodes[a].inputs) != 1 or cons[a] != [i]:
            continue
        x = nodes[a].inputs[0]
        c = only(i, ("div", "mul"))
        if c is None:
            continue
        if nodes[c].inputs == [i]:  # relu6(x + 3) / 6
            nodes[c] = Node("hardsigmoid", NO_ATTRS, [x])
            kill(nodes, [a, i])
        elif nodes[c].op == "mul" and sorted(nodes[c].inputs) == sorted((x, i)):
            d = only(c, ("div", "mul"))  # x * relu6(x + 3), then / 6
            if d is not None and nodes[d].inputs == [c]:
                nodes[d] = Node("hardswish", NO_ATTRS, [x])
                kill(nodes, [a, i, c])


def _width_above(nodes: list[Node], x: int, limit: int = 16) -> int:
    """Output-width bucket of ``x`` or of the nearest node above it that has one (breadth
    first through width-less ops such as activations and adds, at most ``limit`` nodes)."""
    queue, seen = [x], {x}
    for v in queue:
        if nodes[v].attrs.width_out:
            return nodes[v].attrs.width_out
        if len(queue) >= limit:
            break
        for p in nodes[v].inputs:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return 0


def fuse_layer_norm(nodes: list[Node]) -> None:
    """Written-out layer norm ==> ``layer_norm`` (see the module docstring).

    Runs before the RMSNorm pass, which would otherwise take ``(x - mean) / sqrt(mean((x -
    mean)^2) + eps)`` for an RMSNorm of ``x - mean``.
    """
    cons = consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op not in ("sqrt", "rsqrt") or len(n.inputs) != 1 or len(cons[i]) != 1:
            continue
        a = n.inputs[0]
        dead = {i}
        if nodes[a].op == "add" and len(nodes[a].inputs) == 1 and cons[a] == [i]:
            dead.add(a)
            v = nodes[a].inputs[0]
        else:
            v = a
        if nodes[v].op != "mean" or len(nodes[v].inputs) != 1 or len(cons[v]) != 1:
            continue
        dead.add(v)
        y = nodes[v].inputs[0]
        d = cons[i][0]  # the normalisation: (x - mean) / sqrt(...) or (x - mean) * rsqrt(...)
        if nodes[d].op != ("div" if n.op == "sqrt" else "mul") or len(nodes[d].inputs) != 2:
            continue
        s = next(p for p in nodes[d].inputs if p != i)
        if nodes[s].op != "sub" or len(nodes[s].inputs) != 2:
            continue
        m = next((p for p in nodes[s].inputs if nodes[p].op == "mean" and len(nodes[p].inputs) == 1
                  and cons[p] == [s]), None)
        if m is None:
            continue
        x = nodes[m].inputs[0]
        if sorted(nodes[s].inputs) != sorted((x, m)):
            continue
        if nodes[y].op in ("pow", "mul") and nodes[y].inputs == [s] and cons[y] == [v]:
            dead.add(y)  # mean((x - mean)^2)
            if sorted(cons[s]) != sorted((y, d)):
                continue
        elif y != x or cons[s] != [d]:  # var(x)
            continue
        dead |= {s, m}
        out = d
        for op in ("mul", "add"):  # the affine part: * weight, + bias
            c = cons[out]
            if len(c) == 1 and nodes[c[0]].op == op and nodes[c[0]].inputs == [out]:
                dead.add(out)
                out = c[0]
        w = _width_above(nodes, x)
        nodes[out] = Node("layer_norm", NodeAttrs(0, 0, 0, w, w), [x])
        kill(nodes, dead - {out})


def _qkv_width(a: NodeAttrs) -> NodeAttrs:
    """A packed q/k/v projection ``d -> 3d`` reported as ``d -> d`` (bucket(3d) - bucket(d) is 1
    or 2); any other width is left alone."""
    if a.width_in and a.width_out - a.width_in in (1, 2):
        return NodeAttrs(a.kernel, a.stride, a.groups, a.width_in, a.width_in)
    return a


def merge_qkv(nodes: list[Node]) -> None:
    """Separate q, k, v projections of one tensor into one attention ==> one projection."""
    cons = consumers(nodes)
    for i, n in enumerate(nodes):
        if n.op != "attention":
            continue
        lin = [p for p in n.inputs if nodes[p].op == "linear" and cons[p] == [i] and len(nodes[p].inputs) == 1]
        groups: dict[tuple[int, NodeAttrs], list[int]] = {}
        for p in lin:
            groups.setdefault((nodes[p].inputs[0], nodes[p].attrs), []).append(p)
        merged = False
        for ps in groups.values():
            if len(ps) in (2, 3):  # q, k, v (or k, v beside a q from elsewhere)
                kill(nodes, ps[1:])
                nodes[ps[0]] = Node("linear", _qkv_width(nodes[ps[0]].attrs), nodes[ps[0]].inputs)
                merged = True
        if merged:
            n.inputs = [p for p in n.inputs if nodes[p].op != DEAD]
        elif len(lin) == 1 and sum(nodes[p].op == "linear" for p in n.inputs) == 1:
            p = lin[0]  # the packed form: one linear d -> 3d read only by the attention
            nodes[p] = Node("linear", _qkv_width(nodes[p].attrs), nodes[p].inputs)


#: The style passes in the order :func:`~nar_plugin.graph.canonical.run_passes` runs them:
#: ``(pass, runs before the attention / RMSNorm / activation passes)``.
STYLE_PASSES = (
    (flatten_cats, True),
    (fuse_layer_norm, True),
    (fuse_hard_sigmoid, True),
    (global_pools, False),
    (pointwise_linear, False),  # after pad folding: a pad before a 1x1 conv is its padding
    (merge_qkv, False),
)
