"""The versioned node vocabulary of :class:`~nar_plugin.graph.ArchGraph`: op types and attributes.

Everything here is part of the persisted format: graph JSON, feature indices, embeddings and the
index all record :data:`VOCAB_VERSION`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = [
    "ATTR_BINS",
    "GROUPS_DEPTHWISE",
    "GROUPS_GROUPED",
    "GROUPS_NONE",
    "NO_ATTRS",
    "OPS",
    "OP_INDEX",
    "VOCAB_VERSION",
    "NodeAttrs",
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

#: Values of :attr:`NodeAttrs.groups`.
GROUPS_NONE, GROUPS_DEPTHWISE, GROUPS_GROUPED = 0, 1, 2

#: Embedding-table sizes of the attribute columns 1..5 of :meth:`ArchGraph.feature_matrix`
#: (kernel, stride, groups, width_in bucket, width_out bucket); index 0 is "n/a" and larger
#: values are clipped into the last bucket. The encoder and the GNN baselines share these.
ATTR_BINS: tuple[int, ...] = (16, 8, 3, 32, 32)


def width_bucket(width: int | None) -> int:
    """log2 bucket of a channel/feature width: 0 = unknown, else ``1 + round(log2(width))``.

    Example:
        >>> width_bucket(64), width_bucket(768), width_bucket(None)
        (7, 11, 0)
    """
    if not width or width <= 0:
        return 0
    return 1 + round(math.log2(width))


class NodeAttrs(NamedTuple):
    """Structural attributes of a node; 0 means "not applicable / unknown".

    Attributes:
        kernel: largest kernel extent (conv/pool), e.g. 3 for a 3x3 conv.
        stride: largest stride (conv/pool).
        groups: :data:`GROUPS_NONE` (dense), :data:`GROUPS_DEPTHWISE` or
            :data:`GROUPS_GROUPED` (conv only).
        width_in: :func:`width_bucket` of the input channels / features.
        width_out: :func:`width_bucket` of the output channels / features.
    """

    kernel: int = 0
    stride: int = 0
    groups: int = 0
    width_in: int = 0
    width_out: int = 0


#: The attributes of a node without any (most nodes).
NO_ATTRS = NodeAttrs()
