"""Command line of the cross-library benchmark's data (``python -m nar_plugin.corpus.crosslib``).

* ``install [--target DIR]`` -- pinned third-party libraries, ``--no-deps``, outside the venv.
* ``manifest [--out DIR]`` -- regenerate ``manifest.json`` from the libraries and the rules.
* ``build [--libraries a,b] [--limit N] [--timeout S] [--retry-failed]`` -- extract the graphs.
* ``coverage [--markdown]`` -- ok / failed per library and the failure reasons.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _markdown(cov: dict[str, dict]) -> str:
    lines = ["| library | models | extracted | failed | coverage | tracer (fx / export) |", "|---|---:|---:|---:|---:|---|"]
    tot = [0, 0, 0]
    for lib, c in cov.items():
        tr = c["tracers"]
        lines.append(f"| {lib} | {c['models']} | {c['ok']} | {c['failed']} | {100 * c['ok'] / max(c['models'], 1):.1f}% "
                     f"| {tr.get('fx', 0)} / {tr.get('export', 0)} |")
        tot = [tot[0] + c["models"], tot[1] + c["ok"], tot[2] + c["failed"]]
    lines.append(f"| **all** | {tot[0]} | {tot[1]} | {tot[2]} | {100 * tot[1] / max(tot[0], 1):.1f}% | |")
    fails = [(lib, k, r) for lib, c in cov.items() for k, r in c["failures"].items()]
    if fails:
        lines += ["", "| model | reason |", "|---|---|"]
        lines += [f"| `{k}` | {r[:150].replace('|', '/')} |" for _, k, r in fails]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nar_plugin.corpus.crosslib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("install", help="pip install the pinned libraries --no-deps into the cache folder")
    pi.add_argument("--target", default=None)
    pi.add_argument("--dry-run", action="store_true")
    pm = sub.add_parser("manifest", help="regenerate manifest.json")
    pm.add_argument("--out", default=None, help="benchmark directory (default corpus/cross_library)")
    pm.add_argument("--target", default=None, help="third-party folder")
    pb = sub.add_parser("build", help="extract the graphs of every manifest row (resumable)")
    pb.add_argument("--out", default=None)
    pb.add_argument("--target", default=None)
    pb.add_argument("--libraries", default=None, help="comma-separated")
    pb.add_argument("--limit", type=int, default=None)
    pb.add_argument("--timeout", type=float, default=120.0)
    pb.add_argument("--workers", type=int, default=1)
    pb.add_argument("--retry-failed", action="store_true")
    pc = sub.add_parser("coverage", help="extraction coverage per library")
    pc.add_argument("--out", default=None)
    pc.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from nar_plugin.corpus.crosslib import install as inst

    if args.cmd == "install":
        cmd = inst.install(args.target, dry_run=args.dry_run)
        print(" ".join(cmd))
        for name, why in inst.NOT_USABLE.items():
            print(f"{name}: not installed ({why})")
        return 0
    if args.cmd == "manifest":
        from nar_plugin.corpus.crosslib.manifest import (
            default_dir,
            generate_manifest,
            write_manifest,
        )

        with inst.on_path(args.target):
            doc = generate_manifest()
        path = write_manifest(doc, Path(args.out or default_dir()) / "manifest.json")
        print(f"{len(doc['models'])} models -> {path}")
        return 0
    if args.cmd == "build":
        from nar_plugin.corpus.crosslib.build import build_cross_library

        libs = args.libraries.split(",") if args.libraries else None
        with inst.on_path(args.target):
            stats = build_cross_library(args.out, libraries=libs, limit=args.limit, timeout_s=args.timeout,
                                        workers=args.workers, retry_failed=args.retry_failed)
        print(json.dumps(stats, indent=2))
        return 0
    if args.cmd == "coverage":
        from nar_plugin.corpus.crosslib.build import coverage

        cov = coverage(args.out)
        print(_markdown(cov) if args.markdown else json.dumps(cov, indent=2))
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
