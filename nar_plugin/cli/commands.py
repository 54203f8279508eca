"""Further ``nar`` commands (registered on import by :mod:`nar_plugin.cli`)."""

from __future__ import annotations

import argparse

from nar_plugin.cli.main import console, emit, register_command

def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=".nar-demo", help="work directory (MLflow store, artifacts, index)")
    p.add_argument("--server", action="store_true", help="start a local `mlflow server` instead of the embedded store")
    p.add_argument("--map", default="nar-map.html", help="where to write the HTML map")
    p.add_argument("--limit", type=int, help="log only the first N models")
    p.add_argument("--json", action="store_true")


def _demo(args: argparse.Namespace) -> int:
    import json
    import shutil
    from pathlib import Path

    from nar_plugin.apps.demo import run_demo

    wd = Path(args.dir)
    if wd.exists() and (wd / "mlflow.db").exists():
        shutil.rmtree(wd)  # a demo starts from an empty registry so its output is reproducible
    result = run_demo(wd, server=args.server, out_map=args.map, limit=args.limit,
                      echo=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
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


# ------------------------------------------------------------------ nar map
def _map_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="nar-map.html")
    p.add_argument("--index", help="index directory (default: $NAR_HOME/index)")
    p.add_argument("-k", type=int, default=5, help="nearest models listed on click")


def _map(args: argparse.Namespace) -> int:
    from nar_plugin.apps.map import write_map

    n = write_map(args.out, index=args.index, k=args.k)
    print(f"wrote {args.out} ({n} models)")
    return 0


register_command("map", "write an interactive 2-D map of every indexed model (self-contained HTML)", _map_args, _map)


# ------------------------------------------------------------------ nar corpus
def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "stats"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options (see `nar corpus build -h`, `nar corpus stats -h`)")


def _corpus(args: argparse.Namespace) -> int:
    from nar_plugin.corpus import corpus_build_command

    return corpus_build_command([args.action, *args.rest])


register_command("corpus", "build the training/evaluation corpus (timm, transformers, torchvision, NAS)", _corpus_args, _corpus)


# ------------------------------------------------------------------ nar train
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="corpus directory (default: the built corpus)")
    p.add_argument("--out", default="nar_plugin/weights", help="where to write the weights and card")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibrate-only", action="store_true",
                   help="only recompute thresholds.json for the weights in --out")


def _train(args: argparse.Namespace) -> int:
    import json

    from nar_plugin.evaluation.calibrate import calibrate_from_corpus

    if not args.calibrate_only:
        from nar_plugin.training.loop import train_command

        kwargs = {} if args.epochs is None else {"epochs": args.epochs}
        result = train_command(args.corpus, args.out, seed=args.seed, device=args.device, **kwargs)
        print(f"trained {result.encoder_version} in {result.seconds:.0f} s: {json.dumps(result.metrics)}")
    th = calibrate_from_corpus(args.corpus, args.out, seed=args.seed)
    print("relation thresholds:", json.dumps(th))
    return 0


register_command("train", "train the NAR encoder (reproduces the shipped weights)", _train_args, _train)


# ------------------------------------------------------------------ nar eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="corpus directory (default: the built corpus)")
    p.add_argument("--methods", default="nar,histogram,wl,gcn,gat", help="comma-separated")
    p.add_argument("--splits", default="by_model,by_family", help="comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gnn-epochs", type=int, default=20)
    p.add_argument("--nar-epochs", type=int, help="epochs when NAR is retrained for a split")
    p.add_argument("--out", default="eval.md", help="Markdown file for the tables")
    p.add_argument("--json", action="store_true")


def _eval(args: argparse.Namespace) -> int:
    import json

    from nar_plugin.evaluation.runner import run_eval

    res = run_eval(args.corpus, methods=args.methods.split(","), splits=args.splits.split(","), seed=args.seed,
                   gnn_epochs=args.gnn_epochs, nar_epochs=args.nar_epochs, out=args.out,
                   log=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


register_command("eval", "NAR vs. baselines (GCN, GAT, WL, op histogram) on both splits; Markdown table", _eval_args, _eval)
