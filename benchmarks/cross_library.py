"""Cross-library benchmark: the same architectures written by different libraries.

Queries = one library's models, gallery = every other library's models; relevant = same
canonical family (MAP@10, MRR@10); "same architecture" = the first gallery item from another
library with the same fine label (top-1, MRR@10, median rank). Protocol and data:
docs/cross-library.md, ``nar_plugin.evaluation.cross_library``, ``corpus/cross_library/``.

    .venv/bin/python benchmarks/cross_library.py [--methods nar,histogram,histogram_attrs,wl,aten]
        [--gnn] [--gnn-epochs 20] [--gallery others|all] [--out results.md] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Named pairs whose cosine the issue tracks (same network, two libraries).
PAIRS = [
    ("pytorchcv:densenet121", "timm:densenet121"),
    ("pytorchcv:densenet121", "torchvision:densenet121"),
    ("pytorchcv:efficientnet_b0", "timm:efficientnet_b0"),
    ("efficientnet_pytorch:efficientnet-b0", "timm:efficientnet_b0"),
    ("pytorchcv:resnet50b", "timm:resnet50"),
    ("pytorchcv:vgg16", "torchvision:vgg16"),
    ("pytorchcv:mobilenetv2_w1", "torchvision:mobilenet_v2"),
    ("pretrainedmodels:se_resnext50_32x4d", "timm:seresnext50_32x4d"),
    ("vit_pytorch:vit_b_16", "timm:vit_base_patch16_224"),
    ("transformers:vit/default", "timm:vit_base_patch16_224"),
    ("open_clip:ViT-B-32/visual", "timm:vit_base_patch32_clip_224"),
    ("transformers:convnext/default", "timm:convnext_tiny"),
    ("transformers:resnet/default", "timm:resnet50"),
]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="benchmark directory (default corpus/cross_library)")
    p.add_argument("--methods", default="nar,histogram,histogram_attrs,wl,aten,aten_compute")
    p.add_argument("--gnn", action="store_true", help="also GCN and GAT (trained on the main corpus first)")
    p.add_argument("--gnn-epochs", type=int, default=20)
    p.add_argument("--corpus", default=None, help="main corpus for the GNN baselines")
    p.add_argument("--gallery", default="others", choices=("others", "all"))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default=None, help="write the Markdown report here")
    p.add_argument("--json", default=None, help="write the raw rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from nar_plugin.corpus.crosslib import load_cross_library
    from nar_plugin.corpus.crosslib.build import coverage
    from nar_plugin.evaluation.cross_library import (
        make_embedder,
        pair_cosines,
        run_cross_library,
    )

    torch.set_num_threads(1)
    t0 = time.time()
    items = load_cross_library(args.root)
    methods = [m for m in args.methods.split(",") if m]
    if args.gnn:
        methods += ["gcn", "gat"]
    embedders = {}
    for m in methods:
        t = time.time()
        embedders[m] = make_embedder(m, corpus=args.corpus, gnn_epochs=args.gnn_epochs)
        if m in ("gcn", "gat"):
            print(f"{m}: trained in {time.time() - t:.0f} s", flush=True)
    res = run_cross_library(items, embedders, k=args.k, gallery=args.gallery)
    cov = coverage(args.root)
    libs = sorted({it.library for it in items})
    head = (f"{len(items)} models from {len(libs)} libraries, {len({it.family for it in items})} families; "
            f"coverage {sum(c['ok'] for c in cov.values())}/{sum(c['models'] for c in cov.values())}")
    lines = [head, "", res.to_markdown(), ""]
    pairs = [pr for pr in PAIRS if all(k in {it.key for it in items} for k in pr)]
    pc = pair_cosines(items, pairs, {m: embedders[m] for m in methods})
    lines += ["### Cosine of the same network in two libraries", "",
              "| pair | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    lines += [f"| `{r['a']}` vs `{r['b']}` | " + " | ".join(f"{r[m]:.3f}" for m in methods) + " |" for r in pc]
    lines += ["", f"total {time.time() - t0:.0f} s"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    out = {"rows": res.rows, "pairs": pc, "k": args.k, "gallery": args.gallery}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
