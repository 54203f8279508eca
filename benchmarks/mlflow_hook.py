"""Cost of the MLflow hook: `mlflow.pytorch.log_model` of ResNet-50 with nar-plugin on vs off.

Same process, same run, alternating on/off so drift hits both; pt2 format with explicit
`pip_requirements` so requirement inference (5-10 s) does not hide our cost. Uses a local
SQLite tracking store. A last, profiled `log_model` with the hook on counts the work the hook
does per call (encoder forward passes, motif samplings) and the time spent inside it.

    .venv/bin/python benchmarks/mlflow_hook.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def _hook_work(profile: cProfile.Profile) -> dict[str, tuple[int, float]]:
    """(calls, cumulative s) of the functions whose count the hook's cost depends on."""
    wanted = {"embed_many": "encoder passes", "sample_motifs": "motif samplings",
              "index_logged_model": "hook total"}
    out: dict[str, tuple[int, float]] = {}
    for (_, _, func), (_, ncalls, _, cum, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if func in wanted:
            calls, t = out.get(wanted[func], (0, 0.0))
            out[wanted[func]] = (calls + ncalls, t + cum)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="resnet50")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nar-bench-")
    os.environ.setdefault("NAR_HOME", os.path.join(tmp, "nar"))
    import mlflow
    import timm
    import torch

    import nar_plugin.mlflow as nm

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())  # not ./mlruns
    mlflow.set_experiment("bench")
    model = timm.create_model(a.model).eval()
    x = torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {"on": [], "off": []}
    with mlflow.start_run():
        # warm-up both paths (imports, encoder load)
        for state in ("on", "off"):
            nm.autolog(disable=state == "off", silent=True)
            mlflow.pytorch.log_model(model, name=f"warm-{state}", input_example=x.numpy(), pip_requirements=["torch"])
        for i in range(a.repeat):
            for state in ("off", "on") if i % 2 == 0 else ("on", "off"):
                nm.autolog(disable=state == "off", silent=True)
                t = time.perf_counter()
                mlflow.pytorch.log_model(model, name=f"m-{state}-{i}", input_example=x.numpy(), pip_requirements=["torch"])
                times[state].append(time.perf_counter() - t)
        nm.autolog(silent=True)
        profile = cProfile.Profile()
        profile.runcall(mlflow.pytorch.log_model, model, name="profiled", input_example=x.numpy(),
                        pip_requirements=["torch"])
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    print("| model | log_model off (s) | log_model on (s) | overhead |")
    print("|---|---|---|---|")
    print(f"| {a.model} | {off:.2f} | {on:.2f} | {100 * (on - off) / off:+.1f}% |")
    print()
    print("work inside one hooked log_model (profiled):")
    for what, (calls, t) in sorted(_hook_work(profile).items()):
        print(f"  {what:<16} {calls:3d} call(s)  {t:.3f} s")


if __name__ == "__main__":
    main()
