"""Meta-device helpers: example inputs, weight-free module copies, eager meta runs."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

from nar_plugin.errors import ExampleInputsError
from nar_plugin.extract.leaves import is_leaf

logger = logging.getLogger(__name__)

__all__ = [
    "EagerRecord",
    "eager_ok",
    "eager_run",
    "example_candidates",
    "fast_meta_mode",
    "infer_example_inputs",
    "is_meta_module",
    "meta_args",
    "meta_copy",
    "quiet_torch",
]


def is_meta_module(module: Any) -> bool:
    """True when every parameter and buffer of ``module`` lives on the meta device."""
    found = False
    for m in module.modules():  # direct dict reads: named_parameters() costs ~5x more
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is None:
                continue
            if not t.is_meta:
                return False
            found = True
    return found


def _device(module: Any) -> Any:
    import torch

    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("meta")


_SPATIAL_CANDIDATES = (224, 32, 28, 64, 96, 128, 256, 299, 512, 16)


def example_candidates(module: Any, device: Any) -> tuple[list[tuple[Any, ...]], Any]:
    """Candidate example inputs on ``device`` (see :func:`infer_example_inputs`), most likely
    first, and the first leaf layer they were derived from (``None`` when none is recognised)."""
    import torch
    from torch import nn

    dev = device
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
    return cands, first


def infer_example_inputs(module: Any, record: EagerRecord | None = None) -> tuple[Any, ...]:
    """Guess example inputs from the model's config or its first layer.

    timm models carry ``pretrained_cfg["input_size"]``; otherwise the first leaf layer decides
    (conv: channels x a spatial size that runs, linear: features, embedding: token ids,
    recurrent: a short sequence). Candidates are checked by an eager forward on meta tensors.

    Args:
        module: the model.
        record: filled with the leaf calls of the successful forward (see :func:`eager_run`), so
            a caller that needs that forward anyway does not run it twice.

    Raises:
        ExampleInputsError: nothing sensible could be inferred; pass ``example_inputs``.
    """
    cands, first = example_candidates(module, _device(module))
    last: tuple[tuple[Any, ...], Exception] | None = None
    for args in cands:
        try:
            eager_run(module, args, record)
            return args
        except Exception as e:  # noqa: BLE001 - probing candidate shapes; the last error is reported
            last = (args, e)
    found = type(first).__name__ if first is not None else "no recognised first layer"
    msg = f"cannot infer example inputs for {type(module).__name__} (first layer: {found})"
    if last is None:
        raise ExampleInputsError(f"{msg}; pass example_inputs=(tensor, ...) shaped like a real batch")
    args, err = last
    shapes = ", ".join(str(tuple(a.shape)) for a in args if hasattr(a, "shape"))
    text = " ".join(str(err).split())
    raise ExampleInputsError(
        f"{msg}: the forward raised {type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''} "
        f"(last inputs tried: {shapes}). If that error is in your model, fix it; otherwise pass "
        "example_inputs=(tensor, ...) shaped like a real batch"
    ) from err


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


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def _conv_shape(x: Any, w: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                groups: int = 1) -> tuple[int, ...] | None:
    """Output shape of a batched convolution, ``None`` for anything torch should judge itself
    (unbatched input, channel mismatch, an empty output: torch raises the real error)."""
    nd = w.dim() - 2
    if x.dim() != nd + 2 or x.shape[1] != w.shape[1] * int(groups):
        return None
    s, d = _ntuple(stride, nd), _ntuple(dilation, nd)
    if isinstance(padding, str):
        if padding == "same" and set(s) == {1}:
            return (x.shape[0], w.shape[0], *x.shape[2:])
        if padding != "valid":
            return None
        padding = 0
    p = _ntuple(padding, nd)
    out = [(x.shape[2 + i] + 2 * p[i] - d[i] * (w.shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(nd)]
    return (x.shape[0], w.shape[0], *out) if min(out) > 0 else None


def _shape_rules() -> dict[Any, Any]:
    """torch functions whose meta result is a formula of the input shapes: function -> rule.

    On the meta device torch runs these through Python decompositions (layer norm, addmm,
    batch norm, convolution, attention: 1-5 ms a call; even a broadcasting ``add`` goes through
    the Python reference implementation), though only the shape is wanted. A rule returns the
    result (an empty meta tensor, or the input itself for an in-place op) or ``None`` to let
    torch answer.
    """
    import torch
    import torch.nn.functional as F

    def empty(shape: Any, like: Any, dtype: Any = None) -> Any:
        return torch.empty(tuple(shape), dtype=dtype or like.dtype, device="meta")

    # Each rule checks what the op would check: a shape that would make torch raise must still
    # raise (example-input inference probes candidate shapes by whether the forward runs).
    def channel_norm(x: Any, *a: Any, **_k: Any) -> Any:  # batch / instance norm
        stats = [t for t in a[:4] if isinstance(t, torch.Tensor)]
        if x.dim() < 2 or any(t.numel() != x.shape[1] for t in stats):
            return None
        return empty(x.shape, x)

    def shaped_norm(x: Any, normalized_shape: Any, *_a: Any, **_k: Any) -> Any:  # layer / RMS norm
        ns = tuple(normalized_shape) if isinstance(normalized_shape, (list, tuple)) else (normalized_shape,)
        return empty(x.shape, x) if tuple(x.shape[x.dim() - len(ns):]) == ns else None

    def group_norm(x: Any, groups: int, *_a: Any, **_k: Any) -> Any:
        return empty(x.shape, x) if x.dim() >= 2 and x.shape[1] % int(groups) == 0 else None

    def linear(x: Any, w: Any, *_a: Any, **_k: Any) -> Any:
        if w.dim() != 2 or x.dim() < 1 or x.shape[-1] != w.shape[1]:
            return None
        return empty((*x.shape[:-1], w.shape[0]), x)

    def sdpa(q: Any, k: Any, v: Any, *_a: Any, **_kw: Any) -> Any:
        if q.dim() < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.dim() != k.dim():
            return None
        return empty((*q.shape[:-1], v.shape[-1]), q)

    def conv(x: Any, w: Any, *a: Any, **kw: Any) -> Any:
        shape = _conv_shape(x, w, *a, **kw)
        return None if shape is None else empty(shape, x)

    def binary(a: Any, b: Any, *_a: Any, **_k: Any) -> Any:
        if isinstance(b, torch.Tensor):
            return empty(torch.broadcast_shapes(a.shape, b.shape), a, torch.result_type(a, b))
        if isinstance(b, (int, float, bool)):
            return empty(a.shape, a, torch.result_type(a, b))
        return None

    def inplace(a: Any, b: Any, *_a: Any, **_k: Any) -> Any:
        if isinstance(b, (int, float, bool)) or (
                isinstance(b, torch.Tensor) and torch.broadcast_shapes(a.shape, b.shape) == a.shape):
            return a
        return None

    rules: dict[Any, Any] = {
        F.batch_norm: channel_norm, F.instance_norm: channel_norm, F.layer_norm: shaped_norm,
        F.group_norm: group_norm,
        F.linear: linear, F.scaled_dot_product_attention: sdpa,
        torch.conv1d: conv, torch.conv2d: conv, torch.conv3d: conv,
    }
    for name in ("add", "sub", "mul", "div"):
        rules[getattr(torch, name)] = binary
        rules[getattr(torch.Tensor, name)] = binary
        rules[getattr(torch.Tensor, name + "_")] = inplace
    if hasattr(F, "rms_norm"):
        rules[F.rms_norm] = shaped_norm
    return rules


_RULES: dict[Any, Any] | None = None


def fast_meta_mode() -> Any:
    """A torch-function mode that answers heavy ops on meta tensors by shape alone.

    Layer norm, batch norm, linear, convolution, attention and broadcasting arithmetic on meta
    tensors run Python decompositions that dominate an eager meta forward; their result shape
    is a formula (:func:`_shape_rules`). Scoped to our own meta runs; every other call runs
    unchanged, and any call a rule does not cover (unbatched, odd arguments) falls through to
    torch.
    """
    from torch.overrides import TorchFunctionMode

    global _RULES
    if _RULES is None:
        _RULES = _shape_rules()
    rules = _RULES

    class _FastMeta(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            rule = rules.get(func)
            if rule is not None and args and getattr(args[0], "is_meta", False):
                try:
                    out = rule(*args, **kwargs)
                except (TypeError, ValueError, IndexError, AttributeError, RuntimeError):
                    out = None
                if out is not None:
                    return out
            return func(*args, **kwargs)

    return _FastMeta()


class _ThreadSink:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: writes from one thread go to a buffer,
    every other thread's writes go through to the real stream untouched."""

    def __init__(self, real: Any, thread: int, sink: io.StringIO) -> None:
        self._real, self._thread, self._sink = real, thread, sink

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread:
            return self._sink.write(text)
        return int(self._real.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence torch's tracing chatter for the duration of one extraction: warnings, log lines
    (``W1130 ... dimension ... specialized``), and the partial graphs torch.export prints to
    ``sys.stderr`` when it fails. Everything is restored afterwards.

    Scoped and reversible: torch's logger levels and the streams are put back when the
    extraction returns or raises; only this thread's writes are captured (other threads print
    as usual), and what torch printed is kept in our debug log (``nar_plugin.extract.meta``), so
    the reason for a fallback is still there for whoever asks for it.
    """
    # torch's loggers inherit the level of "torch" unless they set their own: raising "torch"
    # and the few with an explicit level silences all of them (setLevel clears logging's cache
    # of every logger, so it is called for a handful, not for all ~200)
    loggers = [logging.getLogger("torch")]
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if (name.startswith("torch.") and "__" not in name and isinstance(lg, logging.Logger)
                and 0 < lg.level < logging.CRITICAL):
            loggers.append(lg)
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    streams = (sys.stdout, sys.stderr)
    me = threading.get_ident()
    sys.stdout, sys.stderr = _ThreadSink(streams[0], me, sink), _ThreadSink(streams[1], me, sink)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout, sys.stderr = streams
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)
        if sink.getvalue().strip():
            logger.debug("torch printed during extraction:\n%s", sink.getvalue().strip())


class EagerRecord:
    """What an eager meta forward saw: leaf-module calls, their input shapes and outputs.

    Attributes:
        counts: calls per leaf-module name.
        in_shapes: first-input shape of each call, per name, in call order.
        outputs: output of each call (meta tensors, by reference), per name, in call order.
        result: the forward's return value.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.in_shapes: dict[str, list[tuple[int, ...] | None]] = {}
        self.outputs: dict[str, list[Any]] = {}
        self.result: Any = None

    def hook(self, name: str) -> Any:
        def f(_m: Any, inputs: tuple[Any, ...], output: Any) -> None:
            self.counts[name] += 1
            first = inputs[0] if inputs else None
            self.in_shapes.setdefault(name, []).append(tuple(first.shape) if hasattr(first, "shape") else None)
            self.outputs.setdefault(name, []).append(output)
        return f


def eager_ok(module: Any, args: tuple[Any, ...]) -> bool:
    try:
        eager_run(module, args)
        return True
    except Exception:  # noqa: BLE001 - probing candidate shapes; any failure means "not this one"
        return False


def eager_run(module: Any, args: tuple[Any, ...], record: EagerRecord | None = None) -> Any:
    """Forward on meta tensors (weights never touched), optionally recording leaf-module calls.

    Args:
        module: the model (meta or real weights).
        args: example inputs (moved to meta).
        record: when given, filled afresh with every leaf call (see :class:`EagerRecord`).
    """
    import torch
    from torch.func import functional_call

    handles = []
    if record is not None:
        record.__init__()  # type: ignore[misc] - reset: one record per run
        for name, m in module.named_modules():
            if is_leaf(m):
                handles.append(m.register_forward_hook(record.hook(name)))
    try:
        with torch.no_grad(), fast_meta_mode():
            if is_meta_module(module) or not list(module.parameters()):
                out = module(*meta_args(args))
            else:
                out = functional_call(module, _meta_state(module), meta_args(args))
    finally:
        for h in handles:
            h.remove()
    if record is not None:
        record.result = out
    return out
