"""``nn.Module`` -> ArchGraph, with torch.fx where it is faithful and torch.export otherwise.

torch.fx is ~50x faster than torch.export on vision models but can trace without error and still
lose data flow (Python-side lists of intermediates, hooks). So an fx trace is accepted only when
re-running it on meta tensors agrees with an eager meta forward: same output shapes and the same
number of calls of every leaf module. Otherwise (or when fx fails) we use
``torch.export.export(strict=False)``.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from typing import Any

from nar_plugin.errors import GraphExtractionError
from nar_plugin.extract.leaves import is_leaf, leaf_table
from nar_plugin.extract.meta import eager_run, fast_meta_mode, infer_example_inputs, is_meta_module, meta_args, meta_copy
from nar_plugin.extract.ops import EMPTY, POSITIONAL, CANON, Value, base_name, lower_op
from nar_plugin.graph import ArchGraph, GraphBuilder

logger = logging.getLogger(__name__)

__all__ = ["graph_from_module", "infer_example_inputs", "trace_fx", "trace_export", "is_meta_module",
           "leaf_table", "meta_copy"]


def trace_fx(module: Any, num_args: int = 1) -> Any:
    """Symbolically trace with our leaf set (torch.nn layers we lower directly).

    Forward parameters after the first ``num_args`` are fixed to their defaults (e.g. timm's
    ``attn_mask=None``), so optional arguments do not become graph inputs.
    """
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
        def is_leaf_module(self, m: Any, qualname: str) -> bool:  # noqa: ARG002
            return is_leaf(m)

    tracer = _Tracer()
    graph = tracer.trace(module, concrete_args=concrete or None)
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def _shape(meta: Any) -> tuple[int, ...] | None:
    tm = meta.get("tensor_meta") if isinstance(meta, dict) else None
    shape = getattr(tm, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _fx_to_graph(gm: Any, metadata: dict[str, Any]) -> ArchGraph:
    import torch

    b = GraphBuilder()
    env: dict[str, Value] = {}
    modules = dict(gm.named_modules())
    table = leaf_table()

    def conv(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env.get(a.name, Value(EMPTY))
        if isinstance(a, (list, tuple)):
            return [conv(x) for x in a]
        if isinstance(a, dict):
            return {k: conv(v) for k, v in a.items()}
        return a

    for node in gm.graph.nodes:
        shape = _shape(node.meta)
        if node.op == "placeholder":
            env[node.name] = Value(b.add_input(), shape)
        elif node.op == "get_attr":
            t = operator.attrgetter(node.target)(gm)
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
            vals: list[Value] = []

            def collect(x: Any) -> None:
                if isinstance(x, Value):
                    vals.append(x)
                elif isinstance(x, (list, tuple)):
                    for y in x:
                        collect(y)
                elif isinstance(x, dict):
                    for y in x.values():
                        collect(y)
            collect(conv(node.args[0]))
            b.add_output(v.ref for v in vals)
    return b.build({"tracer": "fx", **metadata})


def _fx_faithful(module: Any, gm: Any, args: tuple[Any, ...]) -> tuple[bool, str]:
    """Re-run the fx graph on meta and compare with eager meta execution."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    counts: Counter[str] = Counter()
    eager_out = eager_run(module, args, counts)
    with torch.no_grad(), fast_meta_mode():
        ShapeProp(gm).propagate(*meta_args(args))
    fx_counts = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    fx_out = out_node.args[0]

    def shapes(x: Any) -> list[tuple[int, ...]]:
        if isinstance(x, torch.Tensor):
            return [tuple(x.shape)]
        if isinstance(x, torch.fx.Node):
            s = _shape(x.meta)
            return [s] if s is not None else []
        if isinstance(x, (list, tuple)):
            return [s for y in x for s in shapes(y)]
        if isinstance(x, dict):
            return [s for y in x.values() for s in shapes(y)]
        return []

    if shapes(eager_out) != shapes(fx_out):
        return False, f"output shapes differ: eager {shapes(eager_out)} vs fx {shapes(fx_out)}"
    if dict(counts) != dict(fx_counts):
        diff = {k: (counts.get(k, 0), fx_counts.get(k, 0)) for k in set(counts) | set(fx_counts)
                if counts.get(k, 0) != fx_counts.get(k, 0)}
        return False, f"leaf-module calls differ (eager, fx): {dict(list(diff.items())[:5])}"
    # dangling leaf calls: a module whose result never reaches the output means lost data flow
    users_ok = all(n.users for n in gm.graph.nodes if n.op == "call_module")
    if not users_ok:
        return False, "a traced layer's output is never used (data flow lost)"
    return True, ""


# ------------------------------------------------------------------ export
def trace_export(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """``torch.export.export(strict=False)`` on meta inputs (meta module) or fake weights."""
    import torch

    if is_meta_module(module):
        args = meta_args(args)
        kwargs = meta_args((kwargs or {},))[0] if kwargs else None
    with torch.no_grad():
        return torch.export.export(module, args, kwargs=kwargs, strict=False)


def graph_from_module(module: Any, example_inputs: Any = None, tracer: str = "auto",
                      metadata: dict[str, Any] | None = None, example_kwargs: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of an ``nn.Module`` without touching its weights.

    Args:
        module: the model (meta or real weights; it is not modified).
        example_inputs: a tensor or tuple of tensors; inferred when ``None``.
        tracer: ``"auto"`` (fx when faithful, else export), ``"fx"`` or ``"export"``.
        metadata: extra provenance stored on the graph.
        example_kwargs: keyword inputs (HF models), export path only.

    Raises:
        ExampleInputsError: inputs needed and not inferable.
        GraphExtractionError: every tracer failed; ``attempts`` says why each did.
    """
    import torch

    meta = {"name": type(module).__name__, **(metadata or {})}
    if not is_meta_module(module) and any(True for _ in module.parameters()):
        module = meta_copy(module)
        if example_inputs is not None:
            example_inputs = meta_args(example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))
    was_training = module.training
    module.eval()
    try:
        if example_inputs is None and not example_kwargs:
            args = infer_example_inputs(module)
        elif isinstance(example_inputs, torch.Tensor):
            args = (example_inputs,)
        else:
            args = tuple(example_inputs or ())
        attempts: dict[str, str] = {}
        if tracer in ("auto", "fx") and not example_kwargs:
            try:
                gm = trace_fx(module, len(args))
                ok, why = _fx_faithful(module, gm, args)
                if ok or tracer == "fx":
                    if not ok:
                        logger.warning("fx trace of %s is not faithful (%s)", meta["name"], why)
                    return _fx_to_graph(gm, meta)
                attempts["fx"] = f"not faithful: {why}"
            except Exception as e:  # noqa: BLE001 - any tracer failure -> next tracer
                attempts["fx"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if tracer == "fx":
                    raise GraphExtractionError(f"torch.fx could not trace {meta['name']}: {attempts['fx']}", attempts) from e
            logger.debug("fx rejected for %s: %s", meta["name"], attempts["fx"])
        try:
            ep = trace_export(module, args, example_kwargs)
        except Exception as e:  # noqa: BLE001
            attempts["export"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise GraphExtractionError(
                f"could not trace {meta['name']}: " + "; ".join(f"{k}: {v}" for k, v in attempts.items()),
                attempts,
            ) from e
        from nar_plugin.extract.aten import graph_from_exported_program

        return graph_from_exported_program(ep, meta)
    finally:
        module.train(was_training)

