"""Steady-state cost of `find_similar(run_id)` as the model registry grows (500 / 5,000 / 50,000
registered model versions), against a SQLite tracking store used directly (no server).

Each `find_similar(<run id>)` first syncs the local index from the tracking server. Before
issue 14 the sync listed every registered version on every call (the registry's search cannot
filter on update time); now it reads the registered models changed since the last sync (newest
first; a new version moves its model's update time), then their versions, each down to the first
one older than the last sync. Per size this measures, after one full (cold) sync:

- `list all`: the work every call did before: listing every version (`search_model_versions`,
  pages of 500);
- `sync`: one incremental `sync_from_tracking` with nothing new;
- `find_similar`: the whole call (resolution of the run id, sync, FAISS search), nothing new;
- `+1 version`: the whole call when one new tagged version was registered since the last one;
- `throttled`: the whole call with `NAR_SYNC_INTERVAL=60` (no sync at all).

Versions are created in bulk with SQL inserts into MLflow's own tables (the registry client
takes ~20 ms a version, 20 minutes for 50,000), after one made through `MlflowClient` to check
that the rows read back the same. Every version carries `nar.*` tags (random embeddings).

    .venv/bin/python benchmarks/find_similar_scale.py [--sizes 500 5000 50000] [--calls 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["NAR_AUTOLOG"] = "false"  # the population must not run the registry hook
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")


def _median_ms(fn: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _tags(seed: int) -> dict[str, str]:
    import numpy as np

    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import encoder_version

    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return {"nar.embedding": encode_embedding(v / np.linalg.norm(v)), "nar.encoder": encoder_version(),
            "nar.graph_hash": f"h{seed:08d}", "nar.status": "ok"}


def _populate(db: Path, n: int, per_model: int = 100) -> None:
    """``n`` tagged versions: ``per_model`` versions of each registered model, created a day ago."""
    t0 = int(time.time() * 1000) - 86_400_000
    rows, tags, names = [], [], []
    for i in range(n):
        name, version = f"bench-{i // per_model:05d}", i % per_model + 1
        if version == 1:
            names.append((name, t0 + i, t0 + i))
        rows.append((name, version, t0 + i, t0 + i, "None", f"s3://bench/{i}", "READY"))
        tags.extend((k, v, name, version) for k, v in _tags(i).items())
    with sqlite3.connect(db) as con:
        con.executemany("INSERT INTO registered_models (name, creation_time, last_updated_time) VALUES (?,?,?)", names)
        con.executemany("INSERT INTO model_versions (name, version, creation_time, last_updated_time, current_stage, "
                        "source, status) VALUES (?,?,?,?,?,?,?)", rows)
        con.executemany('INSERT INTO model_version_tags ("key", value, name, version) VALUES (?,?,?,?)', tags)


def _query_run(client: Any) -> str:
    """A run whose logged model carries nar tags (what a hooked log_model leaves)."""
    from mlflow.entities import LoggedModelOutput

    exp = client.create_experiment("bench")
    run = client.create_run(exp)
    lm = client.create_logged_model(exp, name="query", source_run_id=run.info.run_id)
    client.set_logged_model_tags(lm.model_id, _tags(10**9))
    client.log_outputs(run.info.run_id, [LoggedModelOutput(lm.model_id, 0)])
    return run.info.run_id


def measure(n: int, calls: int, root: Path) -> dict[str, Any]:
    import mlflow

    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.integrations.mlflow.keys import server_id, version_key
    from nar_plugin.integrations.mlflow.sync import _pages, sync_from_tracking
    from nar_plugin.search.api import find_similar

    db = root / f"mlflow-{n}.db"
    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(uri)
    client.search_experiments()  # creates the schema
    run_id = _query_run(client)
    t0 = time.perf_counter()
    _populate(db, n)
    populate_s = time.perf_counter() - t0
    assert len(client.search_model_versions(max_results=10)) == 10
    mlflow.set_tracking_uri(uri)
    idx = EmbeddingIndex(root / f"index-{n}")
    t0 = time.perf_counter()
    first = sync_from_tracking(uri, index=idx)
    full_sync_s = time.perf_counter() - t0
    assert first.versions_added == n, first
    list_all_ms = _median_ms(lambda: sum(1 for _ in _pages(client.search_model_versions)), 3 if n <= 5000 else 1)
    sync_ms = _median_ms(lambda: sync_from_tracking(uri, index=idx), calls)
    find_similar(run_id, index=idx)  # warm: encoder, FAISS cache
    steady_ms = _median_ms(lambda: find_similar(run_id, index=idx), calls)
    added: list[float] = []
    for i in range(calls):
        name = f"new-{i}"
        client.create_registered_model(name)
        mv = client.create_model_version(name, f"s3://bench/new-{i}", tags=_tags(10**8 + i))
        t0 = time.perf_counter()
        find_similar(run_id, index=idx)
        added.append(time.perf_counter() - t0)
        assert version_key(name, mv.version, server_id(uri)) in idx, "the new version was not synced"
    os.environ["NAR_SYNC_INTERVAL"] = "60"
    try:
        throttled_ms = _median_ms(lambda: find_similar(run_id, index=idx), calls)
    finally:
        del os.environ["NAR_SYNC_INTERVAL"]
    return {"versions": n, "populate_s": round(populate_s, 2), "full_sync_s": round(full_sync_s, 2),
            "list_all_ms": round(list_all_ms, 1), "sync_ms": round(sync_ms, 1),
            "find_similar_ms": round(steady_ms, 1), "plus_one_version_ms": round(1000 * statistics.median(added), 1),
            "throttled_ms": round(throttled_ms, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 5000, 50000])
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nar-scale-"))
    os.environ["NAR_HOME"] = str(root / "nar")
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)  # MLflow's "creating tables" lines
    results = []
    print("| versions | list all (before, ms) | sync (ms) | find_similar (ms) | +1 version (ms) | throttled (ms) "
          "| full sync (s) |")
    print("|---|---|---|---|---|---|---|")
    for n in a.sizes:
        r = measure(n, a.calls, root)
        results.append(r)
        print(f"| {n:,} | {r['list_all_ms']} | {r['sync_ms']} | {r['find_similar_ms']} | {r['plus_one_version_ms']} "
              f"| {r['throttled_ms']} | {r['full_sync_s']} |", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
