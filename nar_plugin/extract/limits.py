"""Budgets for untrusted input: sizes checked before anything is read, a node and time guard while
a graph is lowered.

nar-plugin reads what other people logged and pushed (pt2 archives, ONNX files, MLmodel files,
``config.json``) inside their ``log_model`` calls and in long-running webhook receivers. Every
reader in :mod:`nar_plugin.extract` goes through this module so that hostile or broken input costs
bounded memory and time and fails with a :mod:`nar_plugin.errors` type and a one-line reason:

* sizes are checked *before* reading: a zip member's ``ZipInfo.file_size``, a file's ``stat``;
* JSON nesting depth is counted by a flat scan before ``json.loads`` (no recursion);
* model config sizes (layers, experts, widths, an estimated parameter count) are checked before
  any module is built;
* while a graph is lowered, :func:`bounded` stops the extraction the moment it passes
  ``NAR_MAX_TRACE_NODES`` nodes or its ``NAR_EXTRACT_TIMEOUT`` deadline;
* paths named by a stored model are resolved and must stay inside its folder (:func:`confine`).

The budgets are ``NAR_*`` variables read at call time (:class:`Budgets`); docs/security.md lists
them with their defaults.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import accumulate, count
from operator import sub
from pathlib import Path
from typing import Any, TypeVar

from nar_plugin import config as C
from nar_plugin.errors import (
    BudgetExceededError,
    ConfigError,
    CorruptArtifactError,
    ExtractionTimeoutError,
    NarError,
    TraceTooLargeError,
    UnsafePathError,
)
from nar_plugin.graph.builder import ADD_GUARD

__all__ = [
    "Budgets",
    "bounded",
    "bounded_call",
    "check_deadline",
    "check_node_count",
    "check_size",
    "read_member",
    "read_json",
    "loads_bounded",
    "json_depth",
    "check_depth",
    "check_config_sizes",
    "confine",
    "reads_stored_graph",
]

MB = 1 << 20
F = TypeVar("F", bound=Callable[..., Any])


def _positive(var: C.EnvVar[Any]) -> Any:
    value = var.get()
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{var.name} must be a finite number, found {value!r}")
    if value <= 0:
        raise ConfigError(f"{var.name} must be greater than 0, found {value!r}")
    return value


@dataclass(frozen=True)
class Budgets:
    """The budgets for untrusted input, in bytes / counts / seconds.

    Build with :meth:`from_env` (the ``NAR_*`` variables, read now); tests and callers that want
    other limits construct one directly.
    """

    max_member_bytes: int
    max_json_bytes: int
    max_json_depth: int
    max_onnx_bytes: int
    max_config_layers: int
    max_config_experts: int
    max_config_dim: int
    max_config_params: float
    max_trace_nodes: int
    timeout_s: float

    @classmethod
    def from_env(cls) -> Budgets:
        """The current budgets.

        Raises:
            ConfigError: a budget variable is not a positive finite number.
        """
        trace = C.NAR_MAX_TRACE_NODES.get()
        if trace < 0:
            raise ConfigError(f"{C.NAR_MAX_TRACE_NODES.name} must be >= 0 (0: 4 x NAR_MAX_NODES), found {trace}")
        if trace == 0:
            trace = 4 * _positive(C.NAR_MAX_NODES)
        return cls(
            max_member_bytes=int(_positive(C.NAR_MAX_MEMBER_MB) * MB),
            max_json_bytes=int(_positive(C.NAR_MAX_JSON_MB) * MB),
            max_json_depth=_positive(C.NAR_MAX_JSON_DEPTH),
            max_onnx_bytes=int(_positive(C.NAR_MAX_ONNX_MB) * MB),
            max_config_layers=_positive(C.NAR_MAX_CONFIG_LAYERS),
            max_config_experts=_positive(C.NAR_MAX_CONFIG_EXPERTS),
            max_config_dim=_positive(C.NAR_MAX_CONFIG_DIM),
            max_config_params=float(_positive(C.NAR_MAX_CONFIG_PARAMS)),
            max_trace_nodes=int(trace),
            timeout_s=float(_positive(C.NAR_EXTRACT_TIMEOUT)),
        )


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


# ------------------------------------------------------------------ node and time guard
class _Guard:
    """Installed as :data:`~nar_plugin.graph.builder.ADD_GUARD` while an extraction runs."""

    __slots__ = ("deadline", "max_nodes", "timeout_s")

    def __init__(self, max_nodes: int, timeout_s: float) -> None:
        self.max_nodes = max_nodes
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s

    def __call__(self, num_nodes: int) -> None:
        if num_nodes > self.max_nodes:
            raise TraceTooLargeError(num_nodes, self.max_nodes)
        if not num_nodes & 63:  # a clock read every 64 nodes keeps the hook ~free
            self.check("lowering the graph")

    def check(self, stage: str) -> None:
        if time.monotonic() > self.deadline:
            raise ExtractionTimeoutError(
                f"extraction ran past its budget of {self.timeout_s:g} s while {stage} "
                "(raise NAR_EXTRACT_TIMEOUT to allow more)", self.timeout_s)


_ACTIVE: ContextVar[_Guard | None] = ContextVar("nar_extract_guard", default=None)


@contextmanager
def bounded(budgets: Budgets | None = None) -> Iterator[None]:
    """Run an extraction under the node and wall-time budgets.

    Every node a :class:`~nar_plugin.graph.GraphBuilder` adds inside the block is counted; past
    ``max_trace_nodes`` the extraction stops with :class:`~nar_plugin.errors.TraceTooLargeError`,
    past the deadline with :class:`~nar_plugin.errors.ExtractionTimeoutError`. Nested blocks share
    the outermost deadline. Per context (thread), like :data:`ADD_GUARD`.

    Raises:
        ConfigError: a budget variable is malformed.
    """
    if _ACTIVE.get() is not None:
        yield
        return
    b = budgets or Budgets.from_env()
    guard = _Guard(b.max_trace_nodes, b.timeout_s)
    t_active = _ACTIVE.set(guard)
    t_hook = ADD_GUARD.set(guard)
    try:
        yield
    finally:
        ADD_GUARD.reset(t_hook)
        _ACTIVE.reset(t_active)


def bounded_call(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`bounded` (a no-op when already inside one)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with bounded():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_deadline(stage: str) -> None:
    """Raise :class:`~nar_plugin.errors.ExtractionTimeoutError` when the current extraction is
    past its deadline (nothing outside :func:`bounded`). Call between expensive stages."""
    guard = _ACTIVE.get()
    if guard is not None:
        guard.check(stage)


def check_node_count(num_nodes: int) -> None:
    """Refuse a stored graph (ONNX nodes, model.json nodes) with more nodes than the trace budget
    before lowering any of it: its folded graph can only be smaller, and a loop over millions of
    folded nodes would add none to count.

    Raises:
        TraceTooLargeError: more stored nodes than ``NAR_MAX_TRACE_NODES``.
    """
    guard = _ACTIVE.get()
    limit = guard.max_nodes if guard is not None else Budgets.from_env().max_trace_nodes
    if num_nodes > limit:
        raise TraceTooLargeError(num_nodes, limit)


# ------------------------------------------------------------------ sizes before reading
def check_size(size: int, limit: int, what: str, budget: str, path: Any = None) -> None:
    """Raise :class:`~nar_plugin.errors.BudgetExceededError` when ``size`` bytes > ``limit``."""
    if size > limit:
        raise BudgetExceededError(what, _mb(size), _mb(limit), budget, str(path) if path is not None else None)


def read_member(zf: Any, name: str, path: Any, budgets: Budgets | None = None) -> bytes:
    """Read one member of an open ``zipfile.ZipFile``, its declared size checked first.

    ``ZipInfo.file_size`` (the uncompressed size) is checked before a byte is inflated, and the
    read is capped at the limit too, so a member that lies about its size cannot get past it.

    Raises:
        BudgetExceededError: the member is larger than ``NAR_MAX_MEMBER_MB``.
    """
    b = budgets or Budgets.from_env()
    info = zf.getinfo(name)
    check_size(info.file_size, b.max_member_bytes, f"archive member {name}", "NAR_MAX_MEMBER_MB", path)
    with zf.open(info) as f:  # never ask read() for more than the member can hold: it allocates
        raw = f.read(min(info.file_size, b.max_member_bytes) + 1)
    check_size(len(raw), b.max_member_bytes, f"archive member {name}", "NAR_MAX_MEMBER_MB", path)
    return bytes(raw)


def read_json(path: str | Path, what: str = "JSON file", *, limit_bytes: int | None = None,
              budget: str = "NAR_MAX_JSON_MB", budgets: Budgets | None = None) -> Any:
    """Read and parse a JSON file within the size (``NAR_MAX_JSON_MB`` unless given) and depth
    budgets.

    Raises:
        BudgetExceededError: too large or too deeply nested.
        CorruptArtifactError: unreadable, not UTF-8 or not JSON.
    """
    b = budgets or Budgets.from_env()
    p = Path(path)
    limit = limit_bytes if limit_bytes is not None else b.max_json_bytes
    try:
        size = p.stat().st_size
        check_size(size, limit, what, budget, p)
        with p.open("rb") as f:  # read(n) allocates n bytes up front: ask for what the file holds
            raw = f.read(min(size, limit) + 1)
    except OSError as e:
        raise CorruptArtifactError(f"{p}: cannot read {what}: {e.strerror or e}", str(p)) from e
    check_size(len(raw), limit, what, budget, p)
    return loads_bounded(raw, what, path=p, budgets=b)


# ------------------------------------------------------------------ JSON depth
_KEEP = b"[]{}"
_DROP = bytes(c for c in range(256) if c not in _KEEP)
# openers -> 2, closers -> 0: the running sum after i brackets is i + depth (see json_depth)
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_depth(raw: bytes | str) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text, without parsing it.

    Strings are cut out first (brackets inside them do not count): escape pairs are dropped
    (``\\\\`` then ``\\"``), after which every ``"`` delimits a string, so the text outside
    strings is every other piece of a split on ``"``. What is left is reduced to its brackets,
    and the depth after the i-th bracket is ``2 * opened - i``. Every step runs in C (``replace``,
    ``split``, ``translate``, ``accumulate``): no recursion, faster than ``json.loads`` itself.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    steps = outside.translate(_STEP, _DROP)
    return max(map(sub, accumulate(steps), count(1)), default=0)


def check_depth(obj: Any, limit: int | None = None, what: str = "JSON") -> None:
    """Refuse an already-parsed object (a dict from a webhook body, a config dict) nested deeper
    than ``limit`` (``NAR_MAX_JSON_DEPTH``); iterative, so any depth is safe to check.

    Raises:
        BudgetExceededError: nested deeper than the limit.
    """
    limit = limit if limit is not None else Budgets.from_env().max_json_depth
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, Mapping):
            children: Any = o.values()
        elif isinstance(o, (list, tuple)):
            children = o
        else:
            continue
        if d > limit:
            raise BudgetExceededError(f"{what} nesting depth", f"more than {limit}", limit, "NAR_MAX_JSON_DEPTH")
        stack.extend((c, d + 1) for c in children)


def loads_bounded(raw: bytes | str, what: str = "JSON", *, path: Any = None,
                  budgets: Budgets | None = None) -> Any:
    """``json.loads`` after the depth scan; every failure is a typed one-line error.

    The size is the caller's to check (it knows which budget applies).

    Raises:
        BudgetExceededError: nested deeper than ``NAR_MAX_JSON_DEPTH``.
        CorruptArtifactError: not UTF-8 or not JSON.
    """
    b = budgets or Budgets.from_env()
    where = str(path) if path is not None else None
    depth = json_depth(raw)
    if depth > b.max_json_depth:
        raise BudgetExceededError(f"{what} nesting depth", depth, b.max_json_depth, "NAR_MAX_JSON_DEPTH", where)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptArtifactError(f"{where + ': ' if where else ''}{what} does not parse: {first}", where) from e


# ------------------------------------------------------------------ model config sizes
_LAYER_KEYS = frozenset({
    "num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_blocks", "block_count", "depth",
    "depths", "layers", "num_encoder_layers", "num_decoder_layers", "encoder_layers", "decoder_layers",
    "num_hidden_blocks", "num_stages_layers",
})
# encoder + decoder stacks described in one dict (bart; t5 calls its encoder depth ``num_layers``)
_PAIRS = (("encoder_layers", "decoder_layers"), ("num_encoder_layers", "num_decoder_layers"),
          ("num_layers", "num_decoder_layers"))
_WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "embed_dim", "hidden_dim", "dim", "hidden_sizes", "embed_dims",
               "dims", "widths")
_FFN_KEYS = ("moe_intermediate_size", "intermediate_size", "d_ff", "ffn_dim", "n_inner", "encoder_ffn_dim",
             "decoder_ffn_dim", "ffn_hidden_size")
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_DIM_SUFFIXES = ("_size", "_sizes", "_dim", "_dims", "_embeddings", "_heads", "_positions", "_channels",
                 "_experts", "_features")
_DIM_KEYS = frozenset({"d_model", "n_embd", "n_head", "n_positions", "n_inner", "d_ff", "dim", "dims", "widths",
                       "d_kv", "n_ctx"})


def _numbers(v: Any) -> list[float]:
    """The numbers of a size field (an int, or a list of ints such as swin's ``depths``)."""
    out: list[float] = []
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out.append(x)
    return out


def _layer_count(v: Any, key: str, where: str) -> float:
    nums = _numbers(v)
    if any(not math.isfinite(n) or n < 0 for n in nums):
        raise CorruptArtifactError(f"{where}: {key} is {v!r}, expected a layer count >= 0")
    return float(sum(nums))


def _is_dim_key(key: str) -> bool:
    return key in _DIM_KEYS or key.endswith(_DIM_SUFFIXES) or key == "vocab_size"


def check_config_sizes(cfg: Mapping[str, Any], where: str = "config", budgets: Budgets | None = None) -> None:
    """Refuse a model config (transformers ``config.json`` or timm ``model_args``) whose sizes are
    over budget, before any module is built.

    Every nested dict is a (sub-)config: layers are summed over them (``encoder_layers +
    decoder_layers`` inside one), size fields are capped one by one, and the parameter count is
    estimated as ``layers x (4 w^2 + 3 w f x experts) + vocab x w``.

    Raises:
        BudgetExceededError: too many layers or experts, a size field or the estimate too large.
        CorruptArtifactError: a size field that is negative or not finite.
    """
    b = budgets or Budgets.from_env()
    check_depth(cfg, b.max_json_depth, where)
    total_layers = 0.0
    params = 0.0
    stack: list[Any] = [cfg]
    while stack:
        d = stack.pop()
        if isinstance(d, (list, tuple)):
            stack.extend(x for x in d if isinstance(x, (Mapping, list, tuple)))
            continue
        if not isinstance(d, Mapping):
            continue
        layer_counts: list[float] = []
        for key, v in d.items():
            if isinstance(v, (Mapping, list, tuple)):
                stack.append(v)
            if not isinstance(key, str):
                continue
            if key in _LAYER_KEYS:
                layer_counts.append(_layer_count(v, key, where))
            elif _is_dim_key(key):
                # NaN compares false: refuse it as over budget rather than let it through
                big = [n for n in _numbers(v) if not n <= b.max_config_dim]
                if big:
                    raise BudgetExceededError(f"{where}: {key}", big[0], b.max_config_dim, "NAR_MAX_CONFIG_DIM")
        for a, c in _PAIRS:
            layer_counts.append(_layer_count(d.get(a), a, where) + _layer_count(d.get(c), c, where))
        layers = max(layer_counts, default=0.0)
        total_layers += layers
        if total_layers > b.max_config_layers:
            raise BudgetExceededError(f"{where}: number of layers", int(total_layers), b.max_config_layers,
                                      "NAR_MAX_CONFIG_LAYERS")
        experts = max((n for k in _EXPERT_KEYS for n in _numbers(d.get(k))), default=0.0)
        if not experts <= b.max_config_experts:
            raise BudgetExceededError(f"{where}: number of experts", experts, b.max_config_experts,
                                      "NAR_MAX_CONFIG_EXPERTS")
        width = max((n for k in _WIDTH_KEYS for n in _numbers(d.get(k))), default=0.0)
        ffn = next((max(ns) for k in _FFN_KEYS if (ns := _numbers(d.get(k)))), 4 * width)
        vocab = max(_numbers(d.get("vocab_size")), default=0.0)
        params += layers * (4 * width * width + 3 * width * ffn * max(1.0, experts)) + vocab * width
        if not params <= b.max_config_params:  # NaN is refused too
            raise BudgetExceededError(f"{where}: estimated parameter count", f"{params:.3g}",
                                      f"{b.max_config_params:.3g}", "NAR_MAX_CONFIG_PARAMS")


# ------------------------------------------------------------------ paths
def confine(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, links followed; it must lie inside
    ``root``.

    Raises:
        UnsafePathError: the path leads outside ``root`` (``..``, an absolute path, a symlink).
    """
    root_r = Path(root).resolve()
    p = Path(path)
    target = (p if p.is_absolute() else root_r / p).resolve()
    if target != root_r and not target.is_relative_to(root_r):
        raise UnsafePathError(f"{what} {str(path)!r} resolves to {target}, outside the model folder {root_r}; "
                              "nothing outside it is read", str(path), str(root_r))
    return target


# ------------------------------------------------------------------ malformed input
#: What a reader of a malformed stored graph raises when it indexes, unpacks or converts a value
#: that is not what the format promises (``node.get`` on a list, ``int("x")``, a missing key).
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OverflowError,
              ZeroDivisionError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def reads_stored_graph(what: str) -> Callable[[F], F]:
    """Decorator for a function that lowers a stored graph (model.json, an ONNX graph).

    The call runs inside :func:`bounded` (node and time budgets), and an exception that malformed
    input provokes becomes one :class:`~nar_plugin.errors.CorruptArtifactError` line naming
    ``what``; nar-plugin's own errors pass unchanged.
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with bounded():
                try:
                    return fn(*args, **kwargs)
                except NarError:
                    raise
                except _MALFORMED as e:
                    raise CorruptArtifactError(
                        f"{what} is malformed: {type(e).__name__}: {_first_line(e)}") from e

        return wrapper  # type: ignore[return-value]

    return deco
