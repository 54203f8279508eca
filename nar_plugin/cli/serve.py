"""``nar serve``: the webhook receivers (MLflow registry, Hugging Face Hub)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["serve"]


def _app(what: str) -> Any:
    from nar_plugin.config import NAR_WEBHOOK_SECRET

    if what == "mlflow-webhook":
        from nar_plugin.integrations.mlflow.webhook import make_app

        return make_app(NAR_WEBHOOK_SECRET.get())
    from nar_plugin.integrations.hf import make_webhook_app

    return make_webhook_app(NAR_WEBHOOK_SECRET.get())


@click.command()
@click.argument("what", type=click.Choice(["mlflow-webhook", "hf-webhook"]),
                help="mlflow-webhook: tag duplicate registered versions; hf-webhook: index pushed Hub repos")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port to listen on")
def serve(what: str, host: str, port: int) -> None:
    """run a webhook receiver (secret from NAR_WEBHOOK_SECRET)

    Answers GET /health; stops on Ctrl-C.
    """
    from nar_plugin.utils.deps import require

    uvicorn = require("uvicorn")
    uvicorn.run(_app(what), host=host, port=port, log_level="info")
