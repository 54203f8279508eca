"""``nar corpus crosslib {install,manifest,build,coverage}``: the cross-library benchmark's data."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["crosslib"]

target_option = click.option("--target", metavar="DIR", default=None,
                             help="third-party library folder (default ~/.cache/nar-plugin/thirdparty or "
                                  "$NAR_THIRDPARTY_DIR)")
out_option = click.option("--out", metavar="DIR", default=None, help="benchmark directory (default corpus/cross_library)")


@click.group()
def crosslib() -> None:
    """the cross-library benchmark's data (docs/cross-library.md)"""


@crosslib.command()
@target_option
@click.option("--dry-run", is_flag=True, help="print the pip command without running it")
def install(target: str | None, dry_run: bool) -> None:
    """pip install the pinned model libraries --no-deps into the cache folder"""
    from nar_plugin.corpus.crosslib import install as inst

    click.echo(" ".join(inst.install(target, dry_run=dry_run)))
    for name, why in inst.NOT_USABLE.items():
        click.echo(f"{name}: not installed ({why})")


@crosslib.command()
@out_option
@target_option
def manifest(out: str | None, target: str | None) -> None:
    """regenerate manifest.json from the installed libraries and the family rules"""
    from nar_plugin.corpus.crosslib import install as inst
    from nar_plugin.corpus.crosslib.manifest import default_dir, generate_manifest, write_manifest

    with inst.on_path(target):
        doc = generate_manifest()
    path = write_manifest(doc, Path(out or default_dir()) / "manifest.json")
    click.echo(f"{len(doc['models'])} models -> {path}")


@crosslib.command()
@out_option
@target_option
@click.option("--libraries", default=None, help="comma-separated libraries (default: all)")
@click.option("--limit", type=int, default=None, help="at most N models per library")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds per model")
@click.option("--workers", type=int, default=1, show_default=True, help="worker processes")
@click.option("--retry-failed", is_flag=True, help="extract models recorded as failed again")
def build(out: str | None, target: str | None, libraries: str | None, limit: int | None, timeout: float,
          workers: int, retry_failed: bool) -> None:
    """extract the graph of every manifest row not yet recorded (resumable)"""
    from nar_plugin.corpus.crosslib import install as inst
    from nar_plugin.corpus.crosslib.build import build_cross_library

    with inst.on_path(target):
        stats = build_cross_library(out, libraries=libraries.split(",") if libraries else None, limit=limit,
                                    timeout_s=timeout, workers=workers, retry_failed=retry_failed)
    click.echo(json.dumps(stats, indent=2))


@crosslib.command()
@out_option
@click.option("--markdown", is_flag=True, help="a Markdown table instead of JSON")
def coverage(out: str | None, markdown: bool) -> None:
    """extraction coverage per library, with the failure reasons"""
    from nar_plugin.cli.render import coverage_markdown
    from nar_plugin.corpus.crosslib.build import coverage as cov_of

    cov = cov_of(out)
    click.echo(coverage_markdown(cov) if markdown else json.dumps(cov, indent=2))
