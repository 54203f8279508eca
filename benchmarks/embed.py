"""Embedding benchmark: encoder cost vs. extraction cost, and batch throughput on CPU.

1. ResNet-50 (``timm:resnet50``, meta device): median time of ``extract_graph``, of motif
   sampling + featurisation (``prepare``), of the encoder forward alone, and of ``embed_graph``
   (prepare + forward). Target: encoder forward <= 10% of extraction; the table also gives the
   ratio for the whole ``embed_graph`` step.
2. Throughput of ``embed_many`` (batch 64) over a fixed set of graphs (torchvision
   classification models, extracted once beforehand) with ``torch.set_num_threads(1)`` and
   ``(2)``: graphs/s including motif sampling, and forward-only graphs/s on pre-prepared
   batches.

Run::

    .venv/bin/python benchmarks/embed.py [--repeat 5] [--graphs 64]

Prints Markdown tables (merge them into docs/model-card.md / docs/benchmarks.md). Uses the
shipped weights in ``nar_plugin/weights``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nar_plugin.extract import extract_graph
from nar_plugin.model.features import collate, prepare
from nar_plugin.model.inference import embed_graph, embed_many, load_encoder


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _torchvision_graphs(n: int) -> list[Any]:
    import torchvision

    graphs = []
    for name in torchvision.models.list_models(module=torchvision.models):
        if len(graphs) >= n:
            break
        try:
            with torch.device("meta"):
                m = torchvision.models.get_model(name).eval()
            size = 299 if "inception" in name else 224
            graphs.append(extract_graph(m, example_inputs=(torch.empty(1, 3, size, size, device="meta"),)))
        except Exception as e:  # noqa: BLE001 - a model that does not build is just skipped
            print(f"skip {name}: {type(e).__name__}", file=sys.stderr)
    while graphs and len(graphs) < n:  # repeat to reach n
        graphs.append(graphs[len(graphs) % max(1, len(graphs))])
    return graphs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--graphs", type=int, default=64)
    ap.add_argument("--model", default="timm:resnet50")
    args = ap.parse_args()

    enc = load_encoder()
    cfg = enc.config
    torch.set_num_threads(1)
    embed_graph(extract_graph(args.model))  # warm-up (imports, first-call allocations)
    t_ext, g = _median(lambda: extract_graph(args.model), args.repeat)
    t_prep, p = _median(lambda: prepare(g, steps=cfg.steps, max_size=cfg.max_size, min_count=cfg.min_count),
                        args.repeat)
    batch = collate([p])
    with torch.inference_mode():
        t_fwd, _ = _median(lambda: enc.model(batch), args.repeat)
    t_emb, _ = _median(lambda: embed_graph(g), args.repeat)
    print(f"encoder {enc.version}; torch {torch.__version__}; 1 thread; median of {args.repeat}\n")
    print("| model | nodes | motif instances | extract s | prepare s | forward s | embed_graph s "
          "| forward / extract | embed_graph / extract |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {g.num_nodes} | {p.num_instances} | {t_ext:.3f} | {t_prep:.3f} | "
          f"{t_fwd:.4f} | {t_emb:.3f} | {100 * t_fwd / t_ext:.1f}% | {100 * t_emb / t_ext:.1f}% |")

    graphs = _torchvision_graphs(args.graphs)
    nodes = sum(x.num_nodes for x in graphs)
    print(f"\nthroughput over {len(graphs)} torchvision graphs ({nodes} nodes in all), batch 64\n")
    print("| threads | embed_many graphs/s (incl. motif sampling) | forward-only graphs/s |")
    print("|---|---|---|")
    prepared = [prepare(x, steps=cfg.steps, max_size=cfg.max_size, min_count=cfg.min_count) for x in graphs]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t_many, _ = _median(lambda: embed_many(graphs, batch_size=64), max(1, args.repeat // 2))

        def fwd_only() -> None:
            with torch.inference_mode():
                for i in range(0, len(prepared), 64):
                    enc.model(collate(prepared[i:i + 64]))

        t_f, _ = _median(fwd_only, max(1, args.repeat // 2))
        print(f"| {threads} | {len(graphs) / t_many:.1f} | {len(graphs) / t_f:.1f} |")


if __name__ == "__main__":
    main()
