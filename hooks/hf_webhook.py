#!/usr/bin/env python3
"""Hugging Face Hub webhook receiver: indexes every updated model repo at its new commit.

    NAR_WEBHOOK_SECRET=... python hooks/hf_webhook.py --host 0.0.0.0 --port 8765

Same as `nar serve hf-webhook`. On https://huggingface.co/settings/webhooks, add a webhook with
URL `https://<your host>/webhook`, the same secret, and the repos/orgs to watch (scope: repo
updates). Deliveries without the right `X-Webhook-Secret` get 401; model repo create/update
events are queued and indexed as `hf:<repo>@<headSha>` (config.json only); others get 200 with
the reason they were ignored. Also servable as `uvicorn hooks.hf_webhook:create_app --factory`.
"""

from __future__ import annotations

import argparse
from typing import Any


def create_app() -> Any:
    """The receiver app; the secret comes from NAR_WEBHOOK_SECRET."""
    from nar_plugin.integrations.hf import make_webhook_app

    return make_webhook_app()


def main() -> None:
    from nar_plugin.integrations.hf import make_webhook_app
    from nar_plugin.utils.deps import require

    uvicorn = require("uvicorn")  # MissingDependencyError with the pip line when absent

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--queue-size", type=int, default=256, help="pending deliveries before answering 503")
    a = ap.parse_args()
    uvicorn.run(make_webhook_app(queue_size=a.queue_size), host=a.host, port=a.port, log_level="info")


if __name__ == "__main__":
    main()
