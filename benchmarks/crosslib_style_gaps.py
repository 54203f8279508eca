"""Where coding style leaks into the IR: same-fine-label pairs across libraries, compared.

For every pair of cross-library benchmark models with the same fine label from two different
libraries (``corpus/cross_library``), compare their graphs: graph-hash equality, node counts, the
op-histogram difference and the cosine of their WL subtree features
(:func:`~nar_plugin.evaluation.baselines.wl_embed`, 3 rounds). Prints the totals, one row per
library pair, the op differences seen in most pairs (the candidates for canonical passes) and
the worst pairs. Stored graphs are upgraded to the current canonical passes when read, so run it
before and after a pass change (``--json`` keeps a run, ``--compare`` diffs against one).

    .venv/bin/python benchmarks/crosslib_style_gaps.py [--json gaps.json] [--compare before.json]
        [--top 25] [--worst 30] [--timing]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pairs(items: list[Any]) -> list[tuple[int, int]]:
    by_fine: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_fine[it.fine].append(i)
    out = []
    for idx in by_fine.values():
        for a, b in combinations(idx, 2):
            if items[a].library != items[b].library:
                # order the pair by library name, so per-library-pair diffs have one sign
                out.append((a, b) if items[a].library < items[b].library else (b, a))
    return sorted(out, key=lambda p: (items[p[0]].key, items[p[1]].key))


def gaps(root: str | None = None) -> dict[str, Any]:
    """The pair table and its summaries (see the module docstring)."""
    import numpy as np

    from nar_plugin.corpus.crosslib.dataset import load_cross_library
    from nar_plugin.evaluation.baselines import wl_embed

    t0 = time.perf_counter()
    items = load_cross_library(root)
    load_s = time.perf_counter() - t0
    pairs = _pairs(items)
    used = sorted({i for p in pairs for i in p})
    local = {i: k for k, i in enumerate(used)}
    emb = wl_embed([items[i].graph for i in used], steps=3)
    rows = []
    for a, b in pairs:
        ga, gb = items[a].graph, items[b].graph
        ha, hb = ga.op_histogram(), gb.op_histogram()
        diff = {op: ha.get(op, 0) - hb.get(op, 0) for op in set(ha) | set(hb) if ha.get(op, 0) != hb.get(op, 0)}
        rows.append({
            "a": items[a].key, "b": items[b].key, "fine": items[a].fine,
            "libs": f"{items[a].library}|{items[b].library}",
            "equal_hash": ga.graph_hash == gb.graph_hash,
            "nodes": [ga.num_nodes, gb.num_nodes],
            "wl_cos": float(np.dot(emb[local[a]], emb[local[b]])),
            "op_diff": dict(sorted(diff.items())),
        })
    per: dict[str, dict[str, Any]] = {}
    for lp in sorted({r["libs"] for r in rows}):
        rs = [r for r in rows if r["libs"] == lp]
        ops: Counter[str] = Counter()
        for r in rs:
            for op, d in r["op_diff"].items():
                ops[f"{op}{'+' if d > 0 else '-'}"] += 1
        per[lp] = {
            "pairs": len(rs), "equal_hash": sum(r["equal_hash"] for r in rs),
            "median_wl": statistics.median(r["wl_cos"] for r in rs),
            "equal_hist": sum(not r["op_diff"] for r in rs),
            "top_diffs": ops.most_common(4),
        }
    freq: Counter[str] = Counter()
    for r in rows:
        for op, d in r["op_diff"].items():
            freq[op] += 1
    return {
        "graphs": len(items), "pairs": len(rows), "load_seconds": round(load_s, 1),
        "equal_hash": sum(r["equal_hash"] for r in rows),
        "equal_hist": sum(not r["op_diff"] for r in rows),
        "median_wl": statistics.median(r["wl_cos"] for r in rows),
        "p10_wl": float(np.percentile([r["wl_cos"] for r in rows], 10)),
        "per_library_pair": per, "op_freq": freq.most_common(), "rows": rows,
    }


def canon_timing(root: str | None = None, repeat: int = 3) -> dict[str, Any]:
    """Seconds to run the canonical passes on the benchmark's largest stored graph."""
    from nar_plugin.corpus.crosslib.dataset import load_cross_library
    from nar_plugin.graph.canonical import graph_nodes, run_passes

    g = max((it.graph for it in load_cross_library(root)), key=lambda g: g.num_nodes)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run_passes(graph_nodes(g.ops, g.attrs, g.edges))
        best = min(best, time.perf_counter() - t)
    return {"nodes": g.num_nodes, "name": g.metadata.get("name"), "seconds": best}


def _report(res: dict[str, Any], before: dict[str, Any] | None, top: int, worst: int) -> str:
    out = []

    def cmp(key: str, fmt: str = "{}") -> str:
        now = fmt.format(res[key])
        return f"{fmt.format(before[key])} -> {now}" if before else now

    out.append(f"{res['graphs']} graphs, {res['pairs']} same-fine-label cross-library pairs")
    out.append(f"equal graph hash: {cmp('equal_hash')}; equal op histogram: {cmp('equal_hist')}; "
               f"median WL cosine: {cmp('median_wl', '{:.3f}')} (10th pct {cmp('p10_wl', '{:.3f}')})")
    out.append("")
    out.append("| library pair | pairs | equal hash | equal histogram | median WL cosine | most frequent op differences |")
    out.append("|---|---:|---:|---:|---:|---|")
    bp = (before or {}).get("per_library_pair", {})
    for lp, s in sorted(res["per_library_pair"].items(), key=lambda kv: -kv[1]["pairs"]):
        b = bp.get(lp)
        eq = f"{b['equal_hash']} -> {s['equal_hash']}" if b else str(s["equal_hash"])
        wl = f"{b['median_wl']:.3f} -> {s['median_wl']:.3f}" if b else f"{s['median_wl']:.3f}"
        diffs = ", ".join(f"{op} ({n})" for op, n in s["top_diffs"])
        out.append(f"| {lp.replace('|', ' / ')} | {s['pairs']} | {eq} | {s['equal_hist']} | {wl} | {diffs} |")
    out.append("")
    out.append(f"op types that differ, by number of pairs (top {top}; '+' = first library has more):")
    signed: Counter[str] = Counter()
    for r in res["rows"]:
        for op, d in r["op_diff"].items():
            signed[f"{op}{'+' if d > 0 else '-'}"] += 1
    out.append("  " + ", ".join(f"{op} {n}" for op, n in res["op_freq"][:top]))
    out.append("  signed: " + ", ".join(f"{op} {n}" for op, n in signed.most_common(top)))
    out.append("")
    out.append(f"worst pairs by WL cosine (bottom {worst}):")
    for r in sorted(res["rows"], key=lambda r: r["wl_cos"])[:worst]:
        d = ", ".join(f"{k}{v:+d}" for k, v in sorted(r["op_diff"].items(), key=lambda kv: -abs(kv[1]))[:6])
        out.append(f"  {r['wl_cos']:.3f} {r['a']} vs {r['b']} nodes {r['nodes'][0]}/{r['nodes'][1]}: {d}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="benchmark directory (default corpus/cross_library)")
    p.add_argument("--json", default=None, help="write the full result (pairs included) here")
    p.add_argument("--compare", default=None, help="a --json file of an earlier run to diff against")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--worst", type=int, default=30)
    p.add_argument("--timing", action="store_true", help="also time the passes on the largest graph")
    args = p.parse_args(argv)
    res = gaps(args.root)
    if args.timing:
        res["canon_timing"] = canon_timing(args.root)
    before = json.loads(Path(args.compare).read_text()) if args.compare else None
    print(_report(res, before, args.top, args.worst))
    if args.timing:
        t = res["canon_timing"]
        print(f"\ncanonical passes on the largest graph ({t['name']}, {t['nodes']} nodes): {t['seconds']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
