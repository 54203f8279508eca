"""``nar similar`` and ``nar dedup``: questions asked of the index."""

from __future__ import annotations

import click

from nar_plugin.cli.options import index_option, json_option, tracking_uri_option
from nar_plugin.cli.output import console, emit
from nar_plugin.cli.render import dedup_report_text, matches_table

__all__ = ["COMMANDS", "similar", "dedup"]

# the relations of nar_plugin.search, strongest first (literal: importing search here would load numpy)
RELATIONS = ("identical", "near-duplicate", "related", "unrelated")


@click.command()
@click.argument("query", help="index key, MLflow run id / model id / models:/ URI, or a model source")
@click.option("-k", "k", type=int, default=10, show_default=True, help="number of matches")
@click.option("--relation", type=click.Choice(RELATIONS), default=None,
              help="keep only matches at least this close (near-duplicate keeps identical ones too)")
@index_option
@click.option("--explain", is_flag=True, help="show why each match is close (shared motifs, op differences)")
@json_option
def similar(query: str, k: int, relation: str | None, index: str | None, explain: bool, as_json: bool) -> None:
    """find indexed models with similar architectures"""
    from nar_plugin.search.api import find_similar

    matches = find_similar(query, k=k, relation=relation, index=index)
    emit(as_json, [m.to_dict() for m in matches], lambda: console().print(matches_table(query, matches, explain)))


@click.command()
@tracking_uri_option
@click.option("--no-sync", is_flag=True, help="use the local index as it is (no pull from MLflow first)")
@json_option
def dedup(tracking_uri: str | None, no_sync: bool, as_json: bool) -> None:
    """clusters of identical / near-duplicate registered model versions

    Pulls the nar-tagged models and versions from MLflow first (see `nar index sync`),
    then groups the registered versions of the index.
    """
    from dataclasses import asdict

    from nar_plugin.integrations.mlflow.registry import dedup_report

    clusters = dedup_report(tracking_uri=tracking_uri, sync=not no_sync)
    emit(as_json, [asdict(c) for c in clusters], lambda: console().print(dedup_report_text(clusters)))


COMMANDS = (similar, dedup)
