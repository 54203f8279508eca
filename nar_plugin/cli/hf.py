"""``nar index hf``: index Hugging Face Hub repos from their config only (mounted in ``nar index``).

``nar serve hf-webhook`` is in :mod:`nar_plugin.cli.serve`.
"""

from __future__ import annotations

import click

from nar_plugin.cli.options import json_option
from nar_plugin.cli.output import console, emit
from nar_plugin.cli.render import hf_index_report

__all__ = ["index_hf"]


@click.command(name="hf")
@click.argument("repos", nargs=-1, metavar="[REPO]...", help="repo ids, optionally with @revision")
@click.option("--from-file", metavar="F", default=None, help="file with one repo id per line (# comments allowed)")
@click.option("--workers", type=int, default=4, show_default=True, help="parallel downloads")
@click.option("--token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN)")
@json_option
@click.pass_context
def index_hf(ctx: click.Context, repos: tuple[str, ...], from_file: str | None, workers: int, token: str | None,
             as_json: bool) -> None:
    """index Hugging Face Hub model repos by id (config.json only, no weights)

    Exits with 1 when any repo failed (the others are indexed; failures are listed).
    """
    from nar_plugin.integrations.hf import index_repos, specs_from_file

    specs = list(repos) + (specs_from_file(from_file) if from_file else [])
    if not specs:
        raise ValueError("give at least one REPO or --from-file")
    summary = index_repos(specs, workers=workers, progress=not as_json, token=token, index=ctx.obj)
    emit(as_json, summary.to_dict(), lambda: console().print(hf_index_report(summary, len(specs))))
    if not summary.ok:
        ctx.exit(1)
