"""How the shipped sketch weight was chosen: family MAP@10 of the held-out *training* libraries
(timm, torchvision, transformers), each embedded by the encoder trained without it, as a
function of the weight ``w`` of the structural sketch (0 = learned part only, 1 = sketch only).
The seven libraries outside the training corpus are never looked at. docs/benchmarks.md.

    .venv/bin/python benchmarks/sketch_weight.py [--lolo-dir DIR] [--weights 0,0.3,0.5,0.7,0.8,1]

The learned part and the sketch are read back from each encoder's own embedding (its first
``out_dim`` columns are ``sqrt(1 - w') * learned``, the rest ``sqrt(w') * sketch``) and mixed
again with every ``w``; encoders missing in ``--lolo-dir`` are trained first (~25 min each).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict[str, dict[float, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lolo-dir", default=None, help="leave-one-library-out encoders (default NAR_HOME/lolo)")
    p.add_argument("--weights", default="0,0.3,0.4,0.5,0.6,0.7,0.8,1")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from nar_plugin.corpus.crosslib import load_cross_library
    from nar_plugin.evaluation.cross_library import run_cross_library
    from nar_plugin.evaluation.leave_one_out import (
        LIBRARY_SOURCES,
        default_lolo_dir,
        encoder_without,
    )
    from nar_plugin.model.inference import embed_many, load_encoder

    torch.set_num_threads(1)
    root = Path(args.lolo_dir) if args.lolo_dir else default_lolo_dir()
    ws = [float(w) for w in args.weights.split(",")]
    items = load_cross_library()
    table: dict[str, dict[float, float]] = {}
    for lib in LIBRARY_SOURCES:
        enc = load_encoder(encoder_without(lib, root, log=print))
        cfg = enc.config
        if not cfg.sketch_dim or not 0 < cfg.sketch_weight < 1:
            raise SystemExit(f"{enc.version}: needs a learned part and a sketch")
        emb = embed_many([it.graph for it in items], encoder=enc).astype(np.float64)
        learned = emb[:, :cfg.out_dim] / np.sqrt(1 - cfg.sketch_weight)
        sketch = emb[:, cfg.out_dim:] / np.sqrt(cfg.sketch_weight)
        mixed = {str(w): np.hstack([np.sqrt(1 - w) * learned, np.sqrt(w) * sketch]) for w in ws}
        res = run_cross_library(items, {k: (lambda _, e=e: e) for k, e in mixed.items()}, libraries=[lib])
        table[lib] = {w: res.mean(str(w), "MAP@10") for w in ws}
    mean = {w: float(np.mean([table[lib][w] for lib in table])) for w in ws}
    print("| held-out library | " + " | ".join(f"w = {w:g}" for w in ws) + " |")
    print("|---|" + "---:|" * len(ws))
    for lib, row in [*table.items(), ("mean", mean)]:
        print(f"| {lib} | " + " | ".join(f"{row[w]:.3f}" for w in ws) + " |")
    print(f"best w: {max(mean, key=mean.__getitem__):g}")
    return table


if __name__ == "__main__":
    main()
