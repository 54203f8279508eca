"""Coding-style invariance passes (canonical v3): one network written two ways is one graph.

Each test writes a small real network in two styles seen in the cross-library benchmark and
extracts both with :func:`nar_plugin.extract_graph` (meta device, the usual tracer choice).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from nar_plugin import extract_graph
from nar_plugin.graph import (
    CANON_VERSION,
    ArchGraph,
    GraphBuilder,
    NodeAttrs,
    canonicalize,
)


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[ArchGraph, ArchGraph]:
    ga, gb = extract_graph(a, (x,)), extract_graph(b, (x,))
    assert ga.graph_hash == gb.graph_hash, (ga.op_histogram(), gb.op_histogram())
    return ga, gb


# ------------------------------------------------------------------ DenseNet concatenation
class _Layer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.bn(x)))


class _ChainedDense(nn.Module):
    """pytorchcv: every unit returns ``cat((identity, new))``."""

    def __init__(self, c: int = 8, growth: int = 4, n: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(c + i * growth, growth) for i in range(n))
        self.head = nn.Conv2d(c + n * growth, 8, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat((x, layer(x)), dim=1)
        return self.head(x)


class _ListDense(_ChainedDense):
    """timm / torchvision: a feature list concatenated whole before every layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.head(torch.cat(feats, 1))


def test_densenet_chained_and_list_concatenation_are_one_graph() -> None:
    ga, _ = _same(_ChainedDense(), _ListDense(), torch.randn(1, 8, 16, 16))
    # one n-ary concatenation per layer input, reading every earlier feature map
    cats = [i for i, op in enumerate(ga.ops) if op == "cat"]
    assert [len(ga.predecessors(i)) for i in cats] == [2, 3, 4, 5]


def test_flattening_keeps_a_concatenation_with_other_readers() -> None:
    b = GraphBuilder()
    x = b.add_input()
    a, c = b.add("relu", [x]), b.add("sigmoid", [x])
    inner = b.add("cat", [a, c])
    outer = b.add("cat", [inner, b.add("tanh", [x])])
    b.add_output([outer, b.add("conv", [inner], NodeAttrs(3, 1, 0, 4, 4))])
    g = b.build()
    cats = [i for i, op in enumerate(g.ops) if op == "cat"]
    assert len(cats) == 2  # the inner one is still read by the conv
    assert sorted(g.ops[p] for p in g.predecessors(cats[-1])) == ["relu", "sigmoid", "tanh"]


# ------------------------------------------------------------------ global pooling
class _Net(nn.Module):
    def __init__(self, pool: nn.Module, conv_head: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.pool = pool
        self.fc = nn.Conv2d(16, 10, 1) if conv_head else nn.Linear(16, 10)
        self.conv_head = conv_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.body(x))
        return self.fc(x).flatten(1) if self.conv_head else self.fc(x.flatten(1))


def test_fixed_kernel_pool_before_the_classifier_is_global() -> None:
    x = torch.randn(1, 3, 7, 7)
    ga, _ = _same(_Net(nn.AvgPool2d(7)), _Net(nn.AdaptiveAvgPool2d(1)), x)
    assert "adaptive_avg_pool" in ga.ops and "avg_pool" not in ga.ops
    _same(_Net(nn.MaxPool2d(7)), _Net(nn.AdaptiveMaxPool2d(1)), x)
    # a 1x1-conv classifier on the pooled map is the same linear classifier
    _same(_Net(nn.AvgPool2d(7), conv_head=True), _Net(nn.AdaptiveAvgPool2d(1)), x)


class _Vgg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2), nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


def test_a_pool_flattened_into_a_wider_classifier_is_not_global() -> None:
    g = extract_graph(_Vgg(), (torch.randn(1, 3, 8, 8),))
    assert "max_pool" in g.ops and "adaptive_max_pool" not in g.ops


# ------------------------------------------------------------------ hard sigmoid / swish
class _Se(nn.Module):
    def __init__(self, written: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, padding=1)
        self.written = written

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.written:  # pytorchcv's HSwish / HSigmoid
            x = x * F.relu6(x + 3.0, inplace=True) / 6.0
            return x * (F.relu6(self.conv2(x) + 3.0) / 6.0)
        x = F.hardswish(x)
        return x * F.hardsigmoid(self.conv2(x))


def test_written_out_hard_swish_and_hard_sigmoid() -> None:
    ga, _ = _same(_Se(True), _Se(False), torch.randn(1, 3, 12, 12))
    assert {"hardswish", "hardsigmoid"} <= set(ga.ops) and "relu6" not in ga.ops


# ------------------------------------------------------------------ layer norm
class _Ln(nn.Module):
    def __init__(self, style: str, d: int = 32) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.style = style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.style == "module":
            x = self.norm(x)
        else:
            mu = x.mean(-1, keepdim=True)
            if self.style == "var":  # vit_pytorch / ConvNeXt-style hand-written norm
                var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
                x = (x - mu) / (var + 1e-5).sqrt()
            else:  # fp32 variance via mean of squares, rsqrt
                xc = x.float() - mu
                x = (xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype)
            x = x * self.norm.weight + self.norm.bias
        return self.fc2(x)


def test_written_out_layer_norm_is_layer_norm() -> None:
    x = torch.randn(2, 5, 32)
    ga, _ = _same(_Ln("module"), _Ln("var"), x)
    _same(_Ln("module"), _Ln("rsqrt"), x)
    assert ga.op_histogram()["layer_norm"] == 1 and "rms_norm" not in ga.ops


# ------------------------------------------------------------------ q/k/v projections
class _Attn(nn.Module):
    def __init__(self, fused: bool, d: int = 48, heads: int = 4) -> None:
        super().__init__()
        self.fused, self.h = fused, heads
        if fused:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        if self.fused:  # timm / open_clip / vit_pytorch
            q, k, v = self.qkv(x).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        else:  # transformers
            q, k, v = (m(x).view(b, n, self.h, d // self.h).transpose(1, 2) for m in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


def test_fused_and_separate_qkv_projections_are_one_graph() -> None:
    ga, _ = _same(_Attn(True), _Attn(False), torch.randn(2, 7, 48))
    assert ga.op_histogram()["linear"] == 2
    # nn.MultiheadAttention (a leaf with a packed in-projection) is the same graph too
    mha = nn.MultiheadAttention(48, 4, batch_first=True)

    class _Mha(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    assert extract_graph(_Mha(), (torch.randn(2, 7, 48),)).graph_hash == ga.graph_hash


# ------------------------------------------------------------------ 1x1 conv vs linear
class _Pointwise(nn.Module):
    def __init__(self, conv: bool) -> None:
        super().__init__()
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.conv = conv
        self.pw = nn.Conv2d(16, 64, 1) if conv else nn.Linear(16, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.conv:  # NCHW, as timm's ConvNeXt-V2 nano
            return F.gelu(self.pw(x))
        return F.gelu(self.pw(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)  # channels-last


def test_pointwise_conv_on_nchw_is_linear_on_channels_last() -> None:
    ga, _ = _same(_Pointwise(True), _Pointwise(False), torch.randn(1, 16, 8, 8))
    assert ga.ops.count("linear") == 1 and ga.ops.count("conv") == 1  # the 7x7 depthwise stays a conv


# ------------------------------------------------------------------ stored graphs
def test_graphs_stored_before_v3_are_upgraded_on_read() -> None:
    fresh = extract_graph(_ChainedDense(), (torch.randn(1, 8, 16, 16),))
    old = ArchGraph.from_dict(fresh.to_dict())
    b = GraphBuilder()  # the chained form exactly as an older version stored it
    x = b.add_input()
    for i in range(4):
        layer = b.add("conv", [b.add("relu", [b.add("batch_norm", [x], NodeAttrs(0, 0, 0, 4 + i, 4 + i))])])
        x = b.add("cat", [x, layer])
    b.add_output([x])
    stored = b.build(canonical=False).to_dict()
    stored["canonical"] = 2
    assert ArchGraph.from_dict({**stored, "canonical": CANON_VERSION}).ops.count("cat") == 4  # read as is
    upgraded = ArchGraph.from_dict(stored)
    last = max(i for i, op in enumerate(upgraded.ops) if op == "cat")
    assert sorted(upgraded.ops[p] for p in upgraded.predecessors(last)) == ["conv"] * 4 + ["input"]
    assert canonicalize(upgraded).graph_hash == upgraded.graph_hash  # idempotent
    assert old.graph_hash == fresh.graph_hash
