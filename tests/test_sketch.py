"""The floor of issue 16: relative width features, the structural sketch and the hybrid
embedding (nar_plugin.model.sketch, EncoderConfig.relative_widths / sketch_dim), and the NAS cap
of the training selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nar_plugin.extract import extract_graph
from nar_plugin.graph import ArchGraph
from nar_plugin.model.encoder import EncoderConfig, NAREncoder, config_hash, relative_width_columns
from nar_plugin.model.features import collate, prepare
from nar_plugin.model.sketch import compose, edge_tokens, node_tokens, structural_sketch
from nar_plugin.training.data import CorpusEntry, select_items


class _Net(nn.Module):
    """conv-bn-relu stem, one residual bottleneck (x4 expansion), pool, linear head."""

    def __init__(self, w: int, cin: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(w, w // 4, 1), nn.BatchNorm2d(w // 4), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(w // 4, w, 3, padding=1), nn.BatchNorm2d(w))
        self.head = nn.Linear(w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.expand(self.reduce(x)))
        return self.head(x.mean((2, 3)))


class _Other(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32), nn.LayerNorm(32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


@pytest.fixture(scope="module")
def graphs() -> dict[str, ArchGraph]:
    return {"narrow": extract_graph(_Net(32), example_inputs=(torch.randn(1, 3, 32, 32),)),
            # every width x4, input channels and classes included: a global width scaling
            "wide": extract_graph(_Net(128, 12, 40), example_inputs=(torch.randn(1, 12, 32, 32),)),
            # the realistic case: a wider network on the same input, same classes
            "wide3": extract_graph(_Net(128), example_inputs=(torch.randn(1, 3, 32, 32),)),
            "other": extract_graph(_Other(), example_inputs=(torch.randn(2, 32),))}


def test_widths_differ_in_the_graph_but_not_in_the_tokens(graphs: dict[str, ArchGraph]) -> None:
    narrow, wide = graphs["narrow"], graphs["wide"]
    assert narrow.graph_hash != wide.graph_hash  # absolute widths are in the IR
    assert node_tokens(narrow) == node_tokens(wide)
    assert any("/d-2" in t for t in node_tokens(narrow))  # the 1x1 reduce: width / 4
    # only the stem (3 -> w) and the head (w -> 10) change ratio when the input stays 3 channels
    differ = [(a, b) for a, b in zip(node_tokens(narrow), node_tokens(graphs["wide3"])) if a != b]
    assert len(differ) == 2 and {a.split("/")[0] for a, _ in differ} == {"conv", "linear"}


def test_sketch_is_unit_norm_deterministic_and_width_invariant(graphs: dict[str, ArchGraph]) -> None:
    a = structural_sketch(graphs["narrow"], 64)
    assert a.shape == (64,) and np.isclose(np.linalg.norm(a), 1.0)
    np.testing.assert_array_equal(a, structural_sketch(graphs["narrow"], 64))
    np.testing.assert_allclose(a, structural_sketch(graphs["wide"], 64))
    assert float(a @ structural_sketch(graphs["wide3"], 64)) > 0.85
    assert float(a @ structural_sketch(graphs["other"], 64)) < 0.5


def test_sketch_ignores_node_order() -> None:
    conv, pool, none = (3, 1, 0, 7, 7), (3, 2, 0, 0, 0), (0,) * 5
    one = ArchGraph(["input", "conv", "max_pool", "relu", "add", "output"], [none, conv, pool, none, none, none],
                    [(0, 1), (0, 2), (1, 3), (3, 4), (2, 4), (4, 5)])
    # the same graph with the two branches listed the other way round
    two = ArchGraph(["input", "max_pool", "conv", "relu", "add", "output"], [none, pool, conv, none, none, none],
                    [(0, 2), (0, 1), (2, 3), (3, 4), (1, 4), (4, 5)])
    np.testing.assert_allclose(structural_sketch(one, 32), structural_sketch(two, 32))
    three = ArchGraph(one.ops, one.attrs, [(0, 1), (0, 2), (2, 3), (1, 4), (3, 4), (4, 5)])  # rewired
    assert not np.allclose(structural_sketch(one, 32), structural_sketch(three, 32))


def test_sketch_dim_must_be_even_and_positive(graphs: dict[str, ArchGraph]) -> None:
    for bad in (0, 7, -2):
        with pytest.raises(ValueError, match="even"):
            structural_sketch(graphs["narrow"], bad)


def test_compose_mixes_cosines_with_the_weight(graphs: dict[str, ArchGraph]) -> None:
    rng = np.random.default_rng(1)
    learned = rng.normal(size=(2, 16))
    learned /= np.linalg.norm(learned, axis=1, keepdims=True)
    gs = [graphs["narrow"], graphs["other"]]
    w = 0.3
    out = compose(learned, gs, 32, w)
    assert out.shape == (2, 48) and np.allclose(np.linalg.norm(out, axis=1), 1.0)
    sk = [structural_sketch(g, 32) for g in gs]
    want = (1 - w) * float(learned[0] @ learned[1]) + w * float(sk[0] @ sk[1])
    assert float(out[0] @ out[1]) == pytest.approx(want, abs=1e-5)
    np.testing.assert_allclose(compose(learned, gs, 0, 0.0), learned, rtol=1e-6)
    with pytest.raises(ValueError, match="graphs"):
        compose(learned, gs[:1], 32, w)


def test_relative_width_columns() -> None:
    x = torch.tensor([[2, 3, 1, 0, 6, 8], [2, 1, 1, 0, 8, 6], [16, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 9]])
    out = relative_width_columns(x)
    assert out[:, 4].tolist() == [18, 14, 0, 0]  # 16 + out - in; unknown -> 0
    assert out[:, 5].tolist() == [0, 0, 0, 0]
    assert out[:, :4].tolist() == x[:, :4].tolist() and x[0, 4] == 6  # a copy


def test_relative_widths_encoder_ignores_absolute_width(graphs: dict[str, ArchGraph]) -> None:
    torch.manual_seed(0)
    rel = NAREncoder(EncoderConfig(hidden=16, out_dim=16, relative_widths=True)).eval()
    torch.manual_seed(0)
    absolute = NAREncoder(EncoderConfig(hidden=16, out_dim=16)).eval()
    batch = collate([prepare(graphs["narrow"]), prepare(graphs["wide"])])
    with torch.no_grad():
        r, a = rel(batch), absolute(batch)
    torch.testing.assert_close(r[0], r[1])
    assert not torch.allclose(a[0], a[1])


def test_config_validation_and_legacy_hash() -> None:
    with pytest.raises(ValueError, match="sketch"):
        EncoderConfig(sketch_dim=7)
    with pytest.raises(ValueError, match="sketch"):
        EncoderConfig(sketch_weight=0.5)
    legacy = {k: v for k, v in EncoderConfig().to_dict().items()
              if k not in ("relative_widths", "sketch_dim", "sketch_weight")}
    old = EncoderConfig.from_dict(legacy)  # a weights JSON written before the fields existed
    assert (old.relative_widths, old.sketch_dim, old.embedding_dim) == (False, 0, 128)
    # the hash of a legacy config is what it was before the fields existed (shipped encoder
    # nar-v1.m1-464b5fe1edf5-caf7b88c): old index entries and tags keep their version
    assert config_hash(old) == "464b5fe1edf5"
    new = EncoderConfig(out_dim=64, sketch_dim=64, sketch_weight=0.5, relative_widths=True)
    assert new.embedding_dim == 128 and config_hash(new) != config_hash(old)


def _entries() -> list[CorpusEntry]:
    g = ArchGraph(["input", "relu", "output"], [(0,) * 5] * 3, [(0, 1), (1, 2)])
    out = [CorpusEntry(f"timm:m{i}", f"fam{i % 10}", g, "timm") for i in range(40)]
    out += [CorpusEntry(f"nas:c{i}", f"cell{i // 4}", g, "nas") for i in range(200)]
    return out


def test_nas_cap_keeps_whole_families_under_the_fraction() -> None:
    items = select_items(_entries(), 3000, 40, seed=0, nas_fraction=0.2)
    nas = [e for e in items if e.source == "nas"]
    assert len([e for e in items if e.source == "timm"]) == 40
    assert 0 < len(nas) <= 0.2 * len(items)
    fams = {e.family for e in nas}
    assert all(sum(e.family == f for e in nas) == 4 for f in fams)  # whole families
    again = select_items(_entries(), 3000, 40, seed=0, nas_fraction=0.2)
    assert [e.key for e in again] == [e.key for e in items]
    assert len(select_items(_entries(), 3000, 40, seed=0)) == 240  # no cap by default
    only_nas = [e for e in _entries() if e.source == "nas"]
    assert len(select_items(only_nas, 3000, 40, seed=0, nas_fraction=0.2)) == 200  # nothing to balance


def test_sketch_version_2_writes_relu6_as_relu_and_version_1_is_kept() -> None:
    """The same MobileNet-style block with ReLU (pytorchcv) and ReLU6 (timm, transformers): one
    sketch in version 2; version 1 (weights shipped before it) still tells them apart, and an
    encoder config records which one it embeds with."""
    def block(act: type[nn.Module]) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), act(),
                             nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), act(),
                             nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), act())

    x = (torch.randn(1, 3, 32, 32),)
    relu, relu6 = extract_graph(block(nn.ReLU), example_inputs=x), extract_graph(block(nn.ReLU6), example_inputs=x)
    assert relu.op_histogram()["relu"] == 3 and relu6.op_histogram()["relu6"] == 3
    np.testing.assert_allclose(structural_sketch(relu, 64, 2), structural_sketch(relu6, 64, 2))
    assert float(structural_sketch(relu, 64, 1) @ structural_sketch(relu6, 64, 1)) < 0.5
    with pytest.raises(ValueError, match="sketch version"):
        structural_sketch(relu, 64, 99)
    legacy = EncoderConfig.from_dict({k: v for k, v in EncoderConfig(sketch_dim=64, sketch_weight=0.8).to_dict().items()
                                      if k != "sketch_version"})
    assert legacy.sketch_version == 1  # weights written before the field: version 1, same hash
    assert config_hash(legacy) == config_hash(EncoderConfig(sketch_dim=64, sketch_weight=0.8, sketch_version=1))
    assert config_hash(legacy) != config_hash(EncoderConfig(sketch_dim=64, sketch_weight=0.8, sketch_version=2))
    with pytest.raises(ValueError, match="sketch_version"):
        EncoderConfig(sketch_version=7)


class _Blocks(nn.Module):
    """Two transformer blocks, ``pre``-norm (GPT-2) or ``parallel`` (GPT-J: both branches read
    the block input): the same ops, op counts and op pairs, wired differently."""

    def __init__(self, kind: str, d: int = 32) -> None:
        super().__init__()
        self.kind = kind
        self.embed, self.pos = nn.Linear(d // 4, d), nn.Parameter(torch.zeros(5, d))
        self.n1 = nn.ModuleList([nn.LayerNorm(d) for _ in range(2)])
        self.n2 = nn.ModuleList([nn.LayerNorm(d) for _ in range(2)])
        self.attn = nn.ModuleList([nn.Linear(d, d) for _ in range(2)])
        self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos  # blocks read a residual add, as in a real network
        for n1, n2, attn, mlp in zip(self.n1, self.n2, self.attn, self.mlp):
            if self.kind == "pre":
                x = x + attn(n1(x))
                x = x + mlp(n2(x))
            else:
                x = x + attn(n1(x)) + mlp(n2(x))
        return x


def test_sketch_version_3_sees_the_residual_wiring() -> None:
    """Pre-norm and parallel blocks have the same node and edge tokens (one version-2 sketch);
    version 3 marks which adds and norms feed several consumers and tells them apart, while the
    same design at another width keeps one sketch."""
    x = (torch.randn(1, 5, 8),)
    pre, par = extract_graph(_Blocks("pre"), example_inputs=x), extract_graph(_Blocks("parallel"), example_inputs=x)
    assert pre.op_histogram() == par.op_histogram()
    np.testing.assert_allclose(structural_sketch(pre, 64, 2), structural_sketch(par, 64, 2))
    assert sorted(edge_tokens(pre, version=2)) == sorted(edge_tokens(par, version=2))
    assert float(structural_sketch(pre, 64, 3) @ structural_sketch(par, 64, 3)) < 0.97  # the node half is equal
    wide = extract_graph(_Blocks("parallel", 64), example_inputs=(torch.randn(1, 5, 16),))
    np.testing.assert_allclose(structural_sketch(par, 64, 3), structural_sketch(wide, 64, 3))
    assert any(t.startswith("add^2>") for t in edge_tokens(pre)) and any(t.startswith("add^1>") for t in edge_tokens(par))
    assert not any("^" in t for t in edge_tokens(pre, version=2))
