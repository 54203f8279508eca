"""Coverage of the real-tensor tracers (:mod:`nar_plugin.extract.real`) over the benchmark.

Every benchmark row extracts on meta, so the fallback never triggers when the corpus is built.
This measures what it would do if meta failed: a sample of rows is built with real (random,
seeded) weights on the CPU and traced with ``export-real`` and ``eager-real`` directly; each
graph is compared with the row's stored meta graph (equal graph hash = same graph). Needs the
third-party libraries on ``sys.path`` (:func:`~nar_plugin.corpus.crosslib.install.on_path`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

__all__ = ["real_tracer_coverage"]

logger = logging.getLogger(__name__)


def _materialise(model: Any, seed: int) -> Any:
    """Give a meta-built model real CPU tensors (seeded small normal values; nothing is read)."""
    import torch

    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.fill_(1.0)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.02)
            else:
                t.zero_()
    return model


def _real(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return torch.zeros(x.shape, dtype=x.dtype) if x.is_meta else x
    if isinstance(x, (list, tuple)):
        return type(x)(_real(y) for y in x)
    if isinstance(x, dict):
        return {k: _real(v) for k, v in x.items()}
    return x


def real_tracer_coverage(per_library: int = 4, max_nodes: int = 400, root: Any = None,
                         seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per library: the ``per_library`` smallest stored rows (at most ``max_nodes`` nodes) traced
    with each real-tensor tracer; counts of successes and of graphs equal to the meta graph."""
    import torch

    from nar_plugin.corpus.crosslib.dataset import load_cross_library
    from nar_plugin.corpus.crosslib.libraries import build_model
    from nar_plugin.corpus.crosslib.manifest import default_dir, load_manifest
    from nar_plugin.extract.aten import graph_from_exported_program
    from nar_plugin.extract.meta import quiet_torch
    from nar_plugin.extract.real import _eager_graph, real_example_inputs

    items = {it.key: it for it in load_cross_library(root)}
    rows = {r.key: r for r in load_manifest((root or default_dir()) / "manifest.json")}
    by_lib: dict[str, list[Any]] = defaultdict(list)
    for it in sorted(items.values(), key=lambda it: (it.graph.num_nodes, it.key)):
        if it.graph.num_nodes <= max_nodes and len(by_lib[it.library]) < per_library:
            by_lib[it.library].append(it)
    out: dict[str, dict[str, Any]] = {}
    for lib, chosen in by_lib.items():
        stats: dict[str, Any] = {"models": 0, "export-real": 0, "eager-real": 0, "export-real same graph": 0,
                                 "eager-real same graph": 0, "failures": {}, "seconds": 0.0}
        for it in chosen:
            t0 = time.perf_counter()
            stats["models"] += 1
            try:
                model, args, kwargs = build_model(lib, rows[it.key].build)
                model = _materialise(model, seed).eval()
                args, kwargs = _real(args), _real(kwargs or {})
                if args is None:
                    args = () if kwargs else real_example_inputs(model)
            except Exception as e:  # noqa: BLE001 - a row that does not build for real is reported
                stats["failures"][it.key] = f"build: {type(e).__name__}: {str(e)[:120]}"
                continue
            meta = {"name": it.key}
            for tracer in ("export-real", "eager-real"):
                try:
                    with quiet_torch(), torch.no_grad():
                        if tracer == "export-real":
                            ep = torch.export.export(model, tuple(args), kwargs=kwargs or None, strict=False)
                            g = graph_from_exported_program(ep, {**meta, "tracer": tracer})
                        else:
                            g = _eager_graph(model, tuple(args), kwargs, meta)
                    stats[tracer] += 1
                    stats[f"{tracer} same graph"] += int(g.graph_hash == it.graph.graph_hash)
                except Exception as e:  # noqa: BLE001 - counted as a miss of this tracer
                    stats["failures"][f"{it.key} ({tracer})"] = f"{type(e).__name__}: {str(e)[:120]}"
            stats["seconds"] += time.perf_counter() - t0
            del model
        out[lib] = stats
        logger.info("%s: %s", lib, {k: v for k, v in stats.items() if k != "failures"})
    return out
