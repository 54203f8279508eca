"""Corpus build throughput: graphs per minute per source with N worker processes.

Two modes:

* default: build an evenly spaced sample of every source into a temporary directory (fresh
  cache) and report, per source, the wall-clock graphs/minute of that build (worker start-up
  included, as in a real build), the median per-item seconds, and the projected time of the
  whole source at this rate;
* ``--from-corpus DIR``: the same table from a finished corpus, using the wall time its build
  recorded in ``manifest.json`` and each record's own seconds.

Usage::

    .venv/bin/python benchmarks/corpus.py                          # sample build, 2 workers
    .venv/bin/python benchmarks/corpus.py --per-source 40 --workers 2
    .venv/bin/python benchmarks/corpus.py --from-corpus corpus
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nar_plugin.corpus import CorpusOptions, build_corpus, load_records  # noqa: E402
from nar_plugin.corpus.pool import SOURCE_MODULES  # noqa: E402


def _population(source: str) -> list[str]:
    """Every base entry of a source, in the order a build takes them."""
    if source == "timm":
        import timm

        return sorted(timm.list_models())
    if source == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models())
    if source == "transformers":
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        return sorted(CONFIG_MAPPING_NAMES)
    return []


def _spread(items: list[str], n: int) -> list[str]:
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _row(source: str, recs: list[dict], wall_s: float, population: int, workers: int) -> dict:
    ok = [r for r in recs if r["status"] == "ok"]
    secs = [r["seconds"] for r in recs]
    cpu = [r["info"]["cpu_seconds"] for r in ok if "cpu_seconds" in r.get("info", {})]
    gpm = 60.0 * len(ok) / wall_s if wall_s > 0 else float("nan")
    ipm = 60.0 * len(recs) / wall_s if wall_s > 0 else float("nan")
    return {
        "source": source, "items": len(recs), "ok": len(ok), "wall_s": round(wall_s, 1),
        "graphs_per_min": round(gpm, 1), "items_per_min": round(ipm, 1),
        "median_item_s": round(statistics.median(secs), 2) if secs else None,
        "p95_item_s": round(sorted(secs)[max(0, math.ceil(0.95 * len(secs)) - 1)], 2) if secs else None,
        "population": population,
        "projected_min": round(population / ipm, 1) if population and ipm == ipm and ipm > 0 else None,
        # CPU seconds of the items themselves / workers: the wall time on idle cores (start-up and
        # failures excluded), which a loaded machine's wall clock does not show
        "cpu_min_at_workers": (round(statistics.mean(cpu) * population / max(workers, 2) / 60, 1)
                               if cpu else None),
        "workers": workers,
    }


def sample_build(per_source: int, workers: int, sources: list[str]) -> list[dict]:
    names = {s: _spread(_population(s), per_source) for s in sources if s != "nas"}
    opts = CorpusOptions(names=names, hf_variants=False, nas_darts_families=max(1, per_source // 2),
                         nas_nb201_families=max(1, per_source // 2), nas_members=2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        summary = build_corpus(sources, tmp, workers=workers, progress=False, options=opts)
        for src in sources:
            recs = list(load_records(tmp, [src]))
            pop = len(_population(src)) if src != "nas" else 4000
            rows.append(_row(src, recs, summary.sources[src].seconds, pop, workers))
    return rows


def from_corpus(path: str) -> list[dict]:
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    rows = []
    for src, stats in sorted(manifest.get("sources", {}).items()):
        recs = list(load_records(path, [src]))
        last = stats.get("last_build", {})
        row = _row(src, recs, float(last.get("seconds", 0.0)), len(recs), 2)
        row["built_last_run"] = last.get("built")
        if last.get("seconds"):
            row["graphs_per_min"] = last.get("graphs_per_minute")
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-source", type=int, default=30, help="sample size per source (default 30)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sources", default=",".join(SOURCE_MODULES))
    p.add_argument("--from-corpus", default=None, help="report a finished corpus instead of building")
    p.add_argument("--json", action="store_true", help="print JSON rows")
    a = p.parse_args()
    rows = from_corpus(a.from_corpus) if a.from_corpus else sample_build(
        a.per_source, a.workers, [s.strip() for s in a.sources.split(",") if s.strip()])
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    cols = ["source", "items", "ok", "wall_s", "graphs_per_min", "median_item_s", "p95_item_s", "projected_min",
            "cpu_min_at_workers"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{str(r.get(c)):>14}" for c in cols))
    print(f"cpu count: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; projected_min = whole source at "
          "this run's items/minute; cpu_min_at_workers = mean CPU seconds per built item x items / workers")


if __name__ == "__main__":
    main()
