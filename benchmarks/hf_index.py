"""HF Hub indexing throughput: repos per minute from a seeded offline cache (no network).

Seeds a Hub cache with N model repos (transformers configs of several model types, half with
small layer counts and half with the library defaults, plus a few timm repos), then runs
``nar_plugin.hf.index_repos`` over them with ``HF_HUB_OFFLINE=1`` into a fresh index, and prints
repos/minute overall and per model type. Target: >= 30 repos/min on 2 cores.

    .venv/bin/python benchmarks/hf_index.py [--repos 30] [--workers 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported

SMALL = {
    "bert": {"num_hidden_layers": 2},
    "roberta": {"num_hidden_layers": 2},
    "distilbert": {"n_layers": 2},
    "gpt2": {"n_layer": 2},
    "llama": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
              "num_key_value_heads": 4},
    "mistral": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
                "num_key_value_heads": 2},
    "t5": {"num_layers": 2, "num_decoder_layers": 2},
    "vit": {"num_hidden_layers": 2},
    "electra": {"num_hidden_layers": 2},
    "albert": {"num_hidden_layers": 2},
    "opt": {"num_hidden_layers": 2},
    "gpt_neox": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4},
}
DEFAULT_TYPES = ["bert", "roberta", "distilbert", "gpt2", "electra", "albert", "vit", "t5", "opt"]
TIMM = [("resnet18", 1000), ("resnet50", 10), ("mobilenetv3_small_100", 1000)]


def seed(cache: Path, repo_id: str, config: dict) -> None:
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "config.json").write_text(json.dumps(config))


def build_cache(cache: Path, n: int) -> dict[str, str]:
    """repo id -> model type label, n repos in a fixed order."""
    repos: dict[str, str] = {}
    candidates = [(f"bench/{t}-small", {"model_type": t, **kw}, f"{t} (2 layers)") for t, kw in SMALL.items()]
    candidates += [(f"bench/{t}-default", {"model_type": t}, f"{t} (default)") for t in DEFAULT_TYPES]
    candidates += [(f"timm/{a}", {"architecture": a, "num_classes": c}, f"timm {a}") for a, c in TIMM]
    i = 0
    while len(repos) < n:
        rid, cfg, label = candidates[i % len(candidates)]
        if i >= len(candidates):
            rid = f"{rid}-{i // len(candidates)}"  # a fine-tune of the same architecture
        seed(cache, rid, cfg)
        repos[rid] = label
        i += 1
    return repos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=30)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "hub"
        os.environ["NAR_HOME"] = str(Path(tmp) / "nar")
        repos = build_cache(cache, a.repos)
        import torch

        from nar_plugin.model.inference import load_encoder
        from nar_plugin.hf import index_repos

        load_encoder()  # one-off cost, not per repo
        import transformers  # noqa: F401 - import time is not per repo either

        import nar_plugin.extract.torch_module as tm

        trace_s: dict[str, float] = {}
        nodes: dict[str, int] = {}
        real_trace = tm.graph_from_module

        def timed_trace(*args, **kw):  # noqa: ANN002, ANN003, ANN202 - measure tracing per repo
            t = time.perf_counter()
            g = real_trace(*args, **kw)
            trace_s[g.metadata["name"]] = time.perf_counter() - t
            nodes[g.metadata["name"]] = g.num_nodes
            return g

        tm.graph_from_module = timed_trace
        t0, c0 = time.perf_counter(), time.process_time()
        summary = index_repos(list(repos), workers=a.workers, progress=False, cache_dir=cache)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        from nar_plugin.index import close_all

        close_all()  # before the temporary NAR_HOME is removed
    ok = len(summary.indexed)
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, workers: {a.workers}, "
          f"load average during the run: {os.getloadavg()[0]:.1f}")
    print("| repos | indexed | failed | wall (s) | repos/min (wall) | process CPU (s) | repos per CPU-minute |\n"
          "|---|---|---|---|---|---|---|\n"
          f"| {len(repos)} | {ok} | {len(summary.failed)} | {total:.1f} | {60 * ok / total:.1f} | {cpu:.1f} | "
          f"{60 * ok / cpu:.1f} |")
    for f in summary.failed:
        print(f"  failed: {f.repo}: {f.error}: {f.message}", file=sys.stderr)
    print("\nper model (graph extraction only; the rest of the wall time is config building, embedding,"
          " index writes):")
    rows: dict[str, list[tuple[float, int]]] = {}
    for rid, label in repos.items():
        if rid in trace_s:
            rows.setdefault(label, []).append((trace_s[rid], nodes[rid]))
    print("| model | repos | nodes | extract s/repo |\n|---|---|---|---|")
    for label, vals in sorted(rows.items()):
        print(f"| {label} | {len(vals)} | {vals[0][1]} | {sum(v[0] for v in vals) / len(vals):.2f} |")
    print(f"| all | {sum(len(v) for v in rows.values())} | | {sum(trace_s.values()) / max(len(trace_s), 1):.2f} |")


if __name__ == "__main__":
    main()
