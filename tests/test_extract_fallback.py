"""Real-tensor fallback (nar_plugin.extract.real): modules the meta device cannot run."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nar_plugin import extract_graph
from nar_plugin.errors import GraphExtractionError
from nar_plugin.extract.torch_module import graph_from_module, meta_copy


class _NumpyGate(nn.Module):
    """Computes a gate in numpy (meta tensors have no data to hand to numpy)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        scale = float(np.tanh(y.mean().cpu().numpy()))  # numpy round trip
        y = self.conv2(y) * scale + y
        return self.fc(y.mean((2, 3)))


class _ItemLoop(nn.Module):
    """Repeats a block as many times as a tensor value says (``.item()`` + Python loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 2)
        self.register_buffer("depth", torch.tensor(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for _ in range(int(self.depth.item())):
            h = h + torch.relu(self.block(h))
        return self.out(h)


class _DataDependent(nn.Module):
    """Keeps only the tokens whose score is positive (a data-dependent shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.score, self.proj = nn.Linear(8, 1), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.score(x).squeeze(-1) > 0
        kept = x[keep]
        if kept.shape[0] == 0:
            kept = x.reshape(-1, 8)
        return self.proj(kept).sum(0)


def test_numpy_in_forward_fails_on_meta_and_is_traced_with_real_tensors() -> None:
    model = _NumpyGate()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(GraphExtractionError):  # the meta path alone cannot do it
        graph_from_module(meta_copy(model), (x.to("meta"),))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    g = extract_graph(model, (x,))
    assert g.metadata["tracer"] in ("export-real", "eager-real") and g.metadata["meta_error"]
    h = g.op_histogram()
    assert h["conv"] == 2 and h["linear"] == 1 and h["relu"] == 1 and h["add"] == 1
    # the user's module is used as is: same weights, training flag restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())
    assert not any(p.is_meta for p in model.parameters())


def test_item_and_python_loop_and_inferred_inputs() -> None:
    model = _ItemLoop()
    g = extract_graph(model)  # inputs derived as on meta (first layer: Linear(16, ...))
    assert g.metadata["tracer"] in ("export-real", "eager-real")
    assert g.op_histogram()["linear"] == 5  # in, 3 unrolled blocks, out
    assert g.op_histogram()["add"] == 3


def test_data_dependent_shape() -> None:
    g = extract_graph(_DataDependent(), (torch.randn(2, 5, 8),))
    assert g.metadata["tracer"] in ("export-real", "eager-real")
    # the score only selects rows: comparisons and masks are constants in the IR on every path
    h = g.op_histogram()
    assert h["linear"] == 1 and h["sum"] == 1 and h["input"] == 1


def test_eager_tracer_lowers_like_the_meta_path() -> None:
    """The eager-real tracer on a plain module gives the meta path's graph."""
    from nar_plugin.extract.real import _eager_graph

    class _Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.conv(x)))
            return self.fc(torch.cat([y, y * torch.sigmoid(y)], 1).mean((2, 3))[:, :8])

    model, x = _Plain().eval(), torch.randn(1, 3, 8, 8)
    assert _eager_graph(model, (x,), {}, {}).graph_hash == extract_graph(model, (x,)).graph_hash


def test_meta_module_without_tensors_of_its_own_gives_the_typed_error() -> None:
    model = meta_copy(_NumpyGate())
    with pytest.raises(GraphExtractionError) as err:
        extract_graph(model, (torch.empty(1, 3, 16, 16, device="meta"),))
    assert "fx" in err.value.attempts and "export" in err.value.attempts
    assert not any(k.endswith("-real") for k in err.value.attempts)


def test_real_module_failing_every_tracer_gives_the_typed_error() -> None:
    class _Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the user's own bug")

    with pytest.raises(GraphExtractionError) as err:
        extract_graph(_Broken(), (torch.randn(1, 4),))
    assert {"export-real", "eager-real"} <= set(err.value.attempts)
