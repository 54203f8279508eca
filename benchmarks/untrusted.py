"""Untrusted input: each attack -> result, peak RSS growth, wall time (docs/security.md, "Measured").

Every measurement runs in a fresh Python process, so one attack's memory cannot hide another's.
RSS growth is ``ru_maxrss`` after the call minus ``ru_maxrss`` before it, in that process (the
modules the call needs are imported before the baseline, as in a long-running receiver). Two
ways of reading each artifact are measured:

* ``in-process``: the reader the MLflow ``log_model`` hook uses (``graph_from_pt2``,
  ``graph_from_hf_config``), budgets on;
* ``sandboxed``: ``extract_graph_sandboxed``, what the webhook receivers call; the child's own
  peak RSS is reported apart (it is the child's, bounded by ``NAR_SANDBOX_MEMORY_MB``).

``--unbounded`` also measures the attacks with the budgets raised out of the way (what they
prevent; the 800-layer config then takes about a minute).

    .venv/bin/python benchmarks/untrusted.py [--unbounded] [--skip-honest]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
#: Budgets raised out of the way (``--unbounded``): what nar-plugin did before it had budgets.
UNBOUNDED = {"NAR_MAX_MEMBER_MB": "100000", "NAR_MAX_JSON_DEPTH": "100000000", "NAR_MAX_CONFIG_LAYERS": "100000",
             "NAR_MAX_JSON_MB": "100000"}


# ------------------------------------------------------------------ artifacts
def make_artifacts(folder: Path, honest: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    bomb = folder / "bomb.pt2"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("archive/models/model.json", "w", force_zip64=True) as f:
        chunk = b" " * (1 << 20)
        for _ in range(400):
            f.write(chunk)
    out["pt2 bomb (408 KB file, 400 MB models/model.json)"] = bomb
    deep = folder / "deep" / "config.json"
    deep.parent.mkdir()
    deep.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 800}))
    out["config.json with num_hidden_layers=800"] = deep
    nested = folder / "nested" / "config.json"
    nested.parent.mkdir()
    nested.write_text('{"model_type": "bert", "x": ' + "[" * 1_000_000 + "]" * 1_000_000 + "}")
    out["config.json nested 1,000,000 deep (2 MB)"] = nested
    nested_pt2 = folder / "nested.pt2"
    with zipfile.ZipFile(nested_pt2, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/models/model.json", "[" * 5_000_000 + "]" * 5_000_000)
    out["models/model.json nested 5,000,000 deep (10 MB)"] = nested_pt2
    auto = folder / "auto_map" / "config.json"
    auto.parent.mkdir()
    auto.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64,
                                "num_attention_heads": 2, "intermediate_size": 128,
                                "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    out["config.json with auto_map (custom code)"] = auto
    auto2 = folder / "auto_map_no_class" / "config.json"
    auto2.parent.mkdir()
    auto2.write_text(json.dumps({"model_type": "align_text_model", "num_hidden_layers": 1,
                                 "auto_map": {"AutoModel": "evil.EvilModel"}}))
    out["config.json with auto_map, type without a built-in AutoModel class"] = auto2
    if honest:
        honest_pt2 = folder / "honest.pt2"
        subprocess.run([sys.executable, str(HERE), "--export-honest", str(honest_pt2)], check=True)
        out["honest: 2,500 x (Linear + ReLU), exported pt2"] = honest_pt2
    return out


def export_honest(path: str) -> None:
    import torch

    layers: list[torch.nn.Module] = []
    for _ in range(2500):
        layers += [torch.nn.Linear(8, 8), torch.nn.ReLU()]
    ep = torch.export.export(torch.nn.Sequential(*layers).eval(), (torch.zeros(1, 8),))
    torch.export.save(ep, path)


# ------------------------------------------------------------------ one measurement (child process)
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, path: str, index: bool) -> dict[str, Any]:
    import builtins

    prompted: list[str] = []
    builtins.input = lambda *a: prompted.append(str(a[:1])) or "n"  # a prompt would hang a receiver
    p = Path(path)
    is_config = p.suffix == ".json"
    if mode == "sandboxed":
        from nar_plugin.extract.sandbox import extract_graph_sandboxed as fn
    elif is_config:
        import torch  # noqa: F401 - a receiver has these loaded already
        import transformers  # noqa: F401

        from nar_plugin.extract.transformers import graph_from_hf_config as fn
    else:
        from nar_plugin.extract.aten import graph_from_pt2 as fn
    # the sandbox's parent imports nothing heavy before the call: a forked child starts with its
    # parent's RSS, which would show up as the child's peak
    before = _peak_mb()
    t0 = time.perf_counter()
    graph = None
    try:
        graph = fn(p)
        result = f"extracted: {graph.num_nodes} nodes"
    except Exception as e:  # noqa: BLE001 - the result of an attack is its error
        result = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    wall = time.perf_counter() - t0
    out = {"result": result, "wall_s": wall, "rss_growth_mb": _peak_mb() - before, "prompted": bool(prompted)}
    if mode == "sandboxed":
        out["child_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if index and graph is not None:  # after the measurement: loads torch and the encoder
        from nar_plugin.index import open_index
        from nar_plugin.search.api import index_graph

        t1 = time.perf_counter()
        index_graph(graph, "bench:honest")
        out["result"] += f"; indexed ({len(open_index())} entry, {time.perf_counter() - t1:.1f} s with encoder load)"
    return out


def run_child(mode: str, path: Path, env_extra: dict[str, str], index: bool = False) -> dict[str, Any]:
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, str(HERE), "--measure", mode, str(path)] + (["--index"] if index else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"result": f"process failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}",
                "wall_s": float("nan"), "rss_growth_mb": float("nan")}
    return json.loads(proc.stdout.strip().splitlines()[-1])



# ------------------------------------------------------------------ webhook receivers (real uvicorn processes)
RECEIVER_SECRET = "bench-secret-0123456789"
MALFORMED_BODIES = [b"{not json", b'{"entity": "\xff\xfe"}', b"[1, 2, 3]", b'"model_version"',
                    b"[" * 200_000 + b"]" * 200_000,
                    b'{"entity": "model_version", "action": "created", "data": [1]}',
                    b'{"entity": "model_version", "action": "created", "data": {"name": {"a": 1}, "version": 1}}',
                    b'{"entity": "model_version", "action": "created", "data": {"name": "m"}}']


def _signed(body: bytes, did: str | None = None) -> dict[str, str]:
    import uuid

    from nar_plugin.integrations.mlflow.webhook import sign

    did = did or uuid.uuid4().hex
    ts = str(int(time.time()))
    return {"X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
            "X-MLflow-Signature": sign(RECEIVER_SECRET, did, ts, body), "Content-Type": "application/json"}


def receiver_rows(base_env: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Attacks on the receivers, each against a fresh receiver process: status, the receiver's
    RSS growth (peak ``VmHWM`` after minus ``VmRSS`` before) and the wall time to the answer."""
    import httpx

    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    from fixtures.receivers import post_raw, rss_mb, start_receiver, stop

    mb = 1 << 20
    os.environ.update(base_env)
    rows: list[tuple[str, str, dict[str, Any]]] = []

    def run(kind: str, name: str, attack: Any) -> None:
        proc, port = start_receiver(kind, RECEIVER_SECRET)
        try:
            before, _ = rss_mb(proc.pid)
            t0 = time.perf_counter()
            result = attack(port)
            wall = time.perf_counter() - t0
            time.sleep(0.2)
            _, peak = rss_mb(proc.pid)
        finally:
            stop(proc)
        where = "MLflow receiver" if kind.startswith("mlflow") else "HF receiver"
        rows.append((name, where, {"result": result, "wall_s": wall, "rss_growth_mb": peak - before}))
        print(f"{name} | {where} | {rows[-1][2]}", file=sys.stderr)

    def huge(headers: dict[str, str], chunked: bool = False) -> Any:
        def attack(port: int) -> str:
            r = post_raw(port, "/webhook", headers, 300 * mb, chunked=chunked)
            return f"{r.status} after {r.seconds:.3f} s; {r.sent / mb:.0f} MB of 300 MB sent when it answered"
        return attack

    run("mlflow", "unsigned 300 MB POST", huge({"Content-Type": "application/json"}))
    run("hf", "300 MB POST without the secret", huge({"Content-Type": "application/json"}))
    run("mlflow", "signed 300 MB POST, chunked (no Content-Length)", huge(_signed(b"x"), chunked=True))

    def malformed(port: int) -> str:
        codes = [httpx.post(f"http://127.0.0.1:{port}/webhook", content=b, headers=_signed(b)).status_code
                 for b in MALFORMED_BODIES]
        return f"{len(codes)} bodies (not JSON, not UTF-8, array, string, 200,000 deep, bad data): " + \
            ", ".join(str(c) for c in codes)

    run("mlflow", "signed malformed JSON", malformed)

    def replay(port: int) -> str:
        body = json.dumps({"entity": "model_version", "action": "created",
                           "data": {"name": "m", "version": "1", "source": "models:/m-" + "0" * 32}}).encode()
        headers = _signed(body)
        codes = [httpx.post(f"http://127.0.0.1:{port}/webhook", content=body, headers=headers).status_code
                 for _ in range(3)]
        return f"same delivery id 3 times, handler fails the 1st: {' -> '.join(map(str, codes))} (retry handled)"

    run("mlflow-flaky", "replay after a 500 (MLflow's retry)", replay)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unbounded", action="store_true", help="also measure with the budgets raised")
    ap.add_argument("--skip-honest", action="store_true", help="skip the 5,000-node honest model (30 s export)")
    ap.add_argument("--receivers-only", action="store_true", help="only the webhook receiver rows")
    ap.add_argument("--skip-receivers", action="store_true", help="skip the webhook receiver rows")
    ap.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--index", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--export-honest", metavar="PATH", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.export_honest:
        export_honest(a.export_honest)
        return
    if a.measure:
        print(json.dumps(measure(a.measure[0], a.measure[1], a.index)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="nar-untrusted-"))
    base_env = {"NAR_HOME": str(tmp / "nar"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"}
    arts = {} if a.receivers_only else make_artifacts(tmp, honest=not a.skip_honest)
    rows = []
    for name, path in arts.items():
        honest = name.startswith("honest")
        configs = [("in-process", {}), ("sandboxed", {})]
        if a.unbounded and not honest and "auto_map" not in name:  # auto_map has no budget to raise
            configs.append(("in-process, budgets raised", UNBOUNDED))
        for mode, extra in configs:
            r = run_child(mode.split(",")[0], path, {**base_env, **extra}, index=honest and mode == "sandboxed")
            rows.append((name, mode, r))
            print(f"{name} | {mode} | {r}", file=sys.stderr)
    if not a.skip_receivers:
        rows += receiver_rows(base_env)
    print("| attack | path | result | peak RSS growth (MB) | wall (s) |")
    print("|---|---|---|---:|---:|")
    for name, mode, r in rows:
        child = f" (child peak {r['child_peak_mb']:.0f} MB)" if "child_peak_mb" in r else ""
        prompt = "; **prompted**" if r.get("prompted") else ""
        print(f"| {name} | {mode} | {r['result']}{prompt} | {r['rss_growth_mb']:.1f}{child} | {r['wall_s']:.2f} |")


if __name__ == "__main__":
    main()
