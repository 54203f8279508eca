"""Receiver for MLflow registry webhooks (``model_version.created``), as an ASGI app.

Anyone who can reach the port can send it anything, so a delivery is checked in an order that
keeps the cost of a hostile request bounded (each failure indexes nothing):

1. ``X-MLflow-Signature``, ``-Timestamp`` and ``-Delivery-Id`` are present, the signature is
   ``v1,...`` and the timestamp within ``NAR_WEBHOOK_MAX_AGE`` seconds of now: else **401**,
   before a byte of the body is read;
2. ``Content-Length`` is at most ``NAR_WEBHOOK_MAX_BODY`` (1 MiB): else **413**, unread; the
   body is then read in chunks and refused (413) the moment it passes the cap;
3. the signature is the base64 HMAC-SHA256 of ``delivery_id.timestamp.<raw body bytes>`` with the
   shared secret (constant-time compare): else **401**;
4. the delivery id was not *handled* before: else **409** (replay); one being handled right now
   gets **503** with ``Retry-After``. An id counts as handled only once its answer is final:
   after a **500** it is forgotten, so MLflow's retry (same id, same signature) is processed;
5. the body is a UTF-8 JSON object: else **400** (never a 500 with a traceback).

A verified ``model_version.created`` delivery is handled by ``handler(name, version, source)``,
by default :func:`handle_version_created`: it resolves the model id (``source: models:/m-...``,
or the LoggedModel whose artifact location the source is), and when the model has no current
embedding downloads **only** ``MLmodel`` and the graph file (the pt2 archive, the ONNX file or
``config.json``; never other weights or pickles) into a temporary folder that is always
removed, extracts the graph in a subprocess with time and memory limits, then tags the version
with ``nar.*`` (and ``nar.duplicate_of``) and indexes it. A failing handler answers 500 with the
error's type only; the traceback goes to the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from nar_plugin.errors import (
    KeyNotFoundError,
    WebhookPayloadError,
    WebhookVerificationError,
)
from nar_plugin.integrations.receiving import (
    NoQueryStrings,
    json_object,
    max_body,
    read_body,
)

logger = logging.getLogger(__name__)

__all__ = ["ReplayGuard", "check_headers", "handle_version_created", "make_app", "sign", "verify_signature"]

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes | str) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery.

    The MAC covers the body's raw bytes (a ``str`` body is taken as its UTF-8 encoding, which is
    what MLflow sends).
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    content = delivery_id.encode("utf-8") + b"." + timestamp.encode("utf-8") + b"." + raw
    mac = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def check_headers(headers: Mapping[str, str], max_age: int, now: float | None = None) -> tuple[str, str, str]:
    """What can be checked before the body is read: ``(signature, timestamp, delivery_id)``.

    Args:
        headers: request headers, lower-cased names.

    Raises:
        WebhookVerificationError: a header is missing, the signature version is not ``v1``, the
            timestamp is no unix time or is more than ``max_age`` seconds from now.
    """
    sig = headers.get(SIGNATURE_HEADER)
    ts = headers.get(TIMESTAMP_HEADER)
    did = headers.get(DELIVERY_HEADER)
    if not sig or not ts or not did:
        raise WebhookVerificationError("unsigned delivery: X-MLflow-Signature, -Timestamp and -Delivery-Id are required")
    if not sig.startswith("v1,"):
        raise WebhookVerificationError(f"unsupported signature version {sig.split(',')[0][:20]!r}, expected v1")
    try:
        t = int(ts)
    except ValueError:
        raise WebhookVerificationError(f"timestamp {ts[:40]!r} is not a unix time") from None
    now = time.time() if now is None else now
    if abs(now - t) > max_age:
        raise WebhookVerificationError(f"timestamp is {int(now - t)} s from now, more than the {max_age} s allowed")
    return sig, ts, did


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, max_age: int,
                     now: float | None = None) -> str:
    """Check headers, timestamp and the HMAC of the raw body; returns the delivery id.

    Raises:
        WebhookVerificationError: missing headers, unsupported version, stale or future
            timestamp, bad signature.
    """
    sig, ts, did = check_headers(headers, max_age, now)
    expected = sign(secret, did, ts, body)
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8")):
        raise WebhookVerificationError("signature does not match the shared secret")
    return did


class ReplayGuard:
    """Delivery ids that were handled (remembered ``ttl`` seconds) or are being handled.

    :meth:`claim` an id before handling it, then :meth:`finish` it: ``handled=True`` when the
    answer is final (the id is a replay from then on), ``handled=False`` after a failure (the id
    is forgotten, so the sender's retry is processed).
    """

    def __init__(self, ttl: float, max_items: int = 100_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._done: OrderedDict[str, float] = OrderedDict()
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, delivery_id: str, now: float | None = None) -> str:
        """``"new"`` (now claimed), ``"done"`` (a replay) or ``"busy"`` (being handled)."""
        now = time.time() if now is None else now
        with self._lock:
            while self._done and (next(iter(self._done.values())) < now - self.ttl or len(self._done) > self.max_items):
                self._done.popitem(last=False)
            if delivery_id in self._done:
                return "done"
            if delivery_id in self._busy:
                return "busy"
            self._busy.add(delivery_id)
            return "new"

    def finish(self, delivery_id: str, handled: bool, now: float | None = None) -> None:
        """Release a claimed id: remembered when ``handled``, else forgotten."""
        with self._lock:
            self._busy.discard(delivery_id)
            if handled:
                self._done[delivery_id] = time.time() if now is None else now


def handle_version_created(name: str, version: str, source: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Tag and index a newly created model version (the webhook's default action).

    The model was logged by someone else: when it has no current embedding, only its graph file
    is downloaded (into a temporary folder that is removed) and extracted in a subprocess with
    time and memory limits (:func:`~nar_plugin.integrations.receiving.extract_in_sandbox`).
    """
    from nar_plugin.integrations.mlflow.client import client_for, server_of
    from nar_plugin.integrations.mlflow.indexing import embedding_for_model
    from nar_plugin.integrations.mlflow.keys import version_key
    from nar_plugin.integrations.mlflow.registry import (
        after_create,
        before_create,
        resolve_model_id,
    )
    from nar_plugin.integrations.receiving import extract_in_sandbox

    client = client_for(tracking_uri)
    mv = client.get_model_version(name, version)
    model_id = resolve_model_id(client, source or mv.source, getattr(mv, "model_id", None), getattr(mv, "run_id", None))
    if model_id:
        try:  # back-fills the tags of a model logged without the plugin
            embedding_for_model(client, model_id, extract=extract_in_sandbox)
        except KeyNotFoundError as e:  # a pickle, too large...: its nar.status says so; a final answer
            logger.info("model version %s/%s: %s", name, version, e)
    plan = before_create(client, name, source or mv.source, model_id, policy="tag",
                         exclude_key=version_key(name, version, server_of(client)), run_id=getattr(mv, "run_id", None))
    after_create(client, mv, plan, policy="tag")
    return {"name": name, "version": version, "tagged": plan is not None,
            "duplicate_of": plan.duplicate_of if plan else None}


def make_app(secret: str, handler: Callable[[str, str, str], Any] | None = None, max_age: int | None = None,
             max_body_bytes: int | None = None) -> Any:
    """The ASGI app: ``POST /webhook`` receives deliveries, ``GET /health`` answers ok.

    Args:
        secret: the webhook's shared secret (as given to ``MlflowClient.create_webhook``).
        handler: called with ``(name, version, source)`` for each verified
            ``model_version.created`` delivery (default :func:`handle_version_created`).
        max_age: oldest accepted timestamp in seconds (default ``NAR_WEBHOOK_MAX_AGE``).
        max_body_bytes: largest body read (default ``NAR_WEBHOOK_MAX_BODY``, 1 MiB).

    Raises:
        WebhookVerificationError: no secret.
        ConfigError: a malformed ``NAR_WEBHOOK_*`` value.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nar_plugin.config import NAR_WEBHOOK_MAX_AGE

    if not secret:
        raise WebhookVerificationError("a webhook receiver needs a secret (NAR_WEBHOOK_SECRET)")
    age = max_age if max_age is not None else NAR_WEBHOOK_MAX_AGE.get()
    limit = max_body_bytes if max_body_bytes is not None else max_body()
    guard = ReplayGuard(ttl=2 * age)
    act = handler or handle_version_created

    async def webhook(request: Request) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            check_headers(headers, age)  # before the body: an unsigned request costs nothing
            body = await read_body(request, limit)
            did = verify_signature(secret, headers, body, age)
        except WebhookVerificationError as e:
            logger.warning("rejected MLflow webhook delivery: %s", e)
            return JSONResponse({"error": str(e)}, status_code=401)
        except WebhookPayloadError as e:
            logger.warning("rejected MLflow webhook delivery: %s", e)
            return JSONResponse({"error": str(e)}, status_code=e.status)
        state = guard.claim(did)
        if state == "done":
            logger.warning("rejected replayed MLflow webhook delivery %s", did)
            return JSONResponse({"error": f"delivery {did} was already handled (replay)"}, status_code=409)
        if state == "busy":
            return JSONResponse({"error": f"delivery {did} is being handled; retry later"}, status_code=503,
                                headers={"Retry-After": "5"})
        handled = False
        try:
            response = await _handle(body, act)
            handled = response.status_code < 500
            return response
        finally:
            guard.finish(did, handled)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/health", health)],
                     middleware=[Middleware(NoQueryStrings)])


async def _handle(body: bytes, act: Callable[[str, str, str], Any]) -> Any:
    """Parse a verified delivery and run the handler: 400 / 202 / 200 / 500."""
    import anyio
    from starlette.responses import JSONResponse

    try:
        payload = json_object(body)
    except WebhookPayloadError as e:
        return JSONResponse({"error": str(e)}, status_code=e.status)
    entity, action = payload.get("entity"), payload.get("action")
    if (entity, action) != ("model_version", "created"):
        return JSONResponse({"ignored": f"{str(entity)[:64]}.{str(action)[:64]}"}, status_code=202)
    data = payload.get("data")
    if not isinstance(data, dict):
        return JSONResponse({"error": "model_version.created payload without a 'data' object"}, status_code=400)
    name, version, source = data.get("name"), data.get("version"), data.get("source") or ""
    if not isinstance(name, str) or not name or not isinstance(version, (str, int)) or str(version) == "" \
            or not isinstance(source, str):
        return JSONResponse({"error": "model_version.created payload without a name, version or source string"},
                            status_code=400)
    try:
        result = await anyio.to_thread.run_sync(act, name, str(version), source)
    except Exception as e:
        logger.exception("handling %s/%s failed", name, version)
        return JSONResponse({"error": f"handling the delivery failed ({type(e).__name__})"}, status_code=500)
    return JSONResponse({"ok": True, "result": result if isinstance(result, dict) else None})
