"""Bulk indexing of whole hubs and registries (``nar index bulk``), serial or on Ray.

Modules, one job each::

    sources     Source, spec lines, listings (--hf-author, --timm, --mlflow), what "revision" means
    stages      fetch + build on meta + extract (one source), embed (a batch): shared by both engines
    writer      the one writer: batched upserts through the public index API, resume state, failures
    ray_engine  the Ray Data pipeline (the only module that imports Ray, inside a function)
    run         bulk_index, BulkOptions, BulkReport, the serial engine

Names are imported lazily: ``import nar_plugin.bulk`` imports neither torch nor Ray.
See ``docs/scale.md`` for the plan to index the whole Hub on a cluster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nar_plugin.bulk.run import BulkOptions, BulkReport, bulk_index, choose_engine
    from nar_plugin.bulk.sources import (
        Source,
        hf_author_sources,
        mlflow_sources,
        parse_spec,
        read_specs,
        timm_sources,
    )
    from nar_plugin.bulk.writer import Failure, indexed_revisions

__all__ = [
    "BulkOptions",
    "BulkReport",
    "Failure",
    "Source",
    "bulk_index",
    "choose_engine",
    "hf_author_sources",
    "indexed_revisions",
    "mlflow_sources",
    "parse_spec",
    "read_specs",
    "timm_sources",
]

_HOME = {
    "BulkOptions": "run",
    "BulkReport": "run",
    "bulk_index": "run",
    "choose_engine": "run",
    "Source": "sources",
    "hf_author_sources": "sources",
    "mlflow_sources": "sources",
    "parse_spec": "sources",
    "read_specs": "sources",
    "timm_sources": "sources",
    "Failure": "writer",
    "indexed_revisions": "writer",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
