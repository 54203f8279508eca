"""``nar lineage``: a model's parent chain, children and copies, read from its weights."""

from __future__ import annotations

from typing import Any

import click

from nar_plugin.cli.options import (
    index_option,
    json_option,
    tracking_uri_option,
    wide_option,
)
from nar_plugin.cli.output import console, emit

__all__ = ["COMMANDS", "lineage"]


@click.command()
@click.argument("model", help="index key, or an MLflow run id / model id / models:/ URI")
@index_option
@tracking_uri_option
@wide_option
@json_option
def lineage(model: str, index: str | None, tracking_uri: str | None, as_json: bool) -> None:
    """the parent chain and the children of a model, from its weight fingerprint

    MODEL is looked up in the index first; MLflow ids and models:/ URIs are resolved on the
    tracking server of --tracking-uri (the local index is synced from it first). Only models
    logged or indexed with their weights at hand have a fingerprint.
    """
    from nar_plugin.integrations.mlflow.client import using_tracking_uri
    from nar_plugin.search import resolvers
    from nar_plugin.search.api import open_index
    from nar_plugin.search.weights import lineage as model_lineage

    idx = open_index(index)
    key = model
    with using_tracking_uri(tracking_uri):
        if model not in idx:
            resolve = resolvers.resolver_for(model)
            if resolve is not None:
                own = resolve(model, idx).exclude_keys
                key = own[0] if own else model
        report = model_lineage(idx, key)
    data = {"key": report.key, "parents": [{"key": k, "similarity": round(s, 4)} for k, s in report.parents],
            "children": [{"key": k, "similarity": round(s, 4)} for k, s in report.children],
            "copies": report.copies,
            "tree": [{"parent": p, "child": c, "similarity": round(s, 4)} for p, c, s in report.tree]}
    emit(as_json, data, lambda: console().print(_text(data)))


def _text(data: dict[str, Any]) -> str:
    lines = [f"[bold]{data['key']}[/bold]"]
    for depth, p in enumerate(data["parents"], 1):
        lines.append(f"{'  ' * depth}fine-tuned from {p['key']} (weight similarity {p['similarity']:.3f})")
    if not data["parents"]:
        lines.append("  no parent among the indexed models (a root)")
    for c in data["children"]:
        lines.append(f"  parent of {c['key']} (weight similarity {c['similarity']:.3f})")
    if data["copies"]:
        lines.append("  same weights as: " + ", ".join(data["copies"]))
    return "\n".join(lines)


COMMANDS = (lineage,)
