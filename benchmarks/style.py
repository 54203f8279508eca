"""Style generalisation: MAP@10 of NAR vs the op-histogram baseline on hand-written models.

12 models (tests/fixtures/style_models.py): 4 families x 3 coding styles, none in the corpus.

    .venv/bin/python benchmarks/style.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> dict[str, float]:
    import torch

    from nar_plugin.baselines import histogram_embed, wl_embed
    from nar_plugin.embed import embed_many
    from nar_plugin.evaluate import retrieval_metrics
    from nar_plugin.extract import extract_graph
    from tests.fixtures.style_models import STYLE_MODELS, example

    torch.set_num_threads(1)
    graphs, fams = [], []
    for name, fam, build, shape, dtype in STYLE_MODELS:
        graphs.append(extract_graph(build(), (example(shape, dtype),)))
        fams.append(fam)
    res = {
        "NAR": retrieval_metrics(embed_many(graphs), fams, ks=(10,))["MAP@10"],
        "op histogram": retrieval_metrics(histogram_embed(graphs), fams, ks=(10,))["MAP@10"],
        "WL subtree": retrieval_metrics(wl_embed(graphs), fams, ks=(10,))["MAP@10"],
    }
    print("| method | MAP@10 (12 hand-written models, 4 families x 3 styles) |")
    print("|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.3f} |")
    print(f"\nNAR - histogram: {res['NAR'] - res['op histogram']:+.3f} (target >= +0.25)")
    return res


if __name__ == "__main__":
    main()
