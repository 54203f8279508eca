#!/usr/bin/env python3
"""MLflow registry webhook receiver: tags and indexes every new model version.

    NAR_WEBHOOK_SECRET=... MLFLOW_TRACKING_URI=http://mlflow:5000 python hooks/mlflow_webhook.py --port 8765

Same as `nar serve mlflow-webhook`. Register it with
`MlflowClient().create_webhook(name="nar", url="http://<host>:8765/webhook",
events=[WebhookEvent("model_version", "created")], secret=<same secret>)`.
"""

from __future__ import annotations

import argparse


def main() -> None:
    import uvicorn

    from nar_plugin.config import NAR_WEBHOOK_SECRET
    from nar_plugin.integrations.mlflow.webhook import make_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    uvicorn.run(make_app(NAR_WEBHOOK_SECRET.get()), host=a.host, port=a.port, log_level="info")


if __name__ == "__main__":
    main()
