"""``nar corpus build|stats``, ``nar train``, ``nar eval``: reproducing and measuring the encoder."""

from __future__ import annotations

import json
import signal
from typing import Any

import click

from nar_plugin.cli.crosslib import crosslib
from nar_plugin.cli.options import json_option
from nar_plugin.cli.output import console, emit
from nar_plugin.corpus.options import SOURCES

__all__ = ["COMMANDS", "corpus", "train", "eval_command"]

corpus_dir_option = click.option("--corpus", metavar="DIR", default=None,
                                 help="corpus directory (default: the built corpus)")


@click.group()
def corpus() -> None:
    """build the training/evaluation corpus (timm, transformers, torchvision, NAS)"""


def _interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


@corpus.command()
@click.option("--sources", default=",".join(SOURCES), show_default=True,
              help="comma-separated subset of the corpus sources")
@click.option("--out", metavar="DIR", default=None, help="corpus directory (default: <repo>/corpus or NAR_HOME/corpus)")
@click.option("--workers", type=int, default=2, show_default=True, help="worker processes")
@click.option("--limit", type=int, default=None, help="at most N base entries per source")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds per item")
@click.option("--seed", type=int, default=0, show_default=True, help="NAS sampler seed")
@click.option("--nas-families", type=int, default=400, show_default=True, help="NAS families per search space")
@click.option("--no-hf-variants", is_flag=True, help="only default transformers configs")
@click.option("--retry-failed", is_flag=True, help="rebuild items recorded as failed")
@click.option("--rebuild", is_flag=True, help="delete a stale corpus and start over")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def build(sources: str, out: str | None, workers: int, limit: int | None, timeout: float, seed: int,
          nas_families: int, no_hf_variants: bool, retry_failed: bool, rebuild: bool, no_progress: bool) -> None:
    """build or resume a corpus (a finished build re-run builds nothing)"""
    from nar_plugin.corpus import CorpusOptions, build_corpus

    opts = CorpusOptions(timeout_s=timeout, hf_variants=not no_hf_variants, seed=seed,
                         nas_darts_families=nas_families, nas_nb201_families=nas_families,
                         retry_failed=retry_failed)
    # `kill <pid>` stops like Ctrl-C: the batch in hand is written and the workers are stopped
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = build_corpus([s.strip() for s in sources.split(",") if s.strip()], out, workers=workers,
                               limit=limit, progress=not no_progress, options=opts, rebuild=rebuild)
    except KeyboardInterrupt:
        click.echo("interrupted; finished items are saved, run the same command to resume", err=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    console(wide=True).print(summary.render())


@corpus.command()
@click.option("--out", metavar="DIR", default=None, help="corpus directory (default: the built corpus)")
@click.option("--markdown", is_flag=True, help="the full Markdown report (docs/corpus.md)")
def stats(out: str | None, markdown: bool) -> None:
    """print the summary table of an existing corpus"""
    from nar_plugin.corpus import corpus_stats, default_corpus_dir

    if markdown:
        from nar_plugin.corpus.report import corpus_markdown

        click.echo(corpus_markdown(out if out is not None else default_corpus_dir()))
    else:
        console(wide=True).print(corpus_stats(out).render())


@click.command()
@corpus_dir_option
@click.option("--out", metavar="DIR", default="nar_plugin/weights", show_default=True,
              help="where to write the weights and card")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="training device")
@click.option("--epochs", type=int, default=None, help="training epochs (default: the shipped config's)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of data order, splits and init")
@click.option("--calibrate-only", is_flag=True, help="only recompute thresholds.json for the weights in --out")
def train(corpus: str | None, out: str, device: str, epochs: int | None, seed: int, calibrate_only: bool) -> None:
    """train the NAR encoder (reproduces the shipped weights)

    Then calibrates the relation thresholds (thresholds.json) on the cross-library benchmark
    (corpus/cross_library: the same networks written by different libraries).
    """
    from nar_plugin.evaluation.calibrate import calibrate_cross_library

    if not calibrate_only:
        from nar_plugin.training.loop import train_command

        kwargs = {} if epochs is None else {"epochs": epochs}
        result = train_command(corpus, out, seed=seed, device=device, **kwargs)
        click.echo(f"trained {result.encoder_version} in {result.seconds:.0f} s: {json.dumps(result.metrics)}")
    th = calibrate_cross_library(out, seed=seed)
    click.echo(f"relation thresholds: {json.dumps(th)}")


_CORPUS_METHODS = "nar,histogram,wl,gcn,gat"


@click.command(name="eval")
@corpus_dir_option
@click.option("--methods", default=_CORPUS_METHODS, show_default=True,
              help="comma-separated methods to compare")
@click.option("--splits", default="by_model,by_family", show_default=True, help="comma-separated splits")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of item selection, splits and training")
@click.option("--gnn-epochs", type=int, default=20, show_default=True, help="epochs of the GCN/GAT baselines")
@click.option("--nar-epochs", type=int, default=None, help="epochs when NAR is retrained for a split")
@click.option("--out", metavar="F.md", default="eval.md", show_default=True, help="Markdown file for the tables")
@click.option("--benchmark", type=click.Choice(["corpus", "cross-library"]), default="corpus", show_default=True,
              help="corpus: both splits of the training corpus; cross-library: the same architectures from other "
                   "libraries (docs/cross-library.md; --methods defaults to nar,histogram,histogram_attrs,wl,aten,"
                   "aten_compute, add gcn,gat to train those)")
@click.option("--gallery", type=click.Choice(["others", "all"]), default="others", show_default=True,
              help="cross-library only: search other libraries' models only, or every other model")
@click.option("--leave-one-out", "leave_one_out", is_flag=True,
              help="cross-library only: add NAR retrained without each query library (trains the missing "
                   "encoders into --lolo-dir first, ~10 min each on 2 CPU cores)")
@click.option("--lolo-dir", metavar="DIR", default=None,
              help="where the leave-one-library-out encoders are kept (default: NAR_HOME/lolo)")
@json_option
def eval_command(corpus: str | None, methods: str, splits: str, seed: int, gnn_epochs: int, nar_epochs: int | None,
                 out: str, benchmark: str, gallery: str, leave_one_out: bool, lolo_dir: str | None,
                 as_json: bool) -> None:
    """NAR vs. baselines (GCN, GAT, WL, op histogram) on both splits of the corpus, or on the
    cross-library benchmark; Markdown table"""
    from nar_plugin.evaluation.runner import run_eval

    if benchmark == "cross-library":
        lolo = None
        if leave_one_out:
            from nar_plugin.evaluation.leave_one_out import leave_one_out_nar

            lolo = leave_one_out_nar(lolo_dir, corpus, epochs=nar_epochs or 30, seed=seed,
                                     log=(lambda s: None) if as_json else click.echo)
        _eval_cross_library(corpus, methods, gnn_epochs, gallery, out, as_json, lolo)
        return
    res = run_eval(corpus, methods=methods.split(","), splits=splits.split(","), seed=seed, gnn_epochs=gnn_epochs,
                   nar_epochs=nar_epochs, out=out, log=(lambda s: None) if as_json else click.echo)
    emit(as_json, res, lambda: None)  # the tables were logged while it ran and written to --out


def _eval_cross_library(corpus: str | None, methods: str, gnn_epochs: int, gallery: str, out: str,
                        as_json: bool, lolo: Any = None) -> None:
    from pathlib import Path

    from nar_plugin.evaluation.cross_library_report import DEFAULT_REPORT_METHODS, cross_library_report

    chosen = DEFAULT_REPORT_METHODS if methods == _CORPUS_METHODS else tuple(m for m in methods.split(",") if m)
    res = cross_library_report(None, chosen, corpus=corpus, gnn_epochs=gnn_epochs, gallery=gallery,
                               log=(lambda s: None) if as_json else click.echo, leave_one_out=lolo)
    Path(out).write_text(res["markdown"] + "\n")
    emit(as_json, {k: v for k, v in res.items() if k != "markdown"}, lambda: click.echo(res["markdown"]))


corpus.add_command(crosslib)

COMMANDS = (corpus, train, eval_command)
