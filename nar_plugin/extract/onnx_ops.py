"""ONNX graph -> IR: the op table and the lowering of one ``ModelProto`` (no weights read).

Widths come from initializer dims (present even when the data is external), so no weight data is
ever read; only small numeric constants (axes, shapes, clip bounds, at most
:data:`_MAX_CONST` elements) are. ``MatMul``/``Gemm`` with an initializer operand are dense
layers, and the bias ``Add`` that exporters emit after a ``MatMul`` is folded into the layer,
matching torch's ``linear``. What the exporters and optimisers spell differently (Clip(0, 6) is
ReLU6, ``x * 1`` is nothing, onnxruntime's fused ops are the ops they fuse, the axes of a global
pooling written as a run-time tensor) is undone here; the rest is the canonical passes' job
(:mod:`nar_plugin.graph.canonical`).
"""

from __future__ import annotations

from typing import Any

from nar_plugin.extract.ops import EMPTY, Value, conv_attrs, dense_attrs, pool_attrs
from nar_plugin.graph import NO_ATTRS, ArchGraph, GraphBuilder, NodeAttrs
from nar_plugin.graph.params import param_metadata

__all__ = ["lower_onnx"]

_FOLD = {
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast",
    "CastLike", "Expand", "Slice", "Split", "Tile", "SplitToSequence",
    "SequenceAt", "Optional", "OptionalGetElement",
}
_CONST = {
    "Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike", "RandomNormalLike",
    "RandomUniformLike", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not",
    "And", "Or", "IsNaN", "IsInf", "ArgMax", "ArgMin", "NonZero",
}
_SIMPLE = {
    "Relu": "relu", "Gelu": "gelu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish",
    "HardSigmoid": "hardsigmoid", "Mish": "mish", "Elu": "elu", "Celu": "elu", "Selu": "elu",
    "LeakyRelu": "leaky_relu", "PRelu": "prelu", "Softplus": "softplus", "Softmax": "softmax",
    "LogSoftmax": "log_softmax", "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
    "Reciprocal": "div", "Pow": "pow", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Neg": "neg",
    "Abs": "abs", "Clip": "clamp", "Where": "where", "Erf": "erf", "Sin": "sin_cos", "Cos": "sin_cos",
    "ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min",
    "ReduceL2": "norm", "LpNormalization": "norm", "Max": "max", "Min": "min", "Concat": "cat",
    "Pad": "pad", "Gather": "gather", "GatherElements": "gather", "GatherND": "gather",
    "ScatterElements": "scatter", "ScatterND": "scatter", "CumSum": "cumsum", "TopK": "topk",
    "GlobalAveragePool": "adaptive_avg_pool", "GlobalMaxPool": "adaptive_max_pool",
    "Resize": "upsample", "Upsample": "upsample", "DepthToSpace": "pixel_shuffle",
    "SpaceToDepth": "pixel_shuffle", "BatchNormalization": "batch_norm",
    "LayerNormalization": "layer_norm", "GroupNormalization": "group_norm",
    "InstanceNormalization": "instance_norm", "RMSNormalization": "rms_norm",
    "SimplifiedLayerNormalization": "rms_norm", "Attention": "attention", "MatMul": "matmul",
    "Einsum": "matmul", "LSTM": "lstm", "GRU": "gru", "RNN": "rnn", "MaxPool": "max_pool",
    "AveragePool": "avg_pool", "Conv": "conv", "ConvTranspose": "conv_transpose", "Gemm": "linear",
    "Trilu": "other", "NhwcConv": "conv", "FusedMatMul": "matmul", "FastGelu": "gelu",
    "BiasGelu": "gelu", "QuickGelu": "gelu", "BiasAdd": "add",
}


_MAX_CONST = 64  # elements: axes, shapes, clip bounds; weights are never read

#: Ops whose output is computed from constants only when every input is constant; evaluated on
#: small integer/float constants so that ``axes`` / clip bounds built at run time are known.
_CONST_EVAL = {"Identity", "Cast", "CastLike", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat"}


def _tensor_values(t: Any) -> list[float] | None:
    import onnx
    from onnx import numpy_helper

    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    n = 1
    for d in t.dims:
        n *= int(d)
    if n > _MAX_CONST:
        return None
    try:
        arr = numpy_helper.to_array(t).reshape(-1)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind not in "iuf":
        return None
    return [x.item() for x in arr]


def _constants(model: Any) -> dict[str, list[float]]:
    """Values of the small numeric constants: initializers, ``Constant`` nodes, and what the
    bookkeeping ops in :data:`_CONST_EVAL` make of them (opset 18 passes ``axes`` as a tensor
    that the un-optimised exporter computes with Reshape/Concat)."""
    import onnx

    out: dict[str, list[float]] = {}
    for t in model.graph.initializer:
        v = _tensor_values(t)
        if v is not None:
            out[t.name] = v
    for node in model.graph.node:
        if not node.output:
            continue
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    v = _tensor_values(a.t)
                elif a.name in ("value_ints", "value_int", "value_floats", "value_float"):
                    raw = onnx.helper.get_attribute_value(a)
                    v = list(raw) if isinstance(raw, (list, tuple)) else [raw]
                else:
                    continue
                if v is not None:
                    out[node.output[0]] = v
        elif node.op_type in _CONST_EVAL and node.input and node.input[0] in out:
            if node.op_type == "Concat":
                if all(i in out for i in node.input):
                    out[node.output[0]] = [x for i in node.input for x in out[i]]
            else:
                out[node.output[0]] = out[node.input[0]]
    return out


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dims(vi: Any) -> tuple[int, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of initializers (their dims; data is never read) and of values.

    ``value_info`` as written, completed by ONNX shape inference on a copy that holds no tensor
    data (the legacy exporter writes no ``value_info``; others leave out transposed weights).
    """
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    for vi in [*g.value_info, *g.input, *g.output, *_inferred_value_info(model)]:
        dims = _dims(vi)
        if dims is not None:
            shapes.setdefault(vi.name, dims)
    return shapes


def _inferred_value_info(model: Any) -> list[Any]:
    import onnx

    g = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    for t in g.initializer:  # name, type and dims only (small ones whole: shape tensors)
        if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) <= 8 * _MAX_CONST:
            lg.initializer.add().CopyFrom(t)
        else:
            lg.initializer.add(name=t.name, data_type=t.data_type, dims=list(t.dims))
    try:
        return list(onnx.shape_inference.infer_shapes(light, strict_mode=False).graph.value_info)
    except Exception:  # noqa: BLE001 - shapes are a refinement; the graph lowers without them
        return []


class _Lowering:
    """State of one ONNX graph being lowered: values, shapes, constants, pending biases."""

    def __init__(self, model: Any) -> None:
        self.shapes = _shapes(model)
        self.consts = _constants(model)
        self.b = GraphBuilder()
        self.env: dict[str, Value] = {}
        self.unbiased: set[int] = set()  # MatMul-based linears whose bias Add is still to come

    def val(self, name: str) -> Value:
        if not name:
            return Value(EMPTY)
        return self.env.get(name, Value(EMPTY, self.shapes.get(name)))

    def bind(self, node: Any, ref: frozenset[int]) -> None:
        for o in node.output:
            self.env[o] = Value(ref, self.shapes.get(o))

    def node(self, node: Any) -> None:
        t = node.op_type
        # CastLike's second input only lends its dtype
        ins = [self.val(n) for n in (node.input[:1] if t == "CastLike" else node.input)]
        data = [v for v in ins if not v.is_const]
        if t in _CONST or not data:
            self.bind(node, EMPTY)
            if t == "Transpose" and ins and ins[0].shape and node.output[0] not in self.shapes:
                perm = _attr(node, "perm") or list(range(len(ins[0].shape)))[::-1]
                self.env[node.output[0]] = Value(EMPTY, tuple(ins[0].shape[p] for p in perm))
        elif t in _FOLD or (t == "Concat" and len(node.input) == 1):
            self.bind(node, frozenset().union(*(v.ref for v in data)))
        elif t == "Gather" and not ins[0].is_const and len(ins) > 1 and ins[1].is_const:
            self.bind(node, ins[0].ref)  # Gather(x, constant index): a select, routing only
        elif t == "Add" and len(data) == 1 and len(data[0].ref) == 1 and data[0].ref <= self.unbiased:
            self.unbiased.difference_update(data[0].ref)  # the bias Add after a MatMul linear
            self.bind(node, data[0].ref)
        elif t in _NEUTRAL and self._neutral(node, ins):
            self.bind(node, data[0].ref)  # x * 1, x + 0...: a no-op (optimisers drop it)
        elif t in _FUSED:
            self._fused(node, ins, data)
        else:
            op, attrs = self._op(node, ins, data)
            ref = self.b.add(op, [v.ref for v in data], attrs)
            if op == "linear" and t != "Gemm":
                self.unbiased.update(ref)
            self.bind(node, ref)

    def _neutral(self, node: Any, ins: list[Value]) -> bool:
        if len(ins) != 2 or ins[0].is_const == ins[1].is_const:
            return False  # needs exactly one constant operand...
        k = 0 if ins[0].is_const else 1
        if k == 0 and node.op_type in ("Sub", "Div", "Pow"):
            return False  # ... on the right for Sub/Div/Pow (1 - x is not x)
        vals = self.consts.get(node.input[k])
        return bool(vals) and all(float(v) == _NEUTRAL[node.op_type] for v in vals)

    def _op(self, node: Any, ins: list[Value], data: list[Value]) -> tuple[str, NodeAttrs]:
        t = node.op_type
        op = _SIMPLE.get(t, "other")
        if t in ("Conv", "ConvTranspose", "NhwcConv"):
            return op, self._conv_attrs(node, ins)
        if t in ("Gemm", "FusedGemm"):
            w = ins[1].shape if len(ins) > 1 else None
            if w and len(w) == 2:
                cin, cout = (w[1], w[0]) if _attr(node, "transB", 0) else (w[0], w[1])
                return op, dense_attrs(cin, cout)
        elif t in ("MatMul", "Einsum", "FusedMatMul") and len(data) == 1:
            w = next((v.shape for v in ins if v.is_const and v.shape and len(v.shape) >= 2), None)
            if w is not None:
                return "linear", dense_attrs(w[-2], w[-1])
        elif t in ("MaxPool", "AveragePool"):
            return op, pool_attrs(_attr(node, "kernel_shape"), _attr(node, "strides"))
        elif op in ("batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"):
            return op, self._norm_attrs(node, ins, data)
        elif t == "Gather" and ins[0].is_const and ins[0].shape and len(ins[0].shape) == 2:
            return "embedding", dense_attrs(ins[0].shape[0], ins[0].shape[1])
        elif t in ("ReduceMean", "ReduceMax") and self._global_pool(node, data[0].shape):
            return ("adaptive_avg_pool" if t == "ReduceMean" else "adaptive_max_pool"), NO_ATTRS
        elif t == "QuickGelu":  # x * sigmoid(alpha * x): alpha 1 is SiLU (what ORT fuses it from)
            return ("silu" if float(_attr(node, "alpha", 1.702)) == 1.0 else "gelu"), NO_ATTRS
        elif t == "Clip":
            bounds = [self.consts.get(n, [None])[0] if n else None for n in list(node.input[1:3])]
            bounds += [None] * (2 - len(bounds))
            if bounds[0] is None and bounds[1] is None:  # opset < 11: attributes
                bounds = [_attr(node, "min"), _attr(node, "max")]
            if bounds == [0, 6]:
                return "relu6", NO_ATTRS
        return op, NO_ATTRS

    def _global_pool(self, node: Any, shape: tuple[int, ...] | None) -> bool:
        """A mean/max over the two spatial axes of an NCHW tensor (rank unknown after an
        onnxruntime contrib op, which shape inference cannot see through: axes 2, 3 suffice)."""
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1:
            axes = self.consts.get(node.input[1])  # opset 18: axes is an input tensor
        if axes is None:
            return False
        if shape is None or len(shape) == 0:
            return sorted(int(a) for a in axes) == [2, 3]
        return len(shape) == 4 and {int(a) % 4 for a in axes} == {2, 3}

    def _conv_attrs(self, node: Any, ins: list[Value]) -> NodeAttrs:
        w = ins[1].shape if len(ins) > 1 else None
        group = int(_attr(node, "group", 1))
        ks = _attr(node, "kernel_shape") or (list(w[2:]) if w else [])
        stride = max(_attr(node, "strides") or [1])
        if node.op_type != "ConvTranspose":
            cin, cout = (w[1] * group, w[0]) if w else (None, None)
        else:
            cin, cout = (w[0], w[1] * group) if w else (None, None)
        return conv_attrs((1, cin) if cin else None, (1, cout) if cout else None, max(ks or [0]), stride, group)

    def _norm_attrs(self, node: Any, ins: list[Value], data: list[Value]) -> NodeAttrs:
        x = data[0].shape
        if node.op_type in ("BatchNormalization", "InstanceNormalization", "GroupNormalization"):
            c = x[1] if x and len(x) > 1 and x[1] > 0 else None
            if c is None and node.op_type != "GroupNormalization":
                s = ins[1].shape if len(ins) > 1 else None
                c = s[-1] if s else None
        else:
            s = ins[1].shape if len(ins) > 1 else None
            c = s[-1] if s else (x[-1] if x and x[-1] > 0 else None)
        return dense_attrs(c, c)

    def _fused(self, node: Any, ins: list[Value], data: list[Value]) -> None:
        """onnxruntime's fused ops (what its graph optimiser writes) as the ops they fuse."""
        t = node.op_type
        if t in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
            add = self.b.add("add", [v.ref for v in data[:2]])
            op = "layer_norm" if t == "SkipLayerNormalization" else "rms_norm"
            width = ins[2].shape[-1] if len(ins) > 2 and ins[2].shape else None
            ref = self.b.add(op, [add], dense_attrs(width, width))
            # output 3 (when present) is the sum itself, the residual the next block reads
            self.bind(node, ref)
            if len(node.output) > 3 and node.output[3]:
                self.env[node.output[3]] = Value(add, self.shapes.get(node.output[3]))
            return
        base = _FUSED[t]
        core = self.b.add(base, [v.ref for v in data],
                          self._conv_attrs(node, ins) if base == "conv" else self._op(node, ins, data)[1])
        act = _attr(node, "activation", b"") or b""
        act = act.decode() if isinstance(act, bytes) else str(act)
        if act:
            params = list(_attr(node, "activation_params", []) or [])
            op = "relu6" if act == "Clip" and params[:2] == [0.0, 6.0] else _SIMPLE.get(act, "other")
            core = self.b.add(op, [core])
        self.bind(node, core)


#: Arithmetic ops and the constant operand that makes them a no-op.
_NEUTRAL = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0, "Pow": 1.0}

#: onnxruntime contrib ops that fuse a layer and an activation (or a bias and an activation).
_FUSED = {"FusedConv": "conv", "FusedGemm": "linear", "SkipLayerNormalization": "layer_norm",
          "SkipSimplifiedLayerNormalization": "rms_norm"}


def lower_onnx(model: Any, metadata: dict[str, Any]) -> ArchGraph:
    """Lower a loaded ``ModelProto`` (external data not loaded) into an :class:`ArchGraph`."""
    g = model.graph
    low = _Lowering(model)
    initializers = {t.name for t in g.initializer}
    for inp in g.input:
        if inp.name not in initializers:
            low.env[inp.name] = Value(low.b.add_input(), low.shapes.get(inp.name))
    for node in g.node:
        low.node(node)
    low.b.add_output(low.val(o.name).ref for o in g.output)
    # parameters: the float initializers (their dims only; BatchNorm is already folded in exports,
    # so vectors -- biases, norm scales -- are not the module's: ``param_vectors_folded``)
    weights = (tuple(t.dims) for t in g.initializer if t.data_type in _FLOAT_TYPES)
    return low.b.build({**param_metadata(weights), "param_vectors_folded": True, **metadata})


#: ONNX ``TensorProto`` data types of weights: FLOAT, FLOAT16, DOUBLE, BFLOAT16
_FLOAT_TYPES = frozenset({1, 10, 11, 16})

