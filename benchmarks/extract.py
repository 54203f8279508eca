"""Extraction time vs bare torch.export / torch.fx, and peak RSS, measured in one run.

Each model runs in its own subprocess (so peak RSS is that model's), timing the three tracers
back to back on the same meta model; ratios are what to read, not absolute seconds. "ours" is
``graph_from_module`` with the example inputs given: the fx trace, the one eager meta forward
that checks it and supplies the shapes, and the lowering (or, for transformers, export and
lowering). The target for fx models is <= 1.5x a bare ``torch.fx.symbolic_trace``.

    .venv/bin/python benchmarks/extract.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODELS = {
    "resnet50": "timm",
    "vit_base_patch16_224": "timm",
    "bert-base": "hf",
    "llama-7b-shaped": "hf",
}


def _build(name: str):  # noqa: ANN202
    if MODELS[name] == "timm":
        from nar_plugin.extract.timm_models import build_meta_timm

        return build_meta_timm(name), None
    import transformers as tf

    from nar_plugin.extract.transformers import build_meta_model, dummy_inputs

    cfg = tf.BertConfig() if name == "bert-base" else tf.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000)
    m = build_meta_model(cfg)
    return m, dummy_inputs(m)


def child(name: str, repeat: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(1)
    from nar_plugin.extract.torch_module import graph_from_module, infer_example_inputs, trace_export

    model, kwargs = _build(name)
    args = () if kwargs else infer_example_inputs(model)

    def best(fn) -> float:  # noqa: ANN001
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    res: dict = {"model": name}
    res["export_s"] = best(lambda: trace_export(model, args, kwargs))
    try:
        res["fx_s"] = best(lambda: torch.fx.symbolic_trace(model))
    except Exception as e:  # noqa: BLE001 - fx is expected to fail on HF models
        res["fx_s"] = None
        res["fx_error"] = type(e).__name__
    g = None

    def ours() -> None:
        nonlocal g
        g = graph_from_module(model, args or (), tracer="auto", example_kwargs=kwargs)

    res["ours_s"] = best(ours)
    res["tracer"] = g.metadata["tracer"]
    res["nodes"] = g.num_nodes
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.repeat)))
        return
    rows = []
    for name in MODELS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--repeat", str(a.repeat)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| model | nodes | ours (s) | tracer used | bare export (s) | bare fx (s) | ours / fastest bare | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        bare = [t for t in (r["export_s"], r["fx_s"]) if t]
        fastest = min(bare)
        fx = f"{r['fx_s']:.3f}" if r["fx_s"] else f"fails ({r.get('fx_error')})"
        print(f"| {r['model']} | {r['nodes']} | {r['ours_s']:.3f} | {r['tracer']} | {r['export_s']:.3f} | {fx} | "
              f"{r['ours_s'] / fastest:.2f}x | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
