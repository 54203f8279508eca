"""Corpus-pool source ``crosslib``: build one benchmark model on meta and extract its graph.

Runs inside a :class:`~nar_plugin.corpus.pool.WorkerPool` worker (one process, per-item timeout,
crash isolation) whose ``PYTHONPATH`` holds the third-party folder. Besides the
:class:`~nar_plugin.graph.ArchGraph`, each record's ``info`` carries ``aten_ops``: how many times
each ATen operator ran in one eager forward on meta tensors (``convolution``, ``addmm``,
``_native_batch_norm_legit_no_training``, ``view``...). That is the "raw op name" view of the
model, independent of the IR's 70-op vocabulary and of which tracer was used; the benchmark's
``aten`` baseline is a histogram of it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nar_plugin.corpus.pool import Task
from nar_plugin.graph import ArchGraph

__all__ = ["NAME", "build_task", "count_aten_ops", "warm_up"]

NAME = "crosslib"


def warm_up() -> None:
    import torch  # noqa: F401

    from nar_plugin.extract import torch_module  # noqa: F401


def _to_meta(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x if x.is_meta else torch.empty(x.shape, dtype=x.dtype, device="meta")
    if isinstance(x, (list, tuple)):
        return type(x)(_to_meta(y) for y in x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


def count_aten_ops(module: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> dict[str, int]:
    """ATen operator -> calls in one eager forward of ``module`` on meta tensors.

    The module must live on meta (or have no parameters); inputs are moved to meta. Counted at
    the Python dispatch key, i.e. after autograd's decompositions (``linear`` appears as
    ``t`` + ``addmm``, ``conv2d`` as ``convolution``), which is what ``torch.export`` records too.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: Counter[str] = Counter()

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, a: Any = (), kw: Any = None) -> Any:
            counts[func.overloadpacket.__name__] += 1
            return func(*a, **(kw or {}))

    with torch.no_grad(), _Count():
        module(*_to_meta(tuple(args)), **_to_meta(dict(kwargs or {})))
    return dict(sorted(counts.items()))


def build_task(task: Task) -> tuple[ArchGraph, dict[str, Any]]:
    """Build ``task.spec`` (a manifest row) on meta, extract its graph and count its ATen ops."""
    from nar_plugin.corpus.crosslib.libraries import build_model
    from nar_plugin.extract.torch_module import (
        graph_from_module,
        infer_example_inputs,
        is_meta_module,
        meta_copy,
    )

    lib = task.spec["library"]
    model, args, kwargs = build_model(lib, task.spec["build"])
    if list(model.parameters()) and not is_meta_module(model):
        model = meta_copy(model)
    meta = {"name": task.name, "source_kind": f"crosslib:{lib}", "library": lib, "family": task.family,
            "fine": task.spec.get("fine")}
    if kwargs:
        g = graph_from_module(model, args or (), tracer="export", metadata=meta, example_kwargs=kwargs)
    else:
        if args is None:
            args = infer_example_inputs(model)
        g = graph_from_module(model, args, metadata=meta)
    info: dict[str, Any] = {"library": lib, "fine": task.spec.get("fine"), "tracer": g.metadata.get("tracer")}
    if args:
        info["input_shape"] = [list(a.shape) for a in args if hasattr(a, "shape")]
    try:
        info["aten_ops"] = count_aten_ops(model, args or (), kwargs)
    except Exception as e:  # noqa: BLE001 - the graph is still valid; the raw-op view is optional
        info["aten_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return g, info
