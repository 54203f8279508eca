"""``nar similar`` and ``nar dedup``: questions asked of the index."""

from __future__ import annotations

import click

from nar_plugin.cli.options import index_option, json_option, tracking_uri_option, wide_option
from nar_plugin.cli.output import console, emit, note
from nar_plugin.cli.render import dedup_report_text, empty_index_hint, matches_table

__all__ = ["COMMANDS", "similar", "dedup"]

# the relations of nar_plugin.search, strongest first (literal: importing search here would load numpy);
# "identical" is the old name of "same-architecture", still accepted
RELATIONS = ("same-weights", "fine-tuned-from", "same-architecture", "near-duplicate", "related", "unrelated")
_CHOICES = (*RELATIONS, "identical")


@click.command()
@click.argument("query", help="index key, MLflow run id / model id / models:/ URI, or a model source")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="number of matches (>= 1)")
@click.option("--relation", type=click.Choice(_CHOICES), default=None,
              help="keep only matches at least this close (near-duplicate keeps every stronger relation too; "
                   "identical = same-architecture)")
@index_option
@click.option("--explain", is_flag=True, help="show why each match is close (shared motifs, op differences)")
@tracking_uri_option
@wide_option
@json_option
def similar(query: str, k: int, relation: str | None, index: str | None, explain: bool, tracking_uri: str | None,
            as_json: bool) -> None:
    """find indexed models with similar architectures

    QUERY is looked up in the index first. MLflow run ids, model ids and models:/ URIs are
    resolved on the tracking server of --tracking-uri (default: MLFLOW_TRACKING_URI), named
    on stderr; anything else is treated as a model source and extracted.
    """
    from nar_plugin.integrations.mlflow.client import using_tracking_uri
    from nar_plugin.integrations.mlflow.keys import is_mlflow_query
    from nar_plugin.search.api import find_similar, open_index

    if is_mlflow_query(query):
        _say_tracking_uri(tracking_uri, check=True)
    with using_tracking_uri(tracking_uri):
        matches = find_similar(query, k=k, relation=relation, index=index)
    emit(as_json, [m.to_dict() for m in matches], lambda: console().print(matches_table(query, matches, explain)))
    if not matches:
        idx = open_index(index)
        note(empty_index_hint(len(idx), idx.path))


@click.command()
@tracking_uri_option
@click.option("--no-sync", is_flag=True, help="use the local index as it is (no pull from MLflow first)")
@json_option
def dedup(tracking_uri: str | None, no_sync: bool, as_json: bool) -> None:
    """clusters of registered model versions, by relation

    Pulls the nar-tagged models and versions from MLflow first (see `nar index sync`),
    then groups the registered versions of the index: same weights (copies), fine-tuned
    trees (parent -> child, from the weights), same architecture, near-duplicates.
    """
    from dataclasses import asdict

    from nar_plugin.integrations.mlflow.registry import dedup_report

    _say_tracking_uri(tracking_uri, check=not no_sync)
    clusters = dedup_report(tracking_uri=tracking_uri, sync=not no_sync)
    emit(as_json, [asdict(c) for c in clusters], lambda: console().print(_clusters_text(clusters)))


def _clusters_text(clusters: list) -> str:
    """``nar dedup``: one line per cluster; a fine-tuned tree lists its edges."""
    lines = []
    for c in clusters:
        if c.relation == "fine-tuned-from":
            lines.append("[bold]fine-tuned-from[/bold]: " + ", ".join(f"{p} -> {ch}" for p, ch in c.edges))
        else:
            lines.append(dedup_report_text([c]))
    return "\n".join(lines) if lines else dedup_report_text([])


def _say_tracking_uri(tracking_uri: str | None, check: bool) -> None:
    """One stderr line naming the tracking server a command reads (stdout stays clean for --json);
    with ``check``, fail now if it does not answer (before the index and torch are loaded)."""
    from nar_plugin.integrations.mlflow.client import check_tracking_store, resolve_tracking_uri

    uri, origin = resolve_tracking_uri(tracking_uri)
    note(f"nar: MLflow tracking server {uri} ({origin})")
    if check:
        check_tracking_store(uri, origin)


COMMANDS = (similar, dedup)
