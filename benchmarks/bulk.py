"""Bulk indexing: the serial engine vs the Ray engine on a deterministic subset of timm.

Takes every k-th name of ``sorted(timm.list_models())`` (``--models`` of them), indexes them
with ``nar_plugin.bulk.bulk_index`` into two fresh indexes, serial (``--engine local``) and on a
local Ray cluster with ``--workers`` extraction workers, in one run, and prints:

* wall time and models/s of both, and their ratio (end to end, and in steady state: after the
  first batch reached the writer);
* Ray's fixed start-up cost (``ray.init``; time to the first batch less what that batch cost
  at the steady rate);
* peak RSS of each Ray extraction worker and of the serial process;
* per-model cost by timm family (from the serial run), for ``docs/scale.md``;
* that both indexes hold the same keys and graph hashes, embeddings within 1e-5.

The serial run is warmed up first (imports, encoder) so it is not charged for them; Ray is
charged for everything it does after ``bulk_index`` is called (that is its cost).

    .venv/bin/python benchmarks/bulk.py [--models 120] [--workers 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def subset(n: int) -> list[str]:
    import timm

    names = sorted(timm.list_models())
    step = max(1, len(names) // n)
    return names[::step][:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=120, help="timm architectures (every k-th name)")
    ap.add_argument("--workers", type=int, default=2, help="Ray extraction workers")
    ap.add_argument("--batch-size", type=int, default=16, help="sources per embed batch and per write")
    ap.add_argument("--json", metavar="F", default=None, help="also write the numbers to this file")
    args = ap.parse_args()

    import numpy as np

    from nar_plugin.bulk import BulkOptions, Source, bulk_index
    from nar_plugin.bulk.stages import peak_rss_mb
    from nar_plugin.extract.timm_models import timm_family
    from nar_plugin.index import EmbeddingIndex

    names = subset(args.models)
    sources = [Source("timm", n) for n in names]
    tmp = Path(tempfile.mkdtemp(prefix="nar-bulk-bench-"))
    os.environ["NAR_HOME"] = str(tmp / "home")
    print(f"{len(names)} timm architectures (every {max(1, len(sorted(__import__('timm').list_models())) // args.models)}"
          f"-th name), {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}", flush=True)

    bulk_index([Source("timm", "resnet18")], BulkOptions(engine="local", index=tmp / "warm", progress=False))
    serial = bulk_index(sources, BulkOptions(engine="local", index=tmp / "serial", batch_size=args.batch_size,
                                             progress=False))
    serial_rss = peak_rss_mb()
    print(f"serial: {serial.seconds:.1f} s, {len(serial.indexed)} indexed, {len(serial.failed)} failed", flush=True)
    load_mid = os.getloadavg()[0]
    ray = bulk_index(sources, BulkOptions(engine="ray", workers=args.workers, index=tmp / "ray",
                                          batch_size=args.batch_size, progress=False))
    info = ray.engine_info
    print(f"ray:    {ray.seconds:.1f} s, {len(ray.indexed)} indexed, {len(ray.failed)} failed", flush=True)

    n = len(serial.indexed) + len(serial.failed)
    s_rate = n / serial.seconds
    r_rate = n / ray.seconds
    steady_n = n - args.batch_size
    r_steady = steady_n / max(ray.seconds - info["first_batch_s"], 1e-9)
    startup = info["first_batch_s"] - args.batch_size / r_steady
    a = {e.key: e for e in EmbeddingIndex(tmp / "serial", read_only=True).entries()}
    b = {e.key: e for e in EmbeddingIndex(tmp / "ray", read_only=True).entries()}
    same = set(a) == set(b) and all(a[k].graph_hash == b[k].graph_hash for k in a)
    max_diff = max((float(np.abs(a[k].vector - b[k].vector).max()) for k in a if k in b), default=0.0)

    fam: dict[str, list[float]] = defaultdict(list)
    for sid, sec in serial.source_seconds.items():
        fam[timm_family(sid.removeprefix("timm:"))].append(sec)
    families = sorted(((f, len(v), statistics.median(v), max(v)) for f, v in fam.items()), key=lambda t: -t[2])

    out = {
        "models": len(names), "workers": args.workers, "batch_size": args.batch_size,
        "serial_s": round(serial.seconds, 2), "serial_per_s": round(s_rate, 3),
        "ray_s": round(ray.seconds, 2), "ray_per_s": round(r_rate, 3), "ratio_end_to_end": round(r_rate / s_rate, 3),
        "ray_steady_per_s": round(r_steady, 3), "ratio_steady": round(r_steady / s_rate, 3),
        "ray_init_s": round(info["init_s"], 2), "ray_first_batch_s": round(info["first_batch_s"], 2),
        "ray_startup_s": round(startup, 2),
        "ray_worker_peak_rss_mb": sorted(round(v) for v in ray.workers.values()),
        "serial_peak_rss_mb": round(serial_rss), "failed": sorted(f.source for f in serial.failed),
        "same_keys_and_hashes": same, "max_abs_embedding_diff": max_diff,
        "serial_extract_s_mean": round(serial.extract_s / max(n, 1), 3),
        "load_avg_before_ray": round(load_mid, 2), "load_avg_after": round(os.getloadavg()[0], 2),
        "families": [{"family": f, "models": c, "median_s": round(m, 3), "max_s": round(x, 3)} for f, c, m, x in families],
    }
    print(f"\nserial {out['serial_per_s']:.2f} models/s | ray ({args.workers} workers) {out['ray_per_s']:.2f} models/s "
          f"end to end, {out['ray_steady_per_s']:.2f} steady")
    print(f"ratio ray/serial: {out['ratio_end_to_end']:.2f}x end to end, {out['ratio_steady']:.2f}x steady (target 1.7x)")
    print(f"ray start-up: init {out['ray_init_s']:.1f} s, first batch at {out['ray_first_batch_s']:.1f} s, "
          f"fixed cost ~{out['ray_startup_s']:.1f} s")
    print(f"peak RSS: ray workers {out['ray_worker_peak_rss_mb']} MiB, serial process {out['serial_peak_rss_mb']} MiB")
    print(f"same keys and hashes: {same}; max |embedding diff| {max_diff:.2e}; load avg {out['load_avg_before_ray']} "
          f"-> {out['load_avg_after']}")
    print("\nper-model seconds by timm family (serial; top 12 by median):")
    for f in out["families"][:12]:
        print(f"  {f['family']:<24} {f['models']:>3} models  median {f['median_s']:.3f} s  max {f['max_s']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
