"""Path-equality matrix: one model through every export path -> the same graph hash?

For each vision model (torchvision, timm) the reference is the fx graph; for each transformers
model, the graph of its config on the meta device. Every other path writes its artifact (pt2
archive, ONNX file from the legacy or dynamo exporter, with or without constant folding / the
onnxscript optimiser, onnxruntime-optimised ONNX) and reads it back. A cell is ``=`` when the
hash equals the reference's, else the cosine of the two embeddings under the shipped encoder.
The same matrix is asserted by ``tests/test_paths.py``.

    .venv/bin/python benchmarks/paths.py [--models resnet18,bert] [--paths fx,onnx-dynamo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _cell(ref, got) -> str:  # noqa: ANN001
    if got.graph_hash == ref.graph_hash:
        return "="
    from nar_plugin.model.inference import embed_graph

    a, b = embed_graph(ref), embed_graph(got)
    return f"{float((a * b).sum()):.3f}"


def main() -> None:
    from fixtures.export_paths import (
        HF_MODELS,
        HF_PATHS,
        MODULE_PATHS,
        VISION,
        build_hf,
        build_vision,
        hf_graph,
        module_graph,
    )

    from nar_plugin.extract import extract_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset of the models")
    ap.add_argument("--paths", help="comma-separated subset of the paths")
    a = ap.parse_args()
    chosen = set(a.models.split(",")) if a.models else None
    paths = set(a.paths.split(",")) if a.paths else None
    t0 = time.perf_counter()
    rows: list[tuple[str, int, dict[str, str]]] = []
    for name in VISION:
        if chosen and name not in chosen:
            continue
        model, x = build_vision(name)
        ref = extract_graph(model, (x,), tracer="fx")
        cells = {}
        for p in MODULE_PATHS[1:]:
            if paths and p not in paths:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    cells[p] = _cell(ref, module_graph(p, model, x, Path(tmp)))
                except Exception as e:  # noqa: BLE001 - an exporter that cannot export this model
                    cells[p] = f"n/a ({type(e).__name__})"
        rows.append((name, ref.num_nodes, cells))
        print(f"{name}: {cells}", file=sys.stderr, flush=True)
    for name in HF_MODELS:
        if chosen and name not in chosen:
            continue
        model, kw = build_hf(name)
        cells = {}
        ref = None
        for p in HF_PATHS:
            if paths and p not in paths and p != "config":
                continue
            with tempfile.TemporaryDirectory() as tmp:
                g = hf_graph(p, name, model, kw, Path(tmp))
            if ref is None:
                ref = g
                continue
            cells[p] = _cell(ref, g)
        rows.append((f"{name} (transformers)", ref.num_nodes if ref else 0, cells))
        print(f"{name}: {cells}", file=sys.stderr, flush=True)
    cols = [p for p in (*MODULE_PATHS[1:], "module") if any(p in c for _, _, c in rows)]
    print("| model | nodes | " + " | ".join(cols) + " |")
    print("|---|---:|" + "---|" * len(cols))
    for name, n, cells in rows:
        print(f"| {name} | {n} | " + " | ".join(cells.get(c, "") for c in cols) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s; '=' same graph_hash as the reference path, a number is the "
          "embedding cosine where it differs)")


if __name__ == "__main__":
    main()
