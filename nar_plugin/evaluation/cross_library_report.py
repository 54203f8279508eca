"""The cross-library benchmark as one report: ``nar eval --benchmark cross-library`` and
``benchmarks/cross_library.py`` both call :func:`cross_library_report`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_REPORT_METHODS", "PAIRS", "cross_library_report"]

logger = logging.getLogger(__name__)

DEFAULT_REPORT_METHODS: tuple[str, ...] = ("nar", "nar_cosine", "histogram", "histogram_attrs", "wl", "aten", "aten_compute")

#: Named pairs whose cosine the issue tracks (same network, two libraries).
PAIRS: tuple[tuple[str, str], ...] = (
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
)


def cross_library_report(root: str | Path | None = None, methods: Sequence[str] = DEFAULT_REPORT_METHODS, *,
                         corpus: str | Path | None = None, gnn_epochs: int = 20, gallery: str = "others",
                         k: int = 10, log: Callable[[str], None] | None = None,
                         leave_one_out: Any = None) -> dict[str, Any]:
    """Run the cross-library benchmark and render it.

    Args:
        root: benchmark directory (default ``corpus/cross_library``).
        methods: method names of :data:`nar_plugin.evaluation.cross_library.METHODS`
            (``gcn``/``gat`` train on ``corpus`` first).
        corpus: main corpus for the GNN baselines.
        gnn_epochs: epochs of the GNN baselines.
        gallery: ``"others"`` (other libraries only) or ``"all"``.
        k: cut-off of MAP / MRR.
        log: where progress lines go (default: the module logger).
        leave_one_out: a :class:`~nar_plugin.evaluation.cross_library.LeaveOneOut` NAR
            (:func:`~nar_plugin.evaluation.leave_one_out.leave_one_out_nar`), reported as the
            first columns: ``nar_lolo`` (ranked like ``find_similar``: cosine shortlist + fine
            rerank) and ``nar_lolo_cosine`` (the cosine alone).

    Returns:
        ``{"markdown": str, "rows": [...], "pairs": [...], "k": k, "gallery": gallery}``.
    """
    from nar_plugin.corpus.crosslib import load_cross_library
    from nar_plugin.corpus.crosslib.build import coverage
    from nar_plugin.evaluation.cross_library import (
        RERANKED,
        FineRerank,
        make_embedder,
        pair_cosines,
        run_cross_library,
    )

    say = log or logger.info
    t0 = time.time()
    items = load_cross_library(root)
    embedders = {}
    for m in methods:
        t = time.time()
        embedders[m] = make_embedder(m, corpus=corpus, gnn_epochs=gnn_epochs)
        if m in ("gcn", "gat"):
            say(f"{m}: trained in {time.time() - t:.0f} s")
    if "nar" in embedders and "nar_cosine" in embedders:  # one embedding, ranked two ways
        embedders["nar_cosine"] = embedders["nar"]
    specs: dict[str, Any] = {}
    if leave_one_out is not None:
        specs = {"nar_lolo": FineRerank(leave_one_out), "nar_lolo_cosine": leave_one_out}
    specs.update({m: FineRerank(e) if m in RERANKED else e for m, e in embedders.items()})
    res = run_cross_library(items, specs, k=k, gallery=gallery)
    cov = coverage(root)
    libs = sorted({it.library for it in items})
    head = (f"{len(items)} models from {len(libs)} libraries, {len({it.family for it in items})} families; "
            f"coverage {sum(c['ok'] for c in cov.values())}/{sum(c['models'] for c in cov.values())}")
    keys = {it.key for it in items}
    pairs = [pr for pr in PAIRS if all(key in keys for key in pr)]
    pc = pair_cosines(items, pairs, embedders)
    lines = [head, "", res.to_markdown(), "", "### Cosine of the same network in two libraries", "",
             "| pair | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    lines += [f"| `{r['a']}` vs `{r['b']}` | " + " | ".join(f"{r[m]:.3f}" for m in methods) + " |" for r in pc]
    lines += ["", f"total {time.time() - t0:.0f} s"]
    return {"markdown": "\n".join(lines), "rows": res.rows, "pairs": pc, "k": k, "gallery": gallery}
