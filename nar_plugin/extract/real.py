"""Real-tensor fallback: trace an in-memory module with its own tensors when meta tracing fails.

Some forwards cannot run on the meta device: they call ``.numpy()`` / ``.item()`` /
``.tolist()``, iterate over tensor values in Python, or have data-dependent shapes. When fx and
export on meta have failed and the module's own parameters are real (not meta), the module is
traced **as it is**: no copy, no weights read from anywhere, ``torch.no_grad()``, eval mode for
the duration of the trace (each submodule's flag restored after). Two tracers, in order:

1. ``export-real``: ``torch.export.export(strict=False)`` on the module and real example inputs;
2. ``eager-real``: one eager forward under a ``TorchFunctionMode`` that lowers every torch
   function / tensor method call into the IR through the shared op table
   (:func:`~nar_plugin.extract.ops.lower_op`), following data flow by tensor identity. Values
   that leave torch (numpy, Python numbers) come back as constants, so the graph keeps every
   layer and the data flow between torch ops.

The graph's ``metadata["tracer"]`` says which one was used (the meta paths write ``fx`` or
``export``), and ``metadata["meta_error"]`` why the meta path was left.
"""

from __future__ import annotations

import logging
from typing import Any

from nar_plugin.errors import ExampleInputsError, GraphExtractionError, NarError
from nar_plugin.extract.meta import example_candidates
from nar_plugin.extract.ops import (
    CANON,
    CONST,
    EMPTY,
    FOLD,
    POSITIONAL,
    Value,
    base_name,
    dense_attrs,
    lower_op,
)
from nar_plugin.graph import ArchGraph, GraphBuilder

logger = logging.getLogger(__name__)

__all__ = ["graph_from_real_module", "real_example_inputs"]

_KNOWN = FOLD | CONST | frozenset(CANON)


def real_example_inputs(module: Any) -> tuple[Any, ...]:
    """The first candidate of :func:`~nar_plugin.extract.meta.example_candidates` (built on the
    module's own device) whose real forward runs, under ``torch.no_grad()``.

    Raises:
        ExampleInputsError: no candidate runs (the last error is quoted).
    """
    import torch

    dev = next((t.device for t in module.parameters()), torch.device("cpu"))
    cands, first = example_candidates(module, dev)
    last: Exception | None = None
    for args in cands:
        try:
            with torch.no_grad():
                module(*args)
            return args
        except Exception as e:  # noqa: BLE001 - probing candidate shapes; the last error is reported
            last = e
    found = type(first).__name__ if first is not None else "no recognised first layer"
    raise ExampleInputsError(
        f"cannot infer example inputs for {type(module).__name__} (first layer: {found})"
        + (f": the real forward raised {type(last).__name__}: {str(last)[:200]}" if last else "")
        + "; pass example_inputs=(tensor, ...) shaped like a real batch"
    ) from last


def _op_name(func: Any) -> str:
    name = base_name(getattr(func, "__name__", str(func)))
    if name not in _KNOWN and name.startswith("__") and name.endswith("__"):
        plain = name.strip("_")  # __getitem__ -> getitem, __matmul__ is in CANON as written
        if plain in _KNOWN:
            return plain
    return name


def _eager_graph(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], meta: dict[str, Any]) -> ArchGraph:
    """One real forward, every torch call lowered into the IR (the ``eager-real`` tracer)."""
    import inspect

    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.weak import WeakIdKeyDictionary

    b = GraphBuilder()
    refs: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> builder ref (no tensor kept alive)

    def shape(t: torch.Tensor) -> tuple[int, ...]:
        return tuple(int(d) for d in t.shape)

    def value(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return Value(refs.get(x, EMPTY), shape(x))
        if isinstance(x, (list, tuple)):
            return [value(y) for y in x]
        if isinstance(x, dict):
            return {k: value(v) for k, v in x.items()}
        return x

    for t in tree_flatten((args, kwargs))[0]:
        if isinstance(t, torch.Tensor):
            refs[t] = b.add_input()

    class _Lower(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, a: Any = (), kw: Any = None) -> Any:
            kw = kw or {}
            out = func(*a, **kw)
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            if not outs:
                return out  # sizes, numpy round trips, .item(): constants
            name = _op_name(func)
            names = POSITIONAL.get(CANON.get(name, ""), ())
            named: dict[str, Any] = {}
            for i, x in enumerate(a):
                named[names[i] if i < len(names) else ("input" if i == 0 else f"arg{i}")] = value(x)
            for k, v in kw.items():
                named[k] = value(v)
            if name == "multi_head_attention_forward":
                # packed in-projection, attention, out-projection: as the nn.MultiheadAttention leaf
                e = shape(a[0])[-1]
                q = b.add("linear", [refs.get(a[0], EMPTY)], dense_attrs(e, 3 * e))
                res = Value(b.add("linear", [b.add("attention", [q])], dense_attrs(e, e)))
            else:
                res = lower_op(b, name, named, shape(outs[0]))
            for t in outs:
                refs[t] = res.ref
            return out

    try:
        sig = inspect.signature(module.forward)
        sig.bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise GraphExtractionError(f"example inputs do not match {type(module).__name__}.forward: {e}") from e
    with torch.no_grad(), _Lower():
        result = module(*args, **kwargs)
    b.add_output(refs.get(t, EMPTY) for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor))
    return b.build({**meta, "tracer": "eager-real"})


def graph_from_real_module(module: Any, example_inputs: Any, example_kwargs: dict[str, Any] | None,
                           meta: dict[str, Any], meta_error: NarError) -> ArchGraph:
    """Trace ``module`` (real parameters, used in place) with real tensors (see the module
    docstring). ``meta_error`` is why the meta path failed; it is re-raised, with this path's
    attempts added, when the real-tensor tracers fail too.

    Raises:
        GraphExtractionError: every tracer failed (``attempts`` has the meta and real ones).
        ExampleInputsError: no inputs given and none runs for real either.
    """
    import torch

    from nar_plugin.extract.aten import graph_from_exported_program
    from nar_plugin.extract.meta import quiet_torch

    attempts = dict(getattr(meta_error, "attempts", {}) or {"meta": str(meta_error)})
    meta = {**meta, "meta_error": str(meta_error).splitlines()[0][:300]}
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        with quiet_torch():
            if example_inputs is None and not example_kwargs:
                args: tuple[Any, ...] = real_example_inputs(module)
            elif isinstance(example_inputs, torch.Tensor):
                args = (example_inputs,)
            else:
                args = tuple(example_inputs or ())
            kwargs = dict(example_kwargs or {})
            try:
                with torch.no_grad():
                    ep = torch.export.export(module, args, kwargs=kwargs or None, strict=False)
                return graph_from_exported_program(ep, {**meta, "tracer": "export-real"})
            except NarError:
                raise
            except Exception as e:  # noqa: BLE001 - next tracer
                attempts["export-real"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            try:
                return _eager_graph(module, args, kwargs, meta)
            except NarError:
                raise
            except Exception as e:
                attempts["eager-real"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                raise GraphExtractionError(
                    f"could not trace {meta.get('name')}: " + "; ".join(f"{k}: {v}" for k, v in attempts.items()),
                    attempts) from e
    finally:
        for m in training:
            m.training = True
