"""Reference PyTorch implementations of the DARTS and NAS-Bench-201 networks.

They follow the published code (DARTS ``model.py`` / ``operations.py``; xautodl ``TinyNetwork``
with ``InferCell``) layer for layer, and exist to check that :mod:`nar_plugin.corpus.nas` writes
the graph ``extract_graph`` finds in a real model: the tests build these on meta, extract them and
compare graph hashes with the directly generated graphs.

One deliberate difference from xautodl: an NB201 ``none`` edge is left out instead of being
computed as ``x.mul(0.)`` and summed (xautodl's ``Zero`` op; its cell sums with ``sum()`` from
``0``). Traced literally, those add ``mul``/``add`` nodes that compute nothing; see
``docs/corpus.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from nar_plugin.corpus.nas import DartsGenotype, Nb201Cell

__all__ = ["DartsNetworkCIFAR", "Nb201TinyNetwork"]


# ------------------------------------------------------------------ DARTS operations.py
class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False),
                                nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=stride, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


DARTS_OP_FACTORY: dict[str, Any] = {
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, stride=s, padding=1),
    "skip_connect": lambda c, s: Identity() if s == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, s: SepConv(c, c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, c, 5, s, 2),
    "dil_conv_3x3": lambda c, s: DilConv(c, c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, c, 5, s, 4, 2),
}


# ------------------------------------------------------------------ DARTS model.py
class DartsCell(nn.Module):
    def __init__(self, genotype: DartsGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        cell = genotype.reduce if reduction else genotype.normal
        op_names, indices = zip(*cell)
        self._steps = len(op_names) // 2
        self._concat = list(range(2, 6))
        self.multiplier = len(self._concat)
        self.reduction = reduction
        self._ops = nn.ModuleList(DARTS_OP_FACTORY[name](c, 2 if reduction and idx < 2 else 1)
                                  for name, idx in zip(op_names, indices))
        self._indices = indices

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        for i in range(self._steps):
            h1 = self._ops[2 * i](states[self._indices[2 * i]])
            h2 = self._ops[2 * i + 1](states[self._indices[2 * i + 1]])
            states += [h1 + h2]
        return torch.cat([states[i] for i in self._concat], dim=1)


class DartsNetworkCIFAR(nn.Module):
    """DARTS ``NetworkCIFAR`` in eval mode (no auxiliary head, no drop path)."""

    def __init__(self, genotype: DartsGenotype, C: int = 16, layers: int = 8, num_classes: int = 10) -> None:  # noqa: N803
        super().__init__()
        stem_multiplier = 3
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = DartsCell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))


# ------------------------------------------------------------------ NAS-Bench-201 (xautodl)
class _Nb201ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False),
                                nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False),
                                nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResNetBasicblock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv_a = _Nb201ReLUConvBN(inplanes, planes, 3, stride, 1)
        self.conv_b = _Nb201ReLUConvBN(planes, planes, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        basicblock = self.conv_b(self.conv_a(x))
        residual = self.downsample(x)
        return residual + basicblock


class Nb201InferCell(nn.Module):
    def __init__(self, cell: Nb201Cell, c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        self.cell = cell
        for to, frm in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)):
            op = cell.op(to, frm)
            if op == "none":
                continue
            if op == "skip_connect":
                layer: nn.Module = Identity()
            elif op == "avg_pool_3x3":
                layer = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
            else:
                k = 1 if op == "nor_conv_1x1" else 3
                layer = _Nb201ReLUConvBN(c, c, k, 1, k // 2)
            self.edges[f"{to}<-{frm}"] = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x]
        for to in (1, 2, 3):
            out = None
            for frm in range(to):
                name = f"{to}<-{frm}"
                if name not in self.edges or nodes[frm] is None:
                    continue
                h = self.edges[name](nodes[frm])
                out = h if out is None else out + h
            nodes.append(out)
        return nodes[3]


class Nb201TinyNetwork(nn.Module):
    """xautodl ``TinyNetwork``: stem, 3 stages of ``N`` cells, residual reductions, head."""

    def __init__(self, cell: Nb201Cell, C: int = 16, N: int = 5, num_classes: int = 10) -> None:  # noqa: N803
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        layer_channels = [C] * N + [C * 2] + [C * 2] * N + [C * 4] + [C * 4] * N
        layer_reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        c_prev = C
        self.cells = nn.ModuleList()
        for c_curr, reduction in zip(layer_channels, layer_reductions):
            self.cells.append(ResNetBasicblock(c_prev, c_curr, 2) if reduction else Nb201InferCell(cell, c_curr))
            c_prev = c_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        out = self.lastact(feature)
        out = self.global_pooling(out)
        out = out.view(out.size(0), -1)
        return out, self.classifier(out)
