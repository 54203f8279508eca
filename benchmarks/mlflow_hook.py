"""Cost of the MLflow hook: `mlflow.pytorch.log_model` of ResNet-50 with nar-plugin on vs off.

Same process, same run, alternating on/off so drift hits both; pt2 format with explicit
`pip_requirements` so requirement inference (5-10 s) does not hide our cost. Uses a local
SQLite tracking store.

    .venv/bin/python benchmarks/mlflow_hook.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings


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
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    print(f"| model | log_model off (s) | log_model on (s) | overhead |")
    print(f"|---|---|---|---|")
    print(f"| {a.model} | {off:.2f} | {on:.2f} | {100 * (on - off) / off:+.1f}% |")


if __name__ == "__main__":
    main()
