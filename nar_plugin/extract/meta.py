"""Meta-device helpers: example inputs, weight-free module copies, eager meta runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nar_plugin.errors import ExampleInputsError
from nar_plugin.extract.leaves import is_leaf

__all__ = ["is_meta_module", "infer_example_inputs", "meta_copy", "meta_args", "eager_run", "eager_ok", "fast_meta_mode"]

def is_meta_module(module: Any) -> bool:
    """True when every parameter and buffer of ``module`` lives on the meta device."""
    tensors = list(module.parameters()) + list(module.buffers())
    return bool(tensors) and all(t.is_meta for t in tensors)


def _device(module: Any) -> Any:
    import torch

    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("meta")


_SPATIAL_CANDIDATES = (224, 32, 28, 64, 96, 128, 256, 299, 512, 16)


def infer_example_inputs(module: Any) -> tuple[Any, ...]:
    """Guess example inputs from the model's config or its first layer.

    timm models carry ``pretrained_cfg["input_size"]``; otherwise the first leaf layer decides
    (conv: channels x a spatial size that runs, linear: features, embedding: token ids,
    recurrent: a short sequence). Candidates are checked by an eager forward on meta tensors.

    Raises:
        ExampleInputsError: nothing sensible could be inferred; pass ``example_inputs``.
    """
    import torch
    import torch.nn as nn

    dev = _device(module)
    cands: list[tuple[Any, ...]] = []
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        cands.append((torch.zeros((1, *cfg["input_size"]), device=dev),))
    first = next((m for m in module.modules() if is_leaf(m) and not isinstance(m, (nn.Identity, nn.Dropout))), None)
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        c = first.in_channels
        nd = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        for s in _SPATIAL_CANDIDATES:
            sizes = {1: (s * 4,), 2: (s, s), 3: (8, s // 2 or 1, s // 2 or 1)}[nd]
            cands.append((torch.zeros((1, c, *sizes), device=dev),))
    elif isinstance(first, nn.Linear):
        cands.append((torch.zeros((1, first.in_features), device=dev),))
        cands.append((torch.zeros((1, 16, first.in_features), device=dev),))
    elif isinstance(first, nn.Embedding):
        cands.append((torch.zeros((1, 16), dtype=torch.long, device=dev),))
    elif isinstance(first, (nn.LSTM, nn.GRU, nn.RNN)):
        shape = (1, 16, first.input_size) if first.batch_first else (16, 1, first.input_size)
        cands.append((torch.zeros(shape, device=dev),))
    elif isinstance(first, (nn.LayerNorm,)):
        cands.append((torch.zeros((1, 16, *first.normalized_shape), device=dev),))
    for args in cands:
        if eager_ok(module, args):
            return args
    found = type(first).__name__ if first is not None else "no recognised first layer"
    raise ExampleInputsError(
        f"cannot infer example inputs for {type(module).__name__} (first layer: {found}); "
        "pass example_inputs=(tensor, ...) shaped like a real batch"
    )


def meta_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    def f(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return torch.empty(x.shape, dtype=x.dtype, device="meta")
        if isinstance(x, (list, tuple)):
            return type(x)(f(y) for y in x)
        if isinstance(x, dict):
            return {k: f(v) for k, v in x.items()}
        return x
    return f(args)


def _meta_state(module: Any) -> dict[str, Any]:
    import torch

    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = t if t.is_meta else torch.empty(t.shape, dtype=t.dtype, device="meta")
    return state


def meta_copy(module: Any) -> Any:
    """A copy of ``module`` whose parameters and buffers are empty meta tensors.

    ``copy.deepcopy`` with a memo pre-seeded with meta replacements, so real weights are never
    copied (a 7B model costs nothing) and the user's module is left untouched.
    """
    import copy

    import torch

    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                         requires_grad=p.requires_grad)
    for buf in module.buffers():
        memo[id(buf)] = torch.empty(buf.shape, dtype=buf.dtype, device="meta")
    return copy.deepcopy(module, memo)


def fast_meta_mode() -> Any:
    """A dispatch mode that answers batch-norm on meta tensors by shape alone.

    torch computes meta batch-norm through a Python decomposition (~5 ms a call, most of an fx
    faithfulness check on a ResNet); its output shape is simply the input's. Scoped to our own
    meta runs; every other op runs unchanged.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    bn_ops = {aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default,
              aten._native_batch_norm_legit.default}

    class _FastMeta(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in bn_ops and args and getattr(args[0], "is_meta", False):
                x = args[0]
                return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))
            return func(*args, **(kwargs or {}))

    return _FastMeta()


def eager_ok(module: Any, args: tuple[Any, ...]) -> bool:
    try:
        eager_run(module, args)
        return True
    except Exception:  # noqa: BLE001 - probing candidate shapes; any failure means "not this one"
        return False


def eager_run(module: Any, args: tuple[Any, ...], counts: Counter[str] | None = None) -> Any:
    """Forward on meta tensors (weights never touched), optionally counting leaf-module calls."""
    import torch
    from torch.func import functional_call

    handles = []
    if counts is not None:
        for name, m in module.named_modules():
            if is_leaf(m):
                handles.append(m.register_forward_hook(
                    lambda *_a, _n=name: counts.__setitem__(_n, counts[_n] + 1)))
    try:
        with torch.no_grad(), fast_meta_mode():
            if is_meta_module(module) or not list(module.parameters()):
                return module(*meta_args(args))
            return functional_call(module, _meta_state(module), meta_args(args))
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------ fx
