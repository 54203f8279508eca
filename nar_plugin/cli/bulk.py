"""``nar index bulk``: index whole hubs and registries, serially or on Ray (mounted in ``nar index``)."""

from __future__ import annotations

from typing import Any

import click

from nar_plugin.cli.options import json_option, tracking_uri_option
from nar_plugin.cli.output import console, emit

__all__ = ["index_bulk"]

#: failures listed in the human report (all of them are in the failures file and in --json)
_SHOWN = 20


def _report(report: Any) -> Any:
    from rich.console import Group
    from rich.table import Table

    info = report.engine_info
    where = f"{report.engine} engine" + (f", {info['workers']} workers, embed on {info['device']}"
                                         if report.engine == "ray" and info else "")
    head = (f"indexed [bold]{len(report.indexed)}[/bold] of {report.total} sources "
            f"({report.keys_written} entries), skipped {len(report.skipped)} already indexed, "
            f"failed {len(report.failed)}; {report.seconds:.1f} s ({report.per_minute:.1f}/min, {where})")
    if not report.failed:
        return head
    t = Table("source", "error", "message", title=f"Failures (all in {report.failures_path})"
              if report.failures_path else "Failures")
    for f in report.failed[:_SHOWN]:
        t.add_row(f.source, f.error, f.message)
    more = len(report.failed) - _SHOWN
    return Group(head, t, *([f"... and {more} more"] if more > 0 else []))


@click.command(name="bulk")
@click.argument("specs", nargs=-1, metavar="[SPEC]...",
                help="timm name, HF repo id[@rev], ONNX / pt2 / MLflow model path, or models:/ URI")
@click.option("--from-file", "files", multiple=True, metavar="F",
              help="file of specs, one per line (# comments allowed; repeatable)")
@click.option("--hf-author", "authors", multiple=True, metavar="ORG",
              help="every model repo of this Hub user or organisation (repeatable)")
@click.option("--timm", "timm_patterns", multiple=True, metavar="PATTERN",
              help="every timm architecture matching this pattern, e.g. 'resnet*' or '*' (repeatable)")
@click.option("--mlflow", "all_mlflow", is_flag=True,
              help="every logged model and registered version on the tracking server")
@tracking_uri_option
@click.option("--engine", type=click.Choice(["auto", "local", "ray"]), default="auto", show_default=True,
              help="local: serial in this process; ray: a Ray Data pipeline (auto: ray when RAY_ADDRESS is set)")
@click.option("--workers", type=int, default=None,
              help="Ray extraction workers (default: the cluster's CPUs less one)")
@click.option("--resume", is_flag=True, help="skip sources already indexed at the same revision")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="sources per embedding batch and per index write")
@click.option("--failures", metavar="F", default=None,
              help="JSONL file of failures (default: bulk-failures.jsonl in the index folder)")
@click.option("--token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN)")
@json_option
@click.pass_context
def index_bulk(ctx: click.Context, specs: tuple[str, ...], files: tuple[str, ...], authors: tuple[str, ...],
               timm_patterns: tuple[str, ...], all_mlflow: bool, tracking_uri: str | None, engine: str,
               workers: int | None, resume: bool, batch_size: int, failures: str | None, token: str | None,
               as_json: bool) -> None:
    """index many models at once: whole hubs, registries, timm (serial or on Ray)

    Sources from SPECs, spec files, Hub authors, timm patterns and the MLflow registry are
    combined (repeats dropped). A source that fails is listed (and written to the failures
    file); the others are indexed. Exits with 1 when any source failed.
    """
    from nar_plugin import bulk

    sources: list[Any] = []
    bad: list[Any] = []
    lines = list(specs) + [s for f in files for s in bulk.read_specs(f)]
    for spec in lines:
        try:
            sources.append(bulk.parse_spec(spec, tracking_uri))
        except ValueError as e:  # a bad line is a failure of that line, not of the run
            bad.append(bulk.Failure(spec, "ValueError", str(e)))
    for pattern in timm_patterns:
        sources += bulk.timm_sources(pattern)
    for author in authors:
        sources += bulk.hf_author_sources(author, token)
    if all_mlflow:
        sources += bulk.mlflow_sources(tracking_uri)
    if not sources and not bad:
        raise ValueError("give at least one SPEC, --from-file, --hf-author, --timm or --mlflow")
    options = bulk.BulkOptions(engine=engine, workers=workers, resume=resume, batch_size=batch_size,
                               index=ctx.obj, failures_path=failures, progress=None if not as_json else False,
                               token=token)
    report = bulk.bulk_index(sources, options)
    if bad:
        report.failed = bad + report.failed
        report.total += len(bad)
        if report.failures_path:
            import json

            with open(report.failures_path, "a") as fh:
                fh.writelines(json.dumps(f.__dict__, sort_keys=True) + "\n" for f in bad)
    emit(as_json, report.to_dict(), lambda: console().print(_report(report)))
    if not report.ok:
        ctx.exit(1)
