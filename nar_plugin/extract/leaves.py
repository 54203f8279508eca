"""The torch.nn layers lowered directly (fx treats them as leaves): one table, built once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nar_plugin.extract.ops import EMPTY, Value, conv_attrs, dense_attrs, pool_attrs
from nar_plugin.graph import GraphBuilder

__all__ = ["leaf_table", "is_leaf"]

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


def is_leaf(m: Any) -> bool:
    return type(m) in leaf_table()


