"""Further ``nar`` commands (registered on import by :mod:`nar_plugin.cli`)."""

from __future__ import annotations

import argparse

from nar_plugin.cli import console, emit, register_command

DEMO_MODELS = ("resnet18", "resnet50", "vit_base_patch16_224", "bert", "gpt2")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="*", default=list(DEMO_MODELS), help="sources to extract")
    p.add_argument("--json", action="store_true")


def _demo(args: argparse.Namespace) -> int:
    import time

    from rich.table import Table

    from nar_plugin.extract import extract_graph

    rows = []
    for src in args.models:
        t = time.perf_counter()
        g = extract_graph(src)
        rows.append({"source": src, "nodes": g.num_nodes, "edges": g.num_edges,
                     "tracer": g.metadata.get("tracer"), "hash": g.graph_hash,
                     "top_ops": dict(g.op_histogram().most_common(5)),
                     "seconds": round(time.perf_counter() - t, 3)})

    def human() -> None:
        t = Table("source", "tracer", "nodes", "edges", "graph hash", "top ops", "s", title="Architecture graphs (meta device, no weights)")
        for r in rows:
            t.add_row(r["source"], str(r["tracer"]), str(r["nodes"]), str(r["edges"]), r["hash"][:12],
                      ", ".join(f"{k}:{v}" for k, v in r["top_ops"].items()), f"{r['seconds']:.2f}")
        console().print(t)

    emit(args, rows, human)
    return 0


register_command("demo", "the main job: run nar-plugin end to end on embedded defaults", _demo_args, _demo)


# ------------------------------------------------------------------ nar motifs
def _motifs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="anything `nar graph` accepts")
    p.add_argument("--steps", type=int, default=2, help="neighbour-encoding rounds (s)")
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--max-size", type=int, default=32)
    p.add_argument("--top", type=int, default=20, help="motif types to list")
    p.add_argument("--json", action="store_true")


def _motifs(args: argparse.Namespace) -> int:
    from nar_plugin.extract import extract_graph
    from nar_plugin.motifs import format_motif_summary, sample_motifs

    g = extract_graph(args.source)
    mg = sample_motifs(g, steps=args.steps, min_count=args.min_count, max_size=args.max_size)
    emit(args, mg.summary(), lambda: print(format_motif_summary(mg, top=args.top)))
    return 0


register_command("motifs", "split a model's graph into motifs and print the macro graph size", _motifs_args, _motifs)
