"""Receiver for MLflow registry webhooks (``model_version.created``), as an ASGI app.

Verification, in order (each failure answers 401/409 and indexes nothing):

1. ``X-MLflow-Signature`` is ``v1,<base64 HMAC-SHA256>`` of ``"{delivery_id}.{timestamp}.{body}"``
   with the shared secret (compared in constant time);
2. ``X-MLflow-Timestamp`` is within ``NAR_WEBHOOK_MAX_AGE`` seconds of now (stale or future
   deliveries are refused);
3. ``X-MLflow-Delivery-Id`` has not been seen before (replays are refused; ids are remembered
   for twice the maximum age).

A verified ``model_version.created`` delivery is handled by ``handler(name, version, source)``,
by default :func:`handle_version_created`: it derives the model id from ``source``
(``models:/m-...``; the payload's ``run_id`` is null), reads or computes the embedding, tags the
version with ``nar.*`` (and ``nar.duplicate_of``) and indexes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nar_plugin.errors import WebhookVerificationError

logger = logging.getLogger(__name__)

__all__ = ["ReplayGuard", "handle_version_created", "make_app", "sign", "verify_signature"]

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_signature(secret: str, headers: dict[str, str], body: bytes, max_age: int, now: float | None = None) -> str:
    """Check signature and timestamp; returns the delivery id.

    Raises:
        WebhookVerificationError: missing headers, bad signature, unsupported version, stale or
            future timestamp.
    """
    sig = headers.get(SIGNATURE_HEADER)
    ts = headers.get(TIMESTAMP_HEADER)
    did = headers.get(DELIVERY_HEADER)
    if not sig or not ts or not did:
        raise WebhookVerificationError("unsigned delivery: X-MLflow-Signature, -Timestamp and -Delivery-Id are required")
    if not sig.startswith("v1,"):
        raise WebhookVerificationError(f"unsupported signature version {sig.split(',')[0]!r}, expected v1")
    expected = sign(secret, did, ts, body.decode("utf-8", errors="replace"))
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise WebhookVerificationError("signature does not match the shared secret")
    try:
        t = int(ts)
    except ValueError:
        raise WebhookVerificationError(f"timestamp {ts!r} is not a unix time") from None
    now = time.time() if now is None else now
    if abs(now - t) > max_age:
        raise WebhookVerificationError(f"timestamp is {int(now - t)} s from now, more than the {max_age} s allowed")
    return did


class ReplayGuard:
    """Remembers delivery ids for ``ttl`` seconds; a second sighting is a replay."""

    def __init__(self, ttl: float, max_items: int = 100_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, delivery_id: str, now: float | None = None) -> bool:
        """True if new (and now remembered), False if it is a replay."""
        now = time.time() if now is None else now
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self.ttl or len(self._seen) > self.max_items):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def handle_version_created(name: str, version: str, source: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Tag and index a newly created model version (the webhook's default action)."""
    from nar_plugin.integrations.mlflow.client import client_for
    from nar_plugin.integrations.mlflow.indexing import embedding_for_model
    from nar_plugin.integrations.mlflow.keys import model_id_from_source, version_key
    from nar_plugin.integrations.mlflow.registry import after_create, before_create

    client = client_for(tracking_uri)
    mv = client.get_model_version(name, version)
    model_id = getattr(mv, "model_id", None) or model_id_from_source(source or mv.source)
    if model_id:
        embedding_for_model(client, model_id)  # back-fills tags of models logged without the plugin
    plan = before_create(client, name, source, model_id, policy="tag", exclude_key=version_key(name, version))
    after_create(client, mv, plan, policy="tag")
    return {"name": name, "version": version, "tagged": plan is not None,
            "duplicate_of": plan.duplicate_of if plan else None}


def make_app(secret: str, handler: Callable[[str, str, str], Any] | None = None, max_age: int | None = None) -> Any:
    """The ASGI app: ``POST /webhook`` receives deliveries, ``GET /health`` answers ok.

    Args:
        secret: the webhook's shared secret (as given to ``MlflowClient.create_webhook``).
        handler: called with ``(name, version, source)`` for each verified
            ``model_version.created`` delivery (default :func:`handle_version_created`).
        max_age: oldest accepted timestamp in seconds (default ``NAR_WEBHOOK_MAX_AGE``).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nar_plugin.config import NAR_WEBHOOK_MAX_AGE

    if not secret:
        raise WebhookVerificationError("a webhook receiver needs a secret (NAR_WEBHOOK_SECRET)")
    age = max_age if max_age is not None else NAR_WEBHOOK_MAX_AGE.get()
    guard = ReplayGuard(ttl=2 * age)
    act = handler or handle_version_created

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            did = verify_signature(secret, headers, body, age)
        except WebhookVerificationError as e:
            logger.warning("rejected MLflow webhook delivery: %s", e)
            return JSONResponse({"error": str(e)}, status_code=401)
        if not guard.check_and_add(did):
            logger.warning("rejected replayed MLflow webhook delivery %s", did)
            return JSONResponse({"error": f"delivery {did} was already received (replay)"}, status_code=409)
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        entity, action = payload.get("entity"), payload.get("action")
        if (entity, action) != ("model_version", "created"):
            return JSONResponse({"ignored": f"{entity}.{action}"}, status_code=202)
        data = payload.get("data") or {}
        name, version, source = data.get("name"), str(data.get("version")), data.get("source", "")
        if not name or version in ("", "None"):
            return JSONResponse({"error": "model_version.created payload without name/version"}, status_code=400)
        import anyio

        try:
            result = await anyio.to_thread.run_sync(act, name, version, source)
        except Exception as e:  # noqa: BLE001 - report, don't crash the receiver
            logger.exception("handling %s/%s failed", name, version)
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=500)
        return JSONResponse({"ok": True, "result": result if isinstance(result, dict) else None})

    async def health(request: Request) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/health", health)])
