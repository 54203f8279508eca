"""``nar graph``, ``nar motifs``, ``nar embed``: one model in, its description out."""

from __future__ import annotations

from pathlib import Path

import click

from nar_plugin.cli.options import json_option, source_argument
from nar_plugin.cli.output import console, emit
from nar_plugin.cli.render import format_motif_summary, graph_report
from nar_plugin.motifs.config import MotifConfig

__all__ = ["COMMANDS", "graph", "motifs", "embed"]


@click.command()
@source_argument
@click.option("--tracer", type=click.Choice(["auto", "fx", "export"]), default="auto", show_default=True,
              help="tracer for nn.Module sources: torch.fx, torch.export, or fx when it is faithful (auto)")
@click.option("--out", metavar="F.json", default=None, help="write the ArchGraph JSON here")
@json_option
def graph(source: str, tracer: str, out: str | None, as_json: bool) -> None:
    """extract a model's architecture graph and print a summary"""
    from nar_plugin.extract import extract_graph

    g = extract_graph(source, tracer=tracer)
    if out:
        Path(out).write_text(g.to_json())
    emit(as_json, g.summary(), lambda: console().print(graph_report(source, g)))


@click.command()
@source_argument
@click.option("--steps", type=int, default=MotifConfig.steps, show_default=True,
              help="neighbour-encoding rounds (s) before the motif merges")
@click.option("--min-count", type=int, default=MotifConfig.min_count, show_default=True,
              help="a pattern counts as a motif only with at least this many copies")
@click.option("--max-size", type=int, default=MotifConfig.max_size, show_default=True,
              help="most nodes in one motif instance")
@click.option("--top", type=int, default=20, show_default=True, help="motif types to list")
@json_option
def motifs(source: str, steps: int, min_count: int, max_size: int, top: int, as_json: bool) -> None:
    """split a model's graph into motifs and print the macro graph size"""
    from nar_plugin.extract import extract_graph
    from nar_plugin.motifs import sample_motifs

    mg = sample_motifs(extract_graph(source), steps=steps, min_count=min_count, max_size=max_size)
    emit(as_json, mg.summary(), lambda: click.echo(format_motif_summary(mg, top=top)))


@click.command()
@source_argument
@json_option
def embed(source: str, as_json: bool) -> None:
    """print a model's embedding (tag format, or --json)

    The tag format is what nar-plugin stores in MLflow tags; --json prints
    {"encoder": VERSION, "embedding": [...]} on one line.
    """
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import embed as embed_source
    from nar_plugin.model.inference import encoder_version

    v = embed_source(source)
    data = {"encoder": encoder_version(), "embedding": [round(float(x), 6) for x in v]}
    emit(as_json, data, lambda: click.echo(encode_embedding(v)), indent=None)


COMMANDS = (graph, motifs, embed)
