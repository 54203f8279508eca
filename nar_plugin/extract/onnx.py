"""ONNX -> ArchGraph. Reads the graph only: external weight data stays on disk.

Widths come from initializer dims (present even when the data is external), so no tensor data is
ever read. ``MatMul``/``Gemm`` with an initializer operand are dense layers, and the bias ``Add``
that exporters emit after a ``MatMul`` is folded into the layer, matching torch's ``linear``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.extract.ops import EMPTY, Value, conv_attrs, dense_attrs, pool_attrs
from nar_plugin.graph import NO_ATTRS, ArchGraph, GraphBuilder

__all__ = ["graph_from_onnx", "load_onnx"]

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
    "Trilu": "other",
}


def load_onnx(path: str | Path) -> Any:
    """Load an ONNX model without its external data.

    Raises:
        CorruptArtifactError: the file does not parse as an ONNX ModelProto.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        raise CorruptArtifactError(f"{path} is not a valid ONNX model: {type(e).__name__}: {e}", str(path)) from e
    if not model.graph.node:
        raise CorruptArtifactError(f"{path} parsed, but its graph has no nodes (expected an ONNX model)", str(path))
    return model


def _small_constants(model: Any, limit: int = 64) -> dict[str, list[int]]:
    """Integer constants of at most ``limit`` elements (axes, indices) that are stored inline."""
    import onnx
    from onnx import numpy_helper

    out: dict[str, list[int]] = {}
    tensors = [(t.name, t) for t in model.graph.initializer
               if t.data_location != onnx.TensorProto.EXTERNAL]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    tensors.append((node.output[0], a.t))
                elif a.name in ("value_ints", "value_int"):
                    v = onnx.helper.get_attribute_value(a)
                    out[node.output[0]] = list(v) if isinstance(v, (list, tuple)) else [int(v)]
    for name, t in tensors:
        n = 1
        for d in t.dims:
            n *= int(d)
        if n > limit or t.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            continue
        try:
            out[name] = [int(x) for x in numpy_helper.to_array(t).reshape(-1)]
        except (ValueError, TypeError):
            continue
    return out


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def graph_from_onnx(source: Any, metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Lower an ONNX file path or ``ModelProto``.

    Raises:
        CorruptArtifactError: unreadable or empty model.
    """
    if isinstance(source, (str, Path)):
        model = load_onnx(source)
        meta = {"source": str(source)}
    else:
        model = source
        meta = {}
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {init.name: tuple(int(d) for d in init.dims) for init in g.initializer}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            shapes.setdefault(vi.name, dims)
    initializers = {init.name for init in g.initializer}
    small = _small_constants(model)
    b = GraphBuilder()
    env: dict[str, Value] = {}
    for inp in g.input:
        if inp.name in initializers:
            continue
        env[inp.name] = Value(b.add_input(), shapes.get(inp.name))

    unbiased: set[int] = set()  # MatMul-based linears whose bias Add has not been seen yet

    def val(name: str) -> Value:
        if not name:
            return Value(EMPTY)
        return env.get(name, Value(EMPTY, shapes.get(name)))

    for node in g.node:
        ins = [val(n) for n in node.input]
        data = [v for v in ins if not v.is_const]
        t = node.op_type
        out_shape = shapes.get(node.output[0]) if node.output else None
        if t in _CONST or not data:
            res = Value(EMPTY, out_shape)
        elif t in _FOLD:
            res = Value(frozenset().union(*(v.ref for v in data)), out_shape)
        else:
            op = _SIMPLE.get(t, "other")
            attrs = None
            if t in ("Conv", "ConvTranspose"):
                w = ins[1].shape if len(ins) > 1 else None
                group = int(_attr(node, "group", 1))
                ks = _attr(node, "kernel_shape") or (list(w[2:]) if w else [])
                stride = max(_attr(node, "strides") or [1])
                if t == "Conv":
                    cin, cout = (w[1] * group, w[0]) if w else (None, None)
                else:
                    cin, cout = (w[0], w[1] * group) if w else (None, None)
                attrs = conv_attrs((1, cin) if cin else None, (1, cout) if cout else None,
                                   max(ks or [0]), stride, group)
            elif t == "Gemm":
                w = ins[1].shape if len(ins) > 1 else None
                if w and len(w) == 2:
                    cin, cout = (w[1], w[0]) if _attr(node, "transB", 0) else (w[0], w[1])
                    attrs = dense_attrs(cin, cout)
            elif t in ("MatMul", "Einsum") and len(data) == 1:
                w = next((v.shape for v in ins if v.is_const and v.shape and len(v.shape) >= 2), None)
                if w is not None:
                    op = "linear"
                    attrs = dense_attrs(w[-2], w[-1])
            elif t in ("MaxPool", "AveragePool"):
                attrs = pool_attrs(_attr(node, "kernel_shape"), _attr(node, "strides"))
            elif t in ("BatchNormalization", "InstanceNormalization", "GroupNormalization",
                       "LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"):
                s = ins[1].shape if len(ins) > 1 else None
                if t == "GroupNormalization":
                    c = data[0].shape[1] if data[0].shape and len(data[0].shape) > 1 else None
                else:
                    c = s[-1] if s else None
                attrs = dense_attrs(c, c)
            elif t == "Gather" and not ins[0].is_const and len(ins) > 1 and ins[1].is_const:
                # Gather(x, constant index) is a select/slice: routing, folded like torch's select
                res = Value(ins[0].ref, out_shape)
                for o in node.output:
                    env[o] = Value(res.ref, shapes.get(o))
                continue
            elif t == "Gather" and ins and ins[0].is_const and ins[0].shape and len(ins[0].shape) == 2:
                op = "embedding"  # Gather(table, ids): an embedding lookup
                attrs = dense_attrs(ins[0].shape[0], ins[0].shape[1])
            elif t in ("ReduceMean", "ReduceMax") and data[0].shape and len(data[0].shape) == 4:
                axes = _attr(node, "axes")
                if axes is None and len(node.input) > 1:
                    axes = small.get(node.input[1])  # opset 18: axes is an input tensor
                if axes is not None and {a % 4 for a in axes} == {2, 3}:
                    op = "adaptive_avg_pool" if t == "ReduceMean" else "adaptive_max_pool"
            elif t == "Add" and len(data) == 1 and len(data[0].ref) == 1 and data[0].ref <= unbiased:
                # the bias Add that exporters emit after a MatMul-based linear
                unbiased.difference_update(data[0].ref)
                for o in node.output:
                    env[o] = Value(data[0].ref, shapes.get(o))
                continue
            res = Value(b.add(op, [v.ref for v in data], attrs or NO_ATTRS), out_shape)
            if op == "linear" and t != "Gemm":
                unbiased.update(res.ref)
        for o in node.output:
            env[o] = Value(res.ref, shapes.get(o, res.shape if o == node.output[0] else None))
    b.add_output(val(o.name).ref for o in g.output)
    return b.build({"tracer": "onnx", **meta, **(metadata or {})})

