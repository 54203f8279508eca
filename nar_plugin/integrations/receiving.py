"""What both webhook receivers do before they trust a delivery: a bounded body, a JSON object,
no secrets in URLs.

A receiver runs next to a tracking server or on the internet, so anyone who can reach its port
can send it anything. The order of checks keeps the cost of a hostile request bounded: the
headers are checked first (an unsigned request is answered without reading its body), then the
declared ``Content-Length`` against ``NAR_WEBHOOK_MAX_BODY``, then the body is read in chunks and
refused the moment it passes the cap (a client may lie about its length, or send none and stream).

Example:
    >>> body = await read_body(request, max_body())       # WebhookPayloadError(413) past the cap
    >>> payload = json_object(body)                       # WebhookPayloadError(400) if not an object
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nar_plugin.errors import ConfigError, WebhookPayloadError

if TYPE_CHECKING:
    from nar_plugin.graph import ArchGraph

logger = logging.getLogger(__name__)

__all__ = ["NoQueryStrings", "extract_in_sandbox", "json_object", "max_body", "read_body"]

#: an ASGI application
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def extract_in_sandbox(path: str | Path) -> ArchGraph:
    """The graph of an artifact someone else logged or pushed, as the receivers read it.

    Extraction parses archives and configs written by whoever could log or push: it runs in a
    subprocess with a wall-time and a memory limit
    (:func:`nar_plugin.extract.sandbox.extract_graph_sandboxed`; the limits are its budgets), so
    a hostile artifact costs the receiver a bounded child process, never its own memory.

    Args:
        path: an MLflow model folder (``MLmodel`` + graph file) or a ``config.json``.

    Raises:
        NarError: the artifact was refused (over a budget, malformed, pickle-only...).
    """
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    return extract_graph_sandboxed(path)


def max_body() -> int:
    """``NAR_WEBHOOK_MAX_BODY``: the largest body a receiver reads, in bytes (default 1 MiB).

    Raises:
        ConfigError: not a positive integer.
    """
    from nar_plugin.config import NAR_WEBHOOK_MAX_BODY

    limit = NAR_WEBHOOK_MAX_BODY.get()
    if limit <= 0:
        raise ConfigError(f"{NAR_WEBHOOK_MAX_BODY.name} must be a positive number of bytes, found {limit}")
    return limit


def declared_length(headers: Any) -> int | None:
    """The ``Content-Length`` a request declares (None: none, e.g. chunked).

    Raises:
        WebhookPayloadError: a malformed value (400).
    """
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit():
        raise WebhookPayloadError(f"Content-Length must be a number of bytes, found {raw[:40]!r}", status=400)
    return int(raw)


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, read in chunks and never more than ``limit`` bytes of it.

    A ``Content-Length`` over the limit is refused before anything is read; a body that turns out
    longer (chunked, or a lying header) is refused as soon as it passes the limit, so at most
    ``limit`` plus one network chunk is ever held in memory.

    Raises:
        WebhookPayloadError: 413 past the limit, 400 for a malformed ``Content-Length`` or a
            client that disconnected mid-body.
    """
    from starlette.requests import ClientDisconnect

    n = declared_length(request.headers)
    if n is not None and n > limit:
        raise WebhookPayloadError(f"payload of {n} bytes is larger than the {limit} bytes allowed "
                                  "(NAR_WEBHOOK_MAX_BODY)", status=413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise WebhookPayloadError(f"payload is larger than the {limit} bytes allowed (NAR_WEBHOOK_MAX_BODY)",
                                          status=413)
    except ClientDisconnect:
        raise WebhookPayloadError("the client disconnected before the body was complete", status=400) from None
    return bytes(body)


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a webhook body: UTF-8 JSON whose top level is an object.

    Raises:
        WebhookPayloadError: (400) not UTF-8, not JSON, nested too deeply to parse, or not an object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WebhookPayloadError(f"body is not UTF-8 (byte {e.start})", status=400) from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise WebhookPayloadError(f"body is not JSON ({e.msg} at line {e.lineno} column {e.colno})", status=400) from None
    except RecursionError:
        raise WebhookPayloadError("body is JSON nested too deeply to parse", status=400) from None
    if not isinstance(payload, dict):
        raise WebhookPayloadError(f"body must be a JSON object, found a JSON {type(payload).__name__}", status=400)
    return payload


class NoQueryStrings:
    """ASGI middleware: no secret ever travels (or is logged) in a receiver's URL.

    The receivers read no query parameters. A secret put in one (``?secret=...``, as the Hub can
    be configured to send) would be written to every access log on the way (uvicorn logs
    ``path?query`` when it answers). So the query string is erased from the request *in place*,
    before the server logs the request line, and a ``POST`` that carried one is refused (400):
    the sender must be reconfigured to use the header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        had_query = False
        if scope.get("type") in ("http", "websocket") and scope.get("query_string"):
            had_query = True
            scope["query_string"] = b""  # the same dict the server logs from: erased there too
        if had_query and scope.get("method") == "POST":
            from starlette.responses import JSONResponse

            logger.warning("refused a webhook delivery with a query string (a secret in a URL is logged on the way)")
            reply = JSONResponse({"status": "rejected", "error": "query strings are refused: a secret in a URL ends up "
                                  "in access logs; send it in the X-Webhook-Secret / X-MLflow-Signature header"},
                                 status_code=400)
            await reply(scope, receive, send)
            return
        await self.app(scope, receive, send)
