"""``nn.Module`` -> ArchGraph, with torch.fx where it is faithful and torch.export otherwise.

torch.fx is ~50x faster than torch.export on vision models but can trace without error and still
lose data flow (Python-side lists of intermediates, hooks). So an fx trace is accepted only when
it agrees with one eager forward on meta tensors: the same number of calls of every leaf layer,
with the same input shapes, the same output shapes, and no traced layer whose output is unused.
Otherwise (or when fx fails) we use ``torch.export.export(strict=False)``.

The eager forward is also where the shapes come from: each leaf call's output is recorded by a
hook, and the fx graph is walked once with those outputs standing in for the leaves, so only
the functional glue between layers (adds, reshapes, attention) runs again.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from typing import Any

from nar_plugin.errors import ExampleInputsError, GraphExtractionError, NarError
from nar_plugin.extract.leaves import is_leaf, leaf_table
from nar_plugin.extract.meta import (
    EagerRecord,
    eager_run,
    fast_meta_mode,
    infer_example_inputs,
    is_meta_module,
    meta_args,
    meta_copy,
    quiet_torch,
)
from nar_plugin.extract.ops import CANON, EMPTY, POSITIONAL, Value, base_name, lower_op
from nar_plugin.graph import ArchGraph, GraphBuilder
from nar_plugin.graph.params import param_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "graph_from_module",
    "infer_example_inputs",
    "is_meta_module",
    "leaf_table",
    "meta_copy",
    "trace_export",
    "trace_fx",
]

Shapes = dict[str, "tuple[int, ...] | None"]


def _trace_graph(module: Any, num_args: int = 1) -> Any:
    """Symbolically trace with our leaf set; returns the ``torch.fx.Graph`` (no GraphModule:
    nothing is compiled, the graph is only read)."""
    import inspect

    import torch.fx

    concrete: dict[str, Any] = {}
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params[num_args:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            concrete[p.name] = p.default

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return is_leaf(m)

    return _Tracer().trace(module, concrete_args=concrete or None)


def trace_fx(module: Any, num_args: int = 1) -> Any:
    """Symbolically trace with our leaf set (torch.nn layers we lower directly).

    Forward parameters after the first ``num_args`` are fixed to their defaults (e.g. timm's
    ``attn_mask=None``), so optional arguments do not become graph inputs.

    Returns:
        A ``torch.fx.GraphModule``.
    """
    import torch.fx

    return torch.fx.GraphModule(module, _trace_graph(module, num_args), type(module).__name__)


def _shape_of(x: Any) -> tuple[int, ...] | None:
    shape = getattr(x, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _tensor_shapes(x: Any) -> list[tuple[int, ...] | None]:
    import torch

    if isinstance(x, torch.Tensor):
        return [_shape_of(x)]
    if isinstance(x, (list, tuple)):
        return [s for y in x for s in _tensor_shapes(y)]
    if isinstance(x, dict):
        return [s for y in x.values() for s in _tensor_shapes(y)]
    return []


class _Unfaithful(Exception):
    """The fx graph disagrees with the eager forward (message says where)."""


def _replay(module: Any, graph: Any, args: tuple[Any, ...], record: EagerRecord | None) -> tuple[Shapes, Any]:
    """Walk the fx graph on meta with each leaf call answered by the eager run's output (or run,
    without a ``record``).

    A plain loop, not ``torch.fx.Interpreter``: its per-node bookkeeping costs more than the
    glue ops it runs here.

    Returns:
        The shape of every node's value, and the graph's output.

    Raises:
        _Unfaithful: a leaf is called with another input shape than in the eager forward.
    """
    import torch
    from torch.fx.node import map_arg

    calls: Counter[str] = Counter()
    shapes: Shapes = {}
    env: dict[Any, Any] = {}
    modules = dict(module.named_modules()) if record is None else {}
    inputs = list(meta_args(args))
    with torch.no_grad(), fast_meta_mode():
        for n in graph.nodes:
            if n.op == "output":
                return shapes, map_arg(n.args[0], env.__getitem__)
            if n.op == "placeholder":
                if n.target.startswith("*"):
                    v, inputs = inputs, []
                else:
                    v = inputs.pop(0) if inputs else (n.args[0] if n.args else None)
            elif n.op == "get_attr":
                v = operator.attrgetter(n.target)(module)
            else:
                a, kw = map_arg(n.args, env.__getitem__), map_arg(n.kwargs, env.__getitem__)
                if n.op == "call_function":
                    v = n.target(*a, **kw)
                elif n.op == "call_method":
                    v = getattr(a[0], n.target)(*a[1:], **kw)
                elif record is None:
                    v = modules[n.target](*a, **kw)
                else:
                    i = calls[n.target]
                    calls[n.target] += 1
                    first = _shape_of(a[0]) if a else None
                    if first != record.in_shapes[n.target][i]:
                        raise _Unfaithful(f"layer {n.target} gets input {first} in fx, "
                                          f"{record.in_shapes[n.target][i]} in eager")
                    v = record.outputs[n.target][i]
            env[n] = v
            shapes[n.name] = _shape_of(v)
    return shapes, None


def _check_fx(module: Any, graph: Any, args: tuple[Any, ...], record: EagerRecord) -> Shapes:
    """Shapes of the fx graph's values when it is faithful to the eager forward in ``record``.

    Raises:
        _Unfaithful: leaf call counts, leaf input shapes or output shapes differ, or a traced
            layer's output is never used (data flow lost).
    """
    fx_counts = Counter(n.target for n in graph.nodes if n.op == "call_module")
    if dict(record.counts) != dict(fx_counts):
        diff = {k: (record.counts.get(k, 0), fx_counts.get(k, 0)) for k in set(record.counts) | set(fx_counts)
                if record.counts.get(k, 0) != fx_counts.get(k, 0)}
        raise _Unfaithful(f"leaf-module calls differ (eager, fx): {dict(list(diff.items())[:5])}")
    if not all(n.users for n in graph.nodes if n.op == "call_module"):
        raise _Unfaithful("a traced layer's output is never used (data flow lost)")
    shapes, fx_out = _replay(module, graph, args, record)
    if _tensor_shapes(record.result) != _tensor_shapes(fx_out):
        raise _Unfaithful(f"output shapes differ: eager {_tensor_shapes(record.result)} "
                          f"vs fx {_tensor_shapes(fx_out)}")
    return shapes


def _fx_to_graph(module: Any, graph: Any, shapes: Shapes, metadata: dict[str, Any]) -> ArchGraph:
    import torch

    b = GraphBuilder()
    env: dict[str, Value] = {}
    modules = dict(module.named_modules())
    table = leaf_table()

    def conv(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env.get(a.name, Value(EMPTY))
        if isinstance(a, (list, tuple)):
            return [conv(x) for x in a]
        if isinstance(a, dict):
            return {k: conv(v) for k, v in a.items()}
        return a

    for node in graph.nodes:
        shape = shapes.get(node.name)
        if node.op == "placeholder":
            env[node.name] = Value(b.add_input(), shape)
        elif node.op == "get_attr":
            t = operator.attrgetter(node.target)(module)
            env[node.name] = Value(EMPTY, tuple(t.shape) if hasattr(t, "shape") else None)
        elif node.op == "call_module":
            m = modules[node.target]
            args = [conv(a) for a in node.args]
            x = next((a for a in args if isinstance(a, Value)), Value(EMPTY))
            if x.is_const and type(m).__name__ != "Embedding":
                env[node.name] = Value(EMPTY, shape)
            else:
                env[node.name] = table[type(m)](m, x, shape, b)
        elif node.op in ("call_function", "call_method"):
            target = node.target
            raw = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            name = base_name(raw)
            names = POSITIONAL.get(CANON.get(name, ""), ())
            named: dict[str, Any] = {}
            for i, a in enumerate(node.args):
                key = names[i] if i < len(names) else ("input" if i == 0 else f"arg{i}")
                named[key] = conv(a)
            for k, v in node.kwargs.items():
                named[k] = conv(v)
            env[node.name] = lower_op(b, name, named, shape)
        elif node.op == "output":
            b.add_output(v.ref for v in _values(conv(node.args[0])))
    return b.build({"tracer": "fx", **metadata})


def _values(x: Any) -> list[Value]:
    if isinstance(x, Value):
        return [x]
    if isinstance(x, (list, tuple)):
        return [v for y in x for v in _values(y)]
    if isinstance(x, dict):
        return [v for y in x.values() for v in _values(y)]
    return []


# ------------------------------------------------------------------ export
def trace_export(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """``torch.export.export(strict=False)`` on meta inputs (meta module) or fake weights."""
    import torch

    if is_meta_module(module):
        args = meta_args(args)
        kwargs = meta_args((kwargs or {},))[0] if kwargs else None
    with torch.no_grad():
        return torch.export.export(module, args, kwargs=kwargs, strict=False)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _try_fx(module: Any, args: tuple[Any, ...], record: EagerRecord | None, tracer: str,
            meta: dict[str, Any], attempts: dict[str, str]) -> ArchGraph | None:
    """The fx graph when it is faithful (or ``tracer="fx"``); else ``None`` with the reason in
    ``attempts["fx"]``."""
    try:
        graph = _trace_graph(module, len(args))
        if record is None:
            record = EagerRecord()
            eager_run(module, args, record)
        try:
            shapes = _check_fx(module, graph, args, record)
        except _Unfaithful as e:
            if tracer != "fx":
                attempts["fx"] = f"not faithful: {e}"
                return None
            logger.warning("fx trace of %s is not faithful (%s)", meta["name"], e)
            shapes = _replay(module, graph, args, None)[0]
        return _fx_to_graph(module, graph, shapes, meta)
    except NarError:
        raise  # a budget or timeout: stop, do not try the next tracer
    except Exception as e:
        attempts["fx"] = _first_line(e)
        if tracer == "fx":
            raise GraphExtractionError(f"torch.fx could not trace {meta['name']}: {attempts['fx']}", attempts) from e
        return None


def graph_from_module(module: Any, example_inputs: Any = None, tracer: str = "auto",
                      metadata: dict[str, Any] | None = None, example_kwargs: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of an ``nn.Module`` without touching its weights.

    Args:
        module: the model (meta or real weights; it is not modified).
        example_inputs: a tensor or tuple of tensors; inferred when ``None``.
        tracer: ``"auto"`` (fx when faithful, else export), ``"fx"`` or ``"export"``. When the
            meta-device tracers fail on a module with real parameters (``"auto"`` / ``"export"``),
            it is traced with its own tensors (:mod:`~nar_plugin.extract.real`: ``export-real``,
            then ``eager-real``); ``metadata["tracer"]`` names the tracer that made the graph.
        metadata: extra provenance stored on the graph (besides ``name``, ``tracer``,
            ``num_params``, the parameter count, and ``param_shapes``, the canonical parameter
            shapes; :func:`~nar_plugin.graph.params.param_metadata`, from shapes only).
        example_kwargs: keyword inputs (HF models), export path only.

    Raises:
        ExampleInputsError: inputs needed and not inferable.
        GraphExtractionError: every tracer failed; ``attempts`` says why each did.
    """
    meta = {"name": type(module).__name__, **param_metadata(tuple(t.shape) for t in module.parameters()),
            **(metadata or {})}
    user_module, user_inputs = module, example_inputs
    real = not is_meta_module(module)
    if real and any(True for _ in module.parameters()):
        module = meta_copy(module)
        if example_inputs is not None:
            example_inputs = meta_args(example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))
    # eval mode for the trace, each submodule's own flag restored after (cheaper than two
    # recursive .train() calls, and exact when the user's submodules differ)
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        with quiet_torch():
            return _extract_module(module, example_inputs, tracer, meta, example_kwargs)
    except (GraphExtractionError, ExampleInputsError) as e:
        if not real or tracer == "fx":
            raise  # a meta module has no tensors of its own to trace with
        logger.info("meta tracing failed for %s (%s); tracing it with its own tensors", meta["name"], e)
        failure: NarError = e
    finally:
        for m in training:
            m.training = True
    from nar_plugin.extract.real import graph_from_real_module

    return graph_from_real_module(user_module, user_inputs, example_kwargs, meta, failure)


def _extract_module(module: Any, example_inputs: Any, tracer: str, meta: dict[str, Any],
                    example_kwargs: dict[str, Any] | None) -> ArchGraph:
    import torch

    record: EagerRecord | None = None
    if example_inputs is None and not example_kwargs:
        record = EagerRecord() if tracer in ("auto", "fx") else None
        args = infer_example_inputs(module, record)
    elif isinstance(example_inputs, torch.Tensor):
        args = (example_inputs,)
    else:
        args = tuple(example_inputs or ())
    attempts: dict[str, str] = {}
    if tracer in ("auto", "fx") and not example_kwargs:
        g = _try_fx(module, args, record, tracer, meta, attempts)
        if g is not None:
            return g
        logger.debug("fx rejected for %s: %s", meta["name"], attempts["fx"])
    try:
        ep = trace_export(module, args, example_kwargs)
    except NarError:
        raise
    except Exception as e:
        attempts["export"] = _first_line(e)
        raise GraphExtractionError(
            f"could not trace {meta['name']}: " + "; ".join(f"{k}: {v}" for k, v in attempts.items()),
            attempts,
        ) from e
    from nar_plugin.extract.aten import graph_from_exported_program

    return graph_from_exported_program(ep, meta)
