"""Shared lowering of tensor ops (ATen names, torch functions, tensor methods) into the IR.

torch.fx ``call_function``/``call_method`` nodes, torch.export ATen nodes and the nodes of a
stored pt2 archive all come here with a *base name* (``conv2d``, ``relu_`` -> ``relu``, ``add``)
and named arguments, so the three paths share one table and give the same graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nar_plugin.graph import (
    GROUPS_DEPTHWISE,
    GROUPS_GROUPED,
    GROUPS_NONE,
    NO_ATTRS,
    GraphBuilder,
    NodeAttrs,
    width_bucket,
)

Ref = frozenset  # builder node ids producing a value; empty = constant / parameter
EMPTY: frozenset[int] = frozenset()


@dataclass
class Value:
    """A traced value: which builder nodes produce it and, where known, its shape."""

    ref: frozenset[int]
    shape: tuple[int, ...] | None = None

    @property
    def is_const(self) -> bool:
        return not self.ref


#: Ops folded away: bookkeeping, views, dtype/device moves, dropout (eval), routing of one tensor.
FOLD = frozenset({
    "view", "reshape", "_unsafe_view", "_reshape_alias", "flatten", "unflatten", "permute",
    "transpose", "t", "contiguous", "clone", "detach", "alias", "expand", "expand_as",
    "squeeze", "unsqueeze", "dropout", "feature_dropout", "alpha_dropout", "native_dropout",
    "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d", "to", "_to_copy", "type_as",
    "type", "float", "half", "bfloat16", "double", "slice", "select", "split", "split_with_sizes",
    "chunk", "unbind", "getitem", "lift_fresh_copy", "repeat", "repeat_interleave", "narrow",
    "movedim", "swapaxes", "view_as", "reshape_as", "tensor_split", "identity", "copy",
    "_assert_tensor_metadata", "clone_", "as_strided", "masked_select", "tile", "cpu", "cuda",
    "requires_grad_", "align_to", "unfold_copy", "_native_batch_norm_legit_functional",
    "index_put", "contiguous_", "fill", "set_", "broadcast_to", "flip", "mT", "adjoint",
    # stochastic depth is the identity at inference (torchvision's op is an fx leaf function)
    "stochastic_depth", "drop_path",
})

#: Ops whose output does not depend on tensor *data* (shape queries, factories, *_like).
CONST = frozenset({
    "size", "sym_size", "sym_numel", "sym_stride", "dim", "numel", "zeros", "ones", "full",
    "empty", "arange", "zeros_like", "ones_like", "full_like", "empty_like", "rand_like",
    "randn_like", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "scalar_tensor",
    "tensor", "linspace", "eye", "tril_indices", "triu_indices", "item", "_local_scalar_dense",
    "sym_constrain_range", "sym_constrain_range_for_size", "_assert_async", "_assert_scalar",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or", "isinf",
    "isnan", "bitwise_not", "bitwise_and", "bitwise_or", "any", "all", "argmax", "argmin",
    "empty_strided", "randn", "rand", "randint", "bernoulli", "detach_", "_assert", "getattr",
    "is_floating_point", "dtype", "device", "shape", "__and__", "__or__", "__invert__", "__xor__",
    "and_", "or_", "bitwise_xor",
})

#: base name -> canonical op.
CANON: dict[str, str] = {
    **dict.fromkeys(["conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv"], "conv"),
    **dict.fromkeys(["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"], "conv_transpose"),
    **dict.fromkeys(["linear", "addmm", "_linear"], "linear"),
    **dict.fromkeys(["matmul", "mm", "bmm", "einsum", "baddbmm", "__matmul__", "bilinear"], "matmul"),
    **dict.fromkeys(["embedding", "embedding_bag"], "embedding"),
    **dict.fromkeys([
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math",
        "multi_head_attention_forward"], "attention"),
    "lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn",
    **dict.fromkeys(["batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
                     "_native_batch_norm_legit", "cudnn_batch_norm", "_batch_norm_impl_index"],
                    "batch_norm"),
    **dict.fromkeys(["layer_norm", "native_layer_norm"], "layer_norm"),
    **dict.fromkeys(["group_norm", "native_group_norm"], "group_norm"),
    "instance_norm": "instance_norm",
    **dict.fromkeys(["rms_norm", "_fused_rms_norm"], "rms_norm"),
    "relu": "relu", "relu6": "relu6", "gelu": "gelu", "silu": "silu", "sigmoid": "sigmoid",
    "tanh": "tanh", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "mish": "mish",
    **dict.fromkeys(["elu", "celu", "selu"], "elu"), "leaky_relu": "leaky_relu",
    **dict.fromkeys(["prelu", "_prelu_kernel"], "prelu"), "softplus": "softplus",
    **dict.fromkeys(["softmax", "_softmax", "_safe_softmax"], "softmax"),
    **dict.fromkeys(["log_softmax", "_log_softmax"], "log_softmax"),
    **dict.fromkeys(["add", "__add__", "__radd__", "iadd", "__iadd__"], "add"),
    **dict.fromkeys(["sub", "rsub", "__sub__", "__rsub__", "subtract"], "sub"),
    **dict.fromkeys(["mul", "__mul__", "__rmul__", "multiply", "imul", "__imul__"], "mul"),
    **dict.fromkeys(["div", "__truediv__", "__rtruediv__", "truediv", "true_divide", "floordiv",
                     "__floordiv__", "reciprocal", "divide"], "div"),
    **dict.fromkeys(["pow", "__pow__", "square"], "pow"), "sqrt": "sqrt", "rsqrt": "rsqrt",
    "exp": "exp", "log": "log", "neg": "neg", "__neg__": "neg", "abs": "abs",
    **dict.fromkeys(["clamp", "clamp_min", "clamp_max", "clip", "hardtanh", "threshold"], "clamp"),
    **dict.fromkeys(["where", "masked_fill", "masked_scatter"], "where"), "erf": "erf",
    **dict.fromkeys(["sin", "cos"], "sin_cos"),
    **dict.fromkeys(["mean", "var", "std", "var_mean"], "mean"), "sum": "sum",
    **dict.fromkeys(["amax", "max", "maximum"], "max"), **dict.fromkeys(["amin", "min", "minimum"], "min"),
    **dict.fromkeys(["norm", "linalg_vector_norm", "frobenius_norm", "normalize"], "norm"),
    **dict.fromkeys(["cat", "concat", "concatenate", "stack", "hstack", "vstack"], "cat"),
    **dict.fromkeys(["pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
                     "replication_pad2d", "reflection_pad3d", "replication_pad1d"], "pad"),
    **dict.fromkeys(["gather", "index_select", "take_along_dim", "index", "embedding_renorm"], "gather"),
    **dict.fromkeys(["scatter", "scatter_add", "index_add", "index_copy", "scatter_reduce"], "scatter"),
    "roll": "roll", **dict.fromkeys(["cumsum", "cumprod"], "cumsum"), "topk": "topk",
    **dict.fromkeys(["sort", "argsort"], "sort"),
    **dict.fromkeys(["max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
                     "max_pool3d_with_indices", "max_pool1d_with_indices"], "max_pool"),
    **dict.fromkeys(["avg_pool1d", "avg_pool2d", "avg_pool3d"], "avg_pool"),
    **dict.fromkeys(["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                     "_adaptive_avg_pool2d", "_adaptive_avg_pool3d"], "adaptive_avg_pool"),
    **dict.fromkeys(["adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"], "adaptive_max_pool"),
    **dict.fromkeys(["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
                     "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d",
                     "upsample_trilinear3d", "interpolate", "_upsample_bilinear2d_aa",
                     "_upsample_nearest_exact2d", "grid_sampler", "grid_sample"], "upsample"),
    **dict.fromkeys(["pixel_shuffle", "pixel_unshuffle"], "pixel_shuffle"),
}

#: Positional argument names of torch functions / tensor methods that fx records positionally
#: (the same names ATen schemas use, so attribute extraction is shared).
POSITIONAL: dict[str, tuple[str, ...]] = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose": ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    "linear": ("input", "weight", "bias"),
    "max_pool": ("input", "kernel_size", "stride", "padding"),
    "avg_pool": ("input", "kernel_size", "stride", "padding"),
    "mean": ("input", "dim"),
    "embedding": ("input", "weight"),
}


def base_name(name: str) -> str:
    """``aten.relu_.default`` / ``torch.ops.aten.add.Tensor`` / ``relu_`` -> ``relu``."""
    if name.startswith("torch.ops."):
        name = name[len("torch.ops."):]
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] in ("aten", "prims", "quantized", "_operator"):
        name = parts[1]
    elif len(parts) == 2 and parts[0] in ("aten", "prims", "_operator", "operator"):
        name = parts[1]
    else:
        name = parts[-1]
    if name.endswith("_") and not name.endswith("__") and name not in ("t_",):
        name = name[:-1]
    return name


def _as_int_list(v: Any) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v if isinstance(x, (int, float))]
    if isinstance(v, (int, float)):
        return [int(v)]
    return []


def _kernel_stride(weight_shape: tuple[int, ...] | None, stride: Any) -> tuple[int, int]:
    k = max(weight_shape[2:]) if weight_shape and len(weight_shape) > 2 else 0
    s = max(_as_int_list(stride) or [1])
    return k, s


def groups_kind(groups: int, in_channels: int | None) -> int:
    if groups <= 1:
        return GROUPS_NONE
    if in_channels is not None and groups == in_channels:
        return GROUPS_DEPTHWISE
    return GROUPS_GROUPED


def conv_attrs(in_shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None,
               kernel: int, stride: int, groups: int, transposed: bool = False) -> NodeAttrs:
    cin = in_shape[1] if in_shape and len(in_shape) > 1 else None
    cout = out_shape[1] if out_shape and len(out_shape) > 1 else None
    return NodeAttrs(kernel, stride, groups_kind(groups, cin), width_bucket(cin), width_bucket(cout))


def dense_attrs(width_in: int | None, width_out: int | None) -> NodeAttrs:
    return NodeAttrs(0, 0, 0, width_bucket(width_in), width_bucket(width_out))


def pool_attrs(kernel: Any, stride: Any) -> NodeAttrs:
    ks = _as_int_list(kernel)
    ss = _as_int_list(stride) or ks
    return NodeAttrs(max(ks or [0]), max(ss or [0]), 0, 0, 0)


def _last(shape: tuple[int, ...] | None) -> int | None:
    return shape[-1] if shape else None


def _chan(shape: tuple[int, ...] | None) -> int | None:
    return shape[1] if shape and len(shape) > 1 else None


def iter_values(v: Any) -> Iterable[Value]:
    if isinstance(v, Value):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from iter_values(x)
    elif isinstance(v, Mapping):
        for x in v.values():
            yield from iter_values(x)


#: Arithmetic ops and the constant operand that makes them a no-op (``x * 1``, ``x + 0``...).
_NEUTRAL = {"mul": 1.0, "div": 1.0, "add": 0.0, "sub": 0.0, "pow": 1.0}
#: Spellings whose tensor operand is on the right (``1 - x``, ``1 / x``): never a no-op.
_REVERSED = frozenset({"rsub", "__rsub__", "__rtruediv__", "reciprocal", "__rpow__", "__rdiv__"})


def _is_neutral(name: str, op: str, args: Mapping[str, Any], x: Value) -> bool:
    """True when ``op`` applied to tensor ``x`` and one Python number is the identity."""
    if name in _REVERSED or (op in ("sub", "div", "pow") and args.get("input") is not x):
        return False
    scalars = [v for k, v in args.items() if k != "alpha" and isinstance(v, (int, float))
               and not isinstance(v, bool)]
    return len(scalars) == 1 and float(scalars[0]) == _NEUTRAL[op]


def lower_op(builder: GraphBuilder, name: str, args: Mapping[str, Any],
             out_shape: tuple[int, ...] | None) -> Value:
    """Lower one op call into the builder.

    Args:
        builder: the graph under construction.
        name: base op name (see :func:`base_name`).
        args: named arguments; tensors are :class:`Value`, other entries are Python literals.
            Unnamed extras may use keys ``"arg<i>"``.
        out_shape: shape of the (first) output when known.

    Returns:
        The op's output value.
    """
    values = list(iter_values(list(args.values())))
    data = [v for v in values if not v.is_const]
    if name in FOLD:
        ref: frozenset[int] = frozenset().union(*(v.ref for v in data)) if data else EMPTY
        return Value(ref, out_shape)
    if name in CONST or not data:
        return Value(EMPTY, out_shape)
    op = CANON.get(name, "other")
    if op in _NEUTRAL and len(values) == 1 and _is_neutral(name, op, args, data[0]):
        return Value(data[0].ref, out_shape)  # x * 1, x + 0...: optimisers drop them
    if op == "cat":
        seq = args.get("tensors", args.get("input"))
        if isinstance(seq, (list, tuple)) and len(seq) == 1 and isinstance(seq[0], Value):
            return Value(seq[0].ref, out_shape)  # cat of one tensor: a copy (optimisers drop it)
    attrs = NO_ATTRS
    first = data[0]
    if op == "conv" or op == "conv_transpose":
        w = args.get("weight")
        wshape = w.shape if isinstance(w, Value) else None
        k, s = _kernel_stride(wshape, args.get("stride"))
        groups = int(args.get("groups") or 1)
        if name == "convolution" and args.get("transposed"):
            op = "conv_transpose"
        inp = args.get("input")
        in_shape = inp.shape if isinstance(inp, Value) else first.shape
        attrs = conv_attrs(in_shape, out_shape, k, s, groups)
    elif op == "linear":
        inp = args.get("input") if name != "addmm" else args.get("mat1")
        in_shape = inp.shape if isinstance(inp, Value) else first.shape
        attrs = dense_attrs(_last(in_shape), _last(out_shape))
    elif op == "matmul":
        consts = [v for v in values if v.is_const and v.shape and len(v.shape) >= 2]
        if len(data) == 1 and consts and name not in ("einsum",):
            # x @ W with a parameter: a hand-written linear layer
            op = "linear"
            attrs = dense_attrs(_last(first.shape), _last(out_shape))
        elif len(data) == 1 and name == "einsum" and consts:
            op = "linear"
            attrs = dense_attrs(_last(first.shape), _last(out_shape))
    elif op == "embedding":
        w = args.get("weight")
        vocab = w.shape[0] if isinstance(w, Value) and w.shape else None
        attrs = dense_attrs(vocab, _last(out_shape))
    elif op in ("batch_norm", "group_norm", "instance_norm"):
        attrs = dense_attrs(_chan(first.shape), _chan(out_shape))
    elif op in ("layer_norm", "rms_norm"):
        attrs = dense_attrs(_last(first.shape), _last(out_shape))
    elif op in ("lstm", "gru", "rnn"):
        shape = first.shape
        attrs = dense_attrs(_last(shape), _last(out_shape))
    elif op in ("max_pool", "avg_pool"):
        attrs = pool_attrs(args.get("kernel_size"), args.get("stride"))
    elif op == "mean" and first.shape is not None and len(first.shape) == 4:
        dims = {d % 4 for d in _as_int_list(args.get("dim"))}
        if dims == {2, 3}:
            op = "adaptive_avg_pool"  # global average pooling written as x.mean((2, 3))
    elif op == "max" and first.shape is not None and len(first.shape) == 4:
        dims = {d % 4 for d in _as_int_list(args.get("dim"))}
        if dims == {2, 3}:
            op = "adaptive_max_pool"
    elif op == "clamp" and name == "hardtanh":
        lo, hi = args.get("min_val", -1.0), args.get("max_val", 1.0)
        if lo == 0 and hi == 6:
            op = "relu6"
    elif op == "clamp" and name == "clamp":
        if args.get("min") == 0 and args.get("max") == 6:
            op = "relu6"
    return Value(builder.add(op, [v.ref for v in data], attrs), out_shape)
