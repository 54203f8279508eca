"""Motif sampling benchmark: macro-graph reduction and sampling time vs. extraction time.

For ResNet-50 and ViT-B/16 (timm names), BERT-base (``transformers.BertConfig()``), a
Llama-7B-shaped config and a 20-cell DARTS-V2 network (built directly as an ArchGraph), prints
graph nodes, macro nodes, the reduction ratio, the repeated motif type covering the most nodes, the
extraction time, the sampling time and their ratio, as a Markdown table.

Targets (docs/motifs.md): macro graph >= 5x smaller than the graph on every model with >= 12
repeated blocks; sampling time <= 10% of extraction time.

Run::

    .venv/bin/python benchmarks/motifs.py [--repeat 5] [--steps 2] [--max-size 32]

Times are medians over ``--repeat`` runs on one CPU thread (``torch.set_num_threads(1)``);
sampling is timed on a fresh copy of the graph each run, so cached adjacency does not help it.
The DARTS network has no extraction step (it is built with GraphBuilder); its row reports the
build time in the extraction column, marked with ``*``.
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

import torch  # noqa: E402

from nar_plugin.graph import ArchGraph, GraphBuilder, NodeAttrs, width_bucket  # noqa: E402
from nar_plugin.motifs import MotifConfig, sample_motifs  # noqa: E402

Ref = frozenset[int]

# DARTS-V2 (Liu et al., 2019): (op, input state) pairs, two per intermediate node.
DARTS_V2_NORMAL = [
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
]
DARTS_V2_REDUCE = [
    ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
    ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1),
]


def _conv(b: GraphBuilder, x: Ref, cin: int, cout: int, k: int, s: int = 1, dw: bool = False) -> Ref:
    attrs = NodeAttrs(kernel=k, stride=s, groups=1 if dw else 0,
                      width_in=width_bucket(cin), width_out=width_bucket(cout))
    return b.add("conv", [x], attrs)


def _relu_conv_bn(b: GraphBuilder, x: Ref, cin: int, cout: int) -> Ref:
    return b.add("batch_norm", [_conv(b, b.add("relu", [x]), cin, cout, 1)])


def _factorized_reduce(b: GraphBuilder, x: Ref, cin: int, cout: int) -> Ref:
    r = b.add("relu", [x])
    halves = [_conv(b, r, cin, cout // 2, 1, 2) for _ in range(2)]
    return b.add("batch_norm", [b.add("cat", halves)])


def _op(b: GraphBuilder, name: str, x: Ref, c: int, stride: int) -> Ref:
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        for s in (stride, 1):  # relu - depthwise conv - pointwise conv - bn, twice
            x = b.add("batch_norm", [_conv(b, _conv(b, b.add("relu", [x]), c, c, k, s, dw=True), c, c, 1)])
        return x
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        return b.add("batch_norm", [_conv(b, _conv(b, b.add("relu", [x]), c, c, k, stride, dw=True), c, c, 1)])
    if name == "max_pool_3x3":
        return b.add("max_pool", [x], NodeAttrs(kernel=3, stride=stride))
    if name == "avg_pool_3x3":
        return b.add("avg_pool", [x], NodeAttrs(kernel=3, stride=stride))
    if name == "skip_connect":
        return x if stride == 1 else _factorized_reduce(b, x, c, c)
    raise ValueError(f"unknown DARTS op {name!r}")


def darts_network(cells: int = 20, c: int = 36, normal: list[tuple[str, int]] | None = None,
                  reduce: list[tuple[str, int]] | None = None) -> ArchGraph:
    """A DARTS CIFAR network (``NetworkCIFAR``, no auxiliary head) as an ArchGraph.

    Args:
        cells: number of cells; reduction cells sit at ``cells // 3`` and ``2 * cells // 3``.
        c: initial channels.
        normal: genotype of the normal cell (default DARTS-V2).
        reduce: genotype of the reduction cell (default DARTS-V2).

    Returns:
        The graph: stem conv+bn, ``cells`` cells (two preprocessed inputs, four intermediate
        nodes each summing two ops, concatenated output), global pooling and a classifier.
    """
    normal = normal or DARTS_V2_NORMAL
    reduce = reduce or DARTS_V2_REDUCE
    b = GraphBuilder()
    x = b.add("batch_norm", [_conv(b, b.add_input(), 3, 3 * c, 3)])
    s0 = s1 = x
    c_pp, c_p, c_cur = 3 * c, 3 * c, c
    reduction_prev = False
    for i in range(cells):
        reduction = i in (cells // 3, 2 * cells // 3)
        if reduction:
            c_cur *= 2
        p0 = _factorized_reduce(b, s0, c_pp, c_cur) if reduction_prev else _relu_conv_bn(b, s0, c_pp, c_cur)
        p1 = _relu_conv_bn(b, s1, c_p, c_cur)
        states = [p0, p1]
        genotype = reduce if reduction else normal
        for node in range(4):
            hs = []
            for name, idx in genotype[2 * node: 2 * node + 2]:
                stride = 2 if reduction and idx < 2 else 1
                hs.append(_op(b, name, states[idx], c_cur, stride))
            states.append(b.add("add", hs))
        s0, s1 = s1, b.add("cat", states[2:])
        c_pp, c_p = c_p, 4 * c_cur
        reduction_prev = reduction
    pooled = b.add("adaptive_avg_pool", [s1])
    b.add_output([b.add("linear", [pooled], NodeAttrs(width_in=width_bucket(c_p), width_out=width_bucket(10)))])
    return b.build({"name": f"darts_v2_{cells}cells", "source": "benchmarks/motifs.py"})


def _sources() -> list[tuple[str, Callable[[], Any] | None, Callable[[], ArchGraph] | None]]:
    """(name, source factory for extract_graph, or a direct graph builder)."""
    import transformers

    llama = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000)
    return [
        ("ResNet-50 (timm)", lambda: "resnet50", None),
        ("ViT-B/16 (timm)", lambda: "vit_base_patch16_224", None),
        ("BERT-base (BertConfig())", lambda: transformers.BertConfig(), None),
        ("Llama-7B-shaped (LlamaConfig)", lambda: transformers.LlamaConfig(**llama), None),
        ("DARTS-V2, 20 cells (GraphBuilder)", None, lambda: darts_network(20)),
    ]


def _median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median reported)")
    parser.add_argument("--steps", type=int, default=MotifConfig.steps)
    parser.add_argument("--min-count", type=int, default=MotifConfig.min_count)
    parser.add_argument("--max-size", type=int, default=MotifConfig.max_size)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from nar_plugin.extract import extract_graph

    rows = []
    for name, source, build in _sources():
        if source is not None:
            extract_graph(source())  # warm-up: imports, registries, first-call caches
            t_extract, graph = _median_time(lambda: extract_graph(source()), args.repeat)
        else:
            assert build is not None
            t_extract, graph = _median_time(build, args.repeat)
        data = graph.to_dict()
        sample_runs = []
        mg = None
        for _ in range(args.repeat):
            fresh = ArchGraph.from_dict(data)  # no cached adjacency from earlier runs
            t = time.perf_counter()
            mg = sample_motifs(fresh, steps=args.steps, min_count=args.min_count, max_size=args.max_size)
            sample_runs.append(time.perf_counter() - t)
        assert mg is not None
        t_sample = statistics.median(sample_runs)
        # the repeated type covering the most nodes
        top = max(mg.summary()["per_type"], key=lambda row: (row["nodes"] if row["count"] > 1 else 0, -row["type"]))
        top_count, top_size = top["count"], top["size"]
        rows.append({
            "model": name,
            "nodes": graph.num_nodes,
            "macro": mg.num_instances,
            "ratio": mg.reduction_ratio,
            "types": mg.num_types,
            "top": f"{top_count} x {top_size}",
            "extract": t_extract,
            "built": source is None,
            "sample": t_sample,
            "share": t_sample / t_extract,
        })

    print(f"steps={args.steps} min_count={args.min_count} max_size={args.max_size} repeat={args.repeat} "
          f"torch {torch.__version__} threads={torch.get_num_threads()}")
    print()
    print("| model | graph nodes | macro nodes | reduction | motif types | largest repeated type (count x size) "
          "| extraction s | sampling s | sampling / extraction |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        star = "*" if r["built"] else ""
        share = "n/a*" if r["built"] else f"{100 * r['share']:.1f}%"
        print(f"| {r['model']} | {r['nodes']} | {r['macro']} | {r['ratio']:.1f}x | {r['types']} | {r['top']} "
              f"| {r['extract']:.3f}{star} | {r['sample']:.4f} | {share} |")
    print()
    print("* DARTS is built directly with GraphBuilder: build time, not extraction time.")
    missed = [r["model"] for r in rows if r["ratio"] < 5]
    slow = [r["model"] for r in rows if not r["built"] and r["share"] > 0.10]
    print(f"target reduction >= 5x: {'met' if not missed else 'MISSED on ' + ', '.join(missed)}")
    print(f"target sampling <= 10% of extraction: {'met' if not slow else 'MISSED on ' + ', '.join(slow)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
