"""``nar demo`` and ``nar map``: the end-to-end demo and the 2-D map of the index."""

from __future__ import annotations

import click

from nar_plugin.cli.options import index_option, json_option
from nar_plugin.cli.output import emit

__all__ = ["COMMANDS", "demo", "map_command"]


@click.command()
@click.option("--dir", "workdir", default=".nar-demo", show_default=True,
              help="work directory (MLflow store, artifacts, index); emptied first when it holds a demo")
@click.option("--server", is_flag=True, help="start a local `mlflow server` instead of the embedded store")
@click.option("--map", "out_map", default="nar-map.html", show_default=True, help="where to write the HTML map")
@click.option("--limit", type=int, default=None, help="log only the first N models")
@json_option
def demo(workdir: str, server: bool, out_map: str, limit: int | None, as_json: bool) -> None:
    """the main job: run nar-plugin end to end on embedded defaults"""
    import shutil
    from pathlib import Path

    from nar_plugin.apps.demo import run_demo

    wd = Path(workdir)
    if wd.exists() and (wd / "mlflow.db").exists():
        shutil.rmtree(wd)  # a demo starts from an empty registry so its output is reproducible
    result = run_demo(wd, server=server, out_map=out_map, limit=limit,
                      echo=(lambda s: None) if as_json else click.echo)
    emit(as_json, result, lambda: None)  # the human text was echoed while the demo ran


@click.command(name="map")
@click.option("--out", default="nar-map.html", show_default=True, help="the HTML file to write")
@index_option
@click.option("-k", "k", type=int, default=5, show_default=True, help="nearest models listed on click")
def map_command(out: str, index: str | None, k: int) -> None:
    """write an interactive 2-D map of every indexed model (self-contained HTML)"""
    from nar_plugin.apps.map import write_map

    n = write_map(out, index=index, k=k)
    click.echo(f"wrote {out} ({n} models)")


COMMANDS = (demo, map_command)
