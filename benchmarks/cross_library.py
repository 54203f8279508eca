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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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

    from nar_plugin.evaluation.cross_library_report import cross_library_report

    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m] + (["gcn", "gat"] if args.gnn else [])
    out = cross_library_report(args.root, methods, corpus=args.corpus, gnn_epochs=args.gnn_epochs,
                               gallery=args.gallery, k=args.k, log=lambda s: print(s, flush=True))
    print(out["markdown"])
    if args.out:
        Path(args.out).write_text(out["markdown"] + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in out.items() if k != "markdown"}, indent=1))
    return out


if __name__ == "__main__":
    main()
