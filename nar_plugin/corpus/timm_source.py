"""Corpus source ``timm``: every ``timm.list_models()`` architecture, family = its timm module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nar_plugin.corpus.options import CorpusOptions
from nar_plugin.corpus.pool import Task
from nar_plugin.graph import ArchGraph

__all__ = ["plan", "build_task", "warm_up"]

NAME = "timm"


def warm_up() -> None:
    import timm  # noqa: F401

    from nar_plugin.extract import timm_models, torch_module  # noqa: F401


def plan(records: Mapping[str, Mapping[str, Any]], options: CorpusOptions) -> list[Task]:
    """One task per architecture name (pretrained tags are not separate architectures)."""
    import timm

    from nar_plugin.extract.timm_models import timm_family

    tasks = []
    for name in options.select(NAME, sorted(timm.list_models())):
        tasks.append(Task(f"timm:{name}", NAME, name, timm_family(name), {"name": name}))
    return tasks


def build_task(task: Task) -> tuple[ArchGraph, dict[str, Any]]:
    """Build on meta and extract (fx when faithful, else torch.export)."""
    from nar_plugin.extract.timm_models import graph_from_timm

    g = graph_from_timm(task.spec["name"], metadata={"family": task.family})
    return g, {"tracer": g.metadata.get("tracer", "export")}
