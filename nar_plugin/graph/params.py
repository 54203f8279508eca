"""Parameter shapes as a coding-style-free fingerprint of a network (issue 16).

Two libraries that implement one network hold the same weight tensors, up to how they are
written: a fused q/k/v projection (``[3C, C]``) or three (``[C, C]`` each), a 1x1 convolution
(``[O, I, 1, 1]``) or a linear layer (``[O, I]``), a linear weight stored ``[in, out]``
(GPT-2's ``Conv1D``, ONNX ``MatMul`` constants) or ``[out, in]``, a class token ``[1, 1, C]`` or
``[C]``. :func:`shape_tokens` writes each parameter's shape in one canonical form so that those
styles give the same multiset:

* a kernel ``[O, I, kh, kw]`` is the matrix ``[O, I*kh*kw]`` it applies to each window: a
  1x1 convolution is its linear layer, a patch-embedding convolution (ViT: ``[D, 3, 16, 16]``)
  is the linear layer over flattened patches some libraries write, a 7x7 "fc6" convolution is
  the linear layer over the flattened 7x7 map;
* size-1 dimensions are dropped (``[1, 1, C]`` -> ``C``);
* the two remaining dimensions are sorted, largest first (transposed storage is one token);
* a matrix whose larger side is exactly three times the smaller counts as three square
  matrices (fused q/k/v), and a vector as long as that larger side as three vectors (its bias);
* a vector (bias, norm scale, class token) is ``v<n>``; a scalar is left out.

A variant of a design (a deep stem, a patch of 32 instead of 16, an extra norm, BatchNorm vs no
BatchNorm) changes some tokens; the same network with another task head differs by the head's
matrix and bias only. :func:`shape_difference` measures that, and
:func:`nar_plugin.evaluation.fine_structure.shapes_near` turns it into the structural half of
the ``near-duplicate`` relation. Read from shapes only (meta tensors, ``pt2`` JSON, ONNX
initializer dims): no weights.

Standard library only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from math import prod

__all__ = ["param_metadata", "shape_difference", "shape_tokens", "unmatched"]


def _tokens(shape: Sequence[int]) -> list[str]:
    dims = [int(d) for d in shape]
    if len(dims) > 2:  # a convolution kernel is a matrix over (in channels x window)
        dims = [dims[0], prod(dims[1:])]
    dims = sorted((d for d in dims if d != 1), reverse=True)
    if not dims:
        return []
    if len(dims) == 1:
        return [f"v{dims[0]}"]
    if dims[0] == 3 * dims[1]:
        return [f"{dims[1]}x{dims[1]}"] * 3
    return [f"{dims[0]}x{dims[1]}"]


def shape_tokens(shapes: Iterable[Sequence[int] | None]) -> dict[str, int]:
    """Canonical token -> count over the parameter shapes (``None`` entries are skipped).

    A vector of length ``3C`` in a model that holds a fused ``[3C, C]`` matrix counts as three
    ``v<C>`` (the fused projection's bias, which other libraries write as three)."""
    out: Counter[str] = Counter()
    fused: set[int] = set()
    for shape in shapes:
        if shape is not None:
            toks = _tokens(shape)
            if len(toks) == 3 and not toks[0].startswith("v"):
                fused.add(3 * int(toks[0].split("x")[0]))
            out.update(toks)
    for n in sorted(fused):
        count = out.pop(f"v{n}", 0)
        if count:
            out[f"v{n // 3}"] += 3 * count
    return dict(sorted(out.items()))


def _numel(shape: Sequence[int] | None) -> int:
    """Elements of a tensor of ``shape`` (0 when unknown or symbolic)."""
    if shape is None or any(int(d) < 0 for d in shape):
        return 0
    return prod(int(d) for d in shape)


def param_metadata(shapes: Iterable[Sequence[int] | None]) -> dict[str, object]:
    """What every extraction path records about a model's parameters, from their shapes only:
    ``{"num_params": n, "param_shapes": shape_tokens(shapes)}`` (unknown or symbolic shapes
    count 0 and give no token)."""
    shapes = list(shapes)
    return {"num_params": sum(_numel(s) for s in shapes), "param_shapes": shape_tokens(shapes)}


def unmatched(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(tokens of a missing from b, tokens of b missing from a)``, with multiplicity."""
    ca, cb = Counter(a), Counter(b)
    return dict(ca - cb), dict(cb - ca)


def shape_difference(a: Mapping[str, int], b: Mapping[str, int], *,
                     matrices_only: bool = False) -> tuple[tuple[int, int], tuple[int, int]]:
    """How two token multisets differ: ``((fewer, more) matrices, (fewer, more) vectors)``.

    For matrices and vectors (``v<n>`` tokens) separately, the tokens of ``a`` missing from
    ``b`` and those of ``b`` missing from ``a`` (with multiplicity), smaller count first: ``(0, 2)``
    means one side holds every tensor of the other plus two more (a classifier's weight and
    bias). ``matrices_only`` reports ``(0, 0)`` for vectors (for parameters whose vectors were
    rewritten, e.g. an ONNX export with BatchNorm folded into the convolutions' biases).
    """
    d_ab, d_ba = unmatched(a, b)

    def split(d: Mapping[str, int]) -> tuple[int, int]:
        vec = sum(n for t, n in d.items() if t.startswith("v"))
        return sum(d.values()) - vec, vec

    (ma, va), (mb, vb) = split(d_ab), split(d_ba)
    vectors = (0, 0) if matrices_only else (min(va, vb), max(va, vb))
    return (min(ma, mb), max(ma, mb)), vectors
