"""``nn.Module`` -> ArchGraph, with torch.fx where it is faithful and torch.export otherwise.

torch.fx is ~50x faster than torch.export on vision models but can trace without error and still
lose data flow (Python-side lists of intermediates, hooks). So an fx trace is accepted only when
re-running it on meta tensors agrees with an eager meta forward: same output shapes and the same
number of calls of every leaf module. Otherwise (or when fx fails) we use
``torch.export.export(strict=False)``.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from collections.abc import Callable
from typing import Any

from nar_plugin.errors import ExampleInputsError, GraphExtractionError
from nar_plugin.extract.ops import (
    EMPTY,
    POSITIONAL,
    CANON,
    Value,
    base_name,
    conv_attrs,
    dense_attrs,
    lower_op,
    pool_attrs,
)
from nar_plugin.graph import NO_ATTRS, ArchGraph, GraphBuilder

logger = logging.getLogger(__name__)

__all__ = ["graph_from_module", "infer_example_inputs", "trace_fx", "trace_export", "is_meta_module",
           "leaf_table", "meta_copy"]


# ------------------------------------------------------------------ leaf modules
def _leaf_table() -> dict[type, Callable[[Any, Value, tuple[int, ...] | None, GraphBuilder], Value]]:
    """torch.nn module classes we lower directly (fx treats them as leaves)."""
    import torch.nn as nn

    def conv(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        k = max(m.kernel_size) if isinstance(m.kernel_size, tuple) else int(m.kernel_size)
        s = max(m.stride) if isinstance(m.stride, tuple) else int(m.stride)
        attrs = conv_attrs((1, m.in_channels), (1, m.out_channels), k, s, m.groups)
        op = "conv_transpose" if isinstance(m, nn.modules.conv._ConvTransposeNd) else "conv"
        return Value(b.add(op, [x.ref], attrs), out)

    def linear(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        return Value(b.add("linear", [x.ref], dense_attrs(m.in_features, m.out_features)), out)

    def simple(op: str) -> Callable[..., Value]:
        def f(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
            return Value(b.add(op, [x.ref]), out)
        return f

    def norm(op: str, attr: str) -> Callable[..., Value]:
        def f(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
            w = getattr(m, attr, None)
            if isinstance(w, (tuple, list)):
                w = w[-1] if w else None
            return Value(b.add(op, [x.ref], dense_attrs(w, w)), out)
        return f

    def pool(op: str) -> Callable[..., Value]:
        def f(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
            return Value(b.add(op, [x.ref], pool_attrs(m.kernel_size, m.stride)), out)
        return f

    def fold(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        return Value(x.ref, out)

    def embedding(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        if x.is_const:
            return Value(EMPTY, out)
        return Value(b.add("embedding", [x.ref], dense_attrs(m.num_embeddings, m.embedding_dim)), out)

    def rnn(op: str) -> Callable[..., Value]:
        def f(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
            return Value(b.add(op, [x.ref], dense_attrs(m.input_size, m.hidden_size)), out)
        return f

    def mha(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        # nn.MultiheadAttention = packed in-projection, attention, out-projection (what
        # torch.export shows for it), so both tracers agree
        e = m.embed_dim
        q = b.add("linear", [x.ref], dense_attrs(e, 3 * e))
        a = b.add("attention", [q])
        return Value(b.add("linear", [a], dense_attrs(e, e)), out)

    def hardtanh(m: Any, x: Value, out: tuple[int, ...] | None, b: GraphBuilder) -> Value:
        op = "relu6" if (m.min_val, m.max_val) == (0.0, 6.0) else "clamp"
        return Value(b.add(op, [x.ref]), out)

    table: dict[type, Any] = {
        nn.Conv1d: conv, nn.Conv2d: conv, nn.Conv3d: conv,
        nn.ConvTranspose1d: conv, nn.ConvTranspose2d: conv, nn.ConvTranspose3d: conv,
        nn.Linear: linear,
        nn.BatchNorm1d: norm("batch_norm", "num_features"), nn.BatchNorm2d: norm("batch_norm", "num_features"),
        nn.BatchNorm3d: norm("batch_norm", "num_features"), nn.SyncBatchNorm: norm("batch_norm", "num_features"),
        nn.LayerNorm: norm("layer_norm", "normalized_shape"), nn.GroupNorm: norm("group_norm", "num_channels"),
        nn.InstanceNorm1d: norm("instance_norm", "num_features"), nn.InstanceNorm2d: norm("instance_norm", "num_features"),
        nn.InstanceNorm3d: norm("instance_norm", "num_features"),
        nn.ReLU: simple("relu"), nn.ReLU6: simple("relu6"), nn.GELU: simple("gelu"), nn.SiLU: simple("silu"),
        nn.Sigmoid: simple("sigmoid"), nn.Tanh: simple("tanh"), nn.Hardswish: simple("hardswish"),
        nn.Hardsigmoid: simple("hardsigmoid"), nn.Mish: simple("mish"), nn.ELU: simple("elu"),
        nn.CELU: simple("elu"), nn.SELU: simple("elu"), nn.LeakyReLU: simple("leaky_relu"),
        nn.PReLU: simple("prelu"), nn.Softplus: simple("softplus"), nn.Softmax: simple("softmax"),
        nn.LogSoftmax: simple("log_softmax"), nn.Hardtanh: hardtanh,
        nn.MaxPool1d: pool("max_pool"), nn.MaxPool2d: pool("max_pool"), nn.MaxPool3d: pool("max_pool"),
        nn.AvgPool1d: pool("avg_pool"), nn.AvgPool2d: pool("avg_pool"), nn.AvgPool3d: pool("avg_pool"),
        nn.AdaptiveAvgPool1d: simple("adaptive_avg_pool"), nn.AdaptiveAvgPool2d: simple("adaptive_avg_pool"),
        nn.AdaptiveAvgPool3d: simple("adaptive_avg_pool"), nn.AdaptiveMaxPool2d: simple("adaptive_max_pool"),
        nn.AdaptiveMaxPool1d: simple("adaptive_max_pool"),
        nn.Upsample: simple("upsample"), nn.UpsamplingNearest2d: simple("upsample"),
        nn.UpsamplingBilinear2d: simple("upsample"), nn.PixelShuffle: simple("pixel_shuffle"),
        nn.PixelUnshuffle: simple("pixel_shuffle"),
        nn.ZeroPad2d: simple("pad"), nn.ConstantPad2d: simple("pad"), nn.ReflectionPad2d: simple("pad"),
        nn.Identity: fold, nn.Dropout: fold, nn.Dropout1d: fold, nn.Dropout2d: fold, nn.Dropout3d: fold,
        nn.AlphaDropout: fold, nn.Flatten: fold, nn.Unflatten: fold,
        nn.Embedding: embedding, nn.LSTM: rnn("lstm"), nn.GRU: rnn("gru"), nn.RNN: rnn("rnn"),
        nn.MultiheadAttention: mha,
    }
    if hasattr(nn, "RMSNorm"):
        table[nn.RMSNorm] = norm("rms_norm", "normalized_shape")
    return table


_LEAVES: dict[type, Any] | None = None


def leaf_table() -> dict[type, Any]:
    global _LEAVES
    if _LEAVES is None:
        _LEAVES = _leaf_table()
    return _LEAVES


def _is_leaf(m: Any) -> bool:
    return type(m) in leaf_table()


# ------------------------------------------------------------------ inputs
def is_meta_module(module: Any) -> bool:
    """True when every parameter and buffer of ``module`` lives on the meta device."""
    tensors = list(module.parameters()) + list(module.buffers())
    return bool(tensors) and all(t.is_meta for t in tensors)


def _device(module: Any) -> Any:
    import torch

    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("meta")


_SPATIAL_CANDIDATES = (224, 32, 28, 64, 96, 128, 256, 299, 512, 16)


def infer_example_inputs(module: Any) -> tuple[Any, ...]:
    """Guess example inputs from the model's config or its first layer.

    timm models carry ``pretrained_cfg["input_size"]``; otherwise the first leaf layer decides
    (conv: channels x a spatial size that runs, linear: features, embedding: token ids,
    recurrent: a short sequence). Candidates are checked by an eager forward on meta tensors.

    Raises:
        ExampleInputsError: nothing sensible could be inferred; pass ``example_inputs``.
    """
    import torch
    import torch.nn as nn

    dev = _device(module)
    cands: list[tuple[Any, ...]] = []
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        cands.append((torch.zeros((1, *cfg["input_size"]), device=dev),))
    first = next((m for m in module.modules() if _is_leaf(m) and not isinstance(m, (nn.Identity, nn.Dropout))), None)
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        c = first.in_channels
        nd = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        for s in _SPATIAL_CANDIDATES:
            sizes = {1: (s * 4,), 2: (s, s), 3: (8, s // 2 or 1, s // 2 or 1)}[nd]
            cands.append((torch.zeros((1, c, *sizes), device=dev),))
    elif isinstance(first, nn.Linear):
        cands.append((torch.zeros((1, first.in_features), device=dev),))
        cands.append((torch.zeros((1, 16, first.in_features), device=dev),))
    elif isinstance(first, nn.Embedding):
        cands.append((torch.zeros((1, 16), dtype=torch.long, device=dev),))
    elif isinstance(first, (nn.LSTM, nn.GRU, nn.RNN)):
        shape = (1, 16, first.input_size) if first.batch_first else (16, 1, first.input_size)
        cands.append((torch.zeros(shape, device=dev),))
    elif isinstance(first, (nn.LayerNorm,)):
        cands.append((torch.zeros((1, 16, *first.normalized_shape), device=dev),))
    for args in cands:
        if _eager_ok(module, args):
            return args
    found = type(first).__name__ if first is not None else "no recognised first layer"
    raise ExampleInputsError(
        f"cannot infer example inputs for {type(module).__name__} (first layer: {found}); "
        "pass example_inputs=(tensor, ...) shaped like a real batch"
    )


def _meta_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    def f(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return torch.empty(x.shape, dtype=x.dtype, device="meta")
        if isinstance(x, (list, tuple)):
            return type(x)(f(y) for y in x)
        if isinstance(x, dict):
            return {k: f(v) for k, v in x.items()}
        return x
    return f(args)


def _meta_state(module: Any) -> dict[str, Any]:
    import torch

    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = t if t.is_meta else torch.empty(t.shape, dtype=t.dtype, device="meta")
    return state


def meta_copy(module: Any) -> Any:
    """A copy of ``module`` whose parameters and buffers are empty meta tensors.

    ``copy.deepcopy`` with a memo pre-seeded with meta replacements, so real weights are never
    copied (a 7B model costs nothing) and the user's module is left untouched.
    """
    import copy

    import torch

    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                         requires_grad=p.requires_grad)
    for buf in module.buffers():
        memo[id(buf)] = torch.empty(buf.shape, dtype=buf.dtype, device="meta")
    return copy.deepcopy(module, memo)


def _fast_meta_mode() -> Any:
    """A dispatch mode that answers batch-norm on meta tensors by shape alone.

    torch computes meta batch-norm through a Python decomposition (~5 ms a call, most of an fx
    faithfulness check on a ResNet); its output shape is simply the input's. Scoped to our own
    meta runs; every other op runs unchanged.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    bn_ops = {aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default,
              aten._native_batch_norm_legit.default}

    class _FastMeta(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in bn_ops and args and getattr(args[0], "is_meta", False):
                x = args[0]
                return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))
            return func(*args, **(kwargs or {}))

    return _FastMeta()


def _eager_ok(module: Any, args: tuple[Any, ...]) -> bool:
    try:
        _eager_run(module, args)
        return True
    except Exception:  # noqa: BLE001 - probing candidate shapes; any failure means "not this one"
        return False


def _eager_run(module: Any, args: tuple[Any, ...], counts: Counter[str] | None = None) -> Any:
    """Forward on meta tensors (weights never touched), optionally counting leaf-module calls."""
    import torch
    from torch.func import functional_call

    handles = []
    if counts is not None:
        for name, m in module.named_modules():
            if _is_leaf(m):
                handles.append(m.register_forward_hook(
                    lambda *_a, _n=name: counts.__setitem__(_n, counts[_n] + 1)))
    try:
        with torch.no_grad(), _fast_meta_mode():
            if is_meta_module(module) or not list(module.parameters()):
                return module(*_meta_args(args))
            return functional_call(module, _meta_state(module), _meta_args(args))
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------ fx
def trace_fx(module: Any, num_args: int = 1) -> Any:
    """Symbolically trace with our leaf set (torch.nn layers we lower directly).

    Forward parameters after the first ``num_args`` are fixed to their defaults (e.g. timm's
    ``attn_mask=None``), so optional arguments do not become graph inputs.
    """
    import inspect

    import torch.fx

    concrete: dict[str, Any] = {}
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params[num_args:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            concrete[p.name] = p.default

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:  # noqa: ARG002
            return _is_leaf(m)

    tracer = _Tracer()
    graph = tracer.trace(module, concrete_args=concrete or None)
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def _shape(meta: Any) -> tuple[int, ...] | None:
    tm = meta.get("tensor_meta") if isinstance(meta, dict) else None
    shape = getattr(tm, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _fx_to_graph(gm: Any, metadata: dict[str, Any]) -> ArchGraph:
    import torch

    b = GraphBuilder()
    env: dict[str, Value] = {}
    modules = dict(gm.named_modules())
    table = leaf_table()

    def conv(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env.get(a.name, Value(EMPTY))
        if isinstance(a, (list, tuple)):
            return [conv(x) for x in a]
        if isinstance(a, dict):
            return {k: conv(v) for k, v in a.items()}
        return a

    for node in gm.graph.nodes:
        shape = _shape(node.meta)
        if node.op == "placeholder":
            env[node.name] = Value(b.add_input(), shape)
        elif node.op == "get_attr":
            t = operator.attrgetter(node.target)(gm)
            env[node.name] = Value(EMPTY, tuple(t.shape) if hasattr(t, "shape") else None)
        elif node.op == "call_module":
            m = modules[node.target]
            args = [conv(a) for a in node.args]
            x = next((a for a in args if isinstance(a, Value)), Value(EMPTY))
            if x.is_const and type(m).__name__ != "Embedding":
                env[node.name] = Value(EMPTY, shape)
            else:
                env[node.name] = table[type(m)](m, x, shape, b)
        elif node.op in ("call_function", "call_method"):
            target = node.target
            raw = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            name = base_name(raw)
            names = POSITIONAL.get(CANON.get(name, ""), ())
            named: dict[str, Any] = {}
            for i, a in enumerate(node.args):
                key = names[i] if i < len(names) else ("input" if i == 0 else f"arg{i}")
                named[key] = conv(a)
            for k, v in node.kwargs.items():
                named[k] = conv(v)
            env[node.name] = lower_op(b, name, named, shape)
        elif node.op == "output":
            vals: list[Value] = []

            def collect(x: Any) -> None:
                if isinstance(x, Value):
                    vals.append(x)
                elif isinstance(x, (list, tuple)):
                    for y in x:
                        collect(y)
                elif isinstance(x, dict):
                    for y in x.values():
                        collect(y)
            collect(conv(node.args[0]))
            b.add_output(v.ref for v in vals)
    return b.build({"tracer": "fx", **metadata})


def _fx_faithful(module: Any, gm: Any, args: tuple[Any, ...]) -> tuple[bool, str]:
    """Re-run the fx graph on meta and compare with eager meta execution."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    counts: Counter[str] = Counter()
    eager_out = _eager_run(module, args, counts)
    with torch.no_grad(), _fast_meta_mode():
        ShapeProp(gm).propagate(*_meta_args(args))
    fx_counts = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    fx_out = out_node.args[0]

    def shapes(x: Any) -> list[tuple[int, ...]]:
        if isinstance(x, torch.Tensor):
            return [tuple(x.shape)]
        if isinstance(x, torch.fx.Node):
            s = _shape(x.meta)
            return [s] if s is not None else []
        if isinstance(x, (list, tuple)):
            return [s for y in x for s in shapes(y)]
        if isinstance(x, dict):
            return [s for y in x.values() for s in shapes(y)]
        return []

    if shapes(eager_out) != shapes(fx_out):
        return False, f"output shapes differ: eager {shapes(eager_out)} vs fx {shapes(fx_out)}"
    if dict(counts) != dict(fx_counts):
        diff = {k: (counts.get(k, 0), fx_counts.get(k, 0)) for k in set(counts) | set(fx_counts)
                if counts.get(k, 0) != fx_counts.get(k, 0)}
        return False, f"leaf-module calls differ (eager, fx): {dict(list(diff.items())[:5])}"
    # dangling leaf calls: a module whose result never reaches the output means lost data flow
    users_ok = all(n.users for n in gm.graph.nodes if n.op == "call_module")
    if not users_ok:
        return False, "a traced layer's output is never used (data flow lost)"
    return True, ""


# ------------------------------------------------------------------ export
def trace_export(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """``torch.export.export(strict=False)`` on meta inputs (meta module) or fake weights."""
    import torch

    if is_meta_module(module):
        args = _meta_args(args)
        kwargs = _meta_args((kwargs or {},))[0] if kwargs else None
    with torch.no_grad():
        return torch.export.export(module, args, kwargs=kwargs, strict=False)


def graph_from_module(module: Any, example_inputs: Any = None, tracer: str = "auto",
                      metadata: dict[str, Any] | None = None, example_kwargs: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of an ``nn.Module`` without touching its weights.

    Args:
        module: the model (meta or real weights; it is not modified).
        example_inputs: a tensor or tuple of tensors; inferred when ``None``.
        tracer: ``"auto"`` (fx when faithful, else export), ``"fx"`` or ``"export"``.
        metadata: extra provenance stored on the graph.
        example_kwargs: keyword inputs (HF models), export path only.

    Raises:
        ExampleInputsError: inputs needed and not inferable.
        GraphExtractionError: every tracer failed; ``attempts`` says why each did.
    """
    import torch

    meta = {"name": type(module).__name__, **(metadata or {})}
    if not is_meta_module(module) and any(True for _ in module.parameters()):
        module = meta_copy(module)
        if example_inputs is not None:
            example_inputs = _meta_args(example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))
    was_training = module.training
    module.eval()
    try:
        if example_inputs is None and not example_kwargs:
            args = infer_example_inputs(module)
        elif isinstance(example_inputs, torch.Tensor):
            args = (example_inputs,)
        else:
            args = tuple(example_inputs or ())
        attempts: dict[str, str] = {}
        if tracer in ("auto", "fx") and not example_kwargs:
            try:
                gm = trace_fx(module, len(args))
                ok, why = _fx_faithful(module, gm, args)
                if ok or tracer == "fx":
                    if not ok:
                        logger.warning("fx trace of %s is not faithful (%s)", meta["name"], why)
                    return _fx_to_graph(gm, meta)
                attempts["fx"] = f"not faithful: {why}"
            except Exception as e:  # noqa: BLE001 - any tracer failure -> next tracer
                attempts["fx"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if tracer == "fx":
                    raise GraphExtractionError(f"torch.fx could not trace {meta['name']}: {attempts['fx']}", attempts) from e
            logger.debug("fx rejected for %s: %s", meta["name"], attempts["fx"])
        try:
            ep = trace_export(module, args, example_kwargs)
        except Exception as e:  # noqa: BLE001
            attempts["export"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise GraphExtractionError(
                f"could not trace {meta['name']}: " + "; ".join(f"{k}: {v}" for k, v in attempts.items()),
                attempts,
            ) from e
        from nar_plugin.extract.aten import graph_from_exported_program

        return graph_from_exported_program(ep, meta)
    finally:
        module.train(was_training)

