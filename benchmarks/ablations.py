"""Encoder ablations: retrain NAR with one switch changed, evaluate on the same split.

Every row is a full ``nar train`` run (shipped :class:`~nar_plugin.training.config.TrainConfig` defaults,
same corpus, same seed, same by-model split) with one change: motif-level loss off, graph-level
loss off, ``s`` (WL steps of motif sampling) in {1, 2, 3}, plus the design choices of this
encoder (no whole-graph node stage, GCN instead of GIN layers). Runs go to ``--jobs`` processes
(one torch thread each). Prints a Markdown table of MAP@20 / MRR@20 / NDCG@20 on the test items
and the difference to the shipped settings.

    .venv/bin/python benchmarks/ablations.py [--epochs 20] [--jobs 2] [--only name,name]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: (name, description, TrainConfig overrides)
SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("shipped", "shipped settings (motif + graph loss, GIN, node stage, s=2)", {}),
    ("no-motif-loss", "motif-level loss off", {"motif_loss": False}),
    ("no-graph-loss", "graph-level loss off (motif-level InfoNCE only)", {"graph_loss": False}),
    ("s1", "s = 1 WL step for motif sampling", {"steps": 1}),
    ("s3", "s = 3 WL steps for motif sampling", {"steps": 3}),
    ("no-node-stage", "no whole-graph node stage (paper's Fs sees its motif only)",
     {"node_layers": 0, "node_readout": False}),
    ("gcn", "GCN layers instead of GIN", {"conv": "gcn"}),
]


def _run(args: tuple[str, dict[str, Any], int, str]) -> dict[str, Any]:
    import torch

    from nar_plugin.training.loop import train

    name, overrides, epochs, corpus = args
    torch.set_num_threads(1)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nar-ablation-{name}-") as out:
        res = train(corpus, out, epochs=epochs, seed=0, progress=False, save_checkpoints=False,
                    command=f"benchmarks/ablations.py {name}", **overrides)
    return {"name": name, "metrics": res.metrics["by_model"], "seconds": time.perf_counter() - t}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from nar_plugin.corpus import default_corpus_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--only", default=None, help="comma-separated setting names")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    corpus = args.corpus or str(default_corpus_dir())
    chosen = [s for s in SETTINGS if args.only is None or s[0] in args.only.split(",")]
    tasks = [(name, over, args.epochs, corpus) for name, _, over in chosen]
    with mp.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        rows = pool.map(_run, tasks, chunksize=1)
    desc = {name: d for name, d, _ in SETTINGS}
    base = next((r["metrics"]["MAP@20"] for r in rows if r["name"] == "shipped"), None)
    print(f"\n{args.epochs} epochs, seed 0, by-model split\n")
    print("| setting | MAP@20 | Δ vs. shipped settings | MRR@20 | NDCG@20 | run seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        m = r["metrics"]
        delta = f"{m['MAP@20'] - base:+.4f}" if base is not None else "n/a"
        print(f"| {desc[r['name']]} | {m['MAP@20']:.4f} | {delta} | {m['MRR@20']:.4f} | "
              f"{m['NDCG@20']:.4f} | {r['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
