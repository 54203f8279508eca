"""The Hub webhook receiver: a Starlette app that verifies the shared secret and indexes every
updated model repo at the pushed commit (``hooks/hf_webhook.py`` and ``nar serve hf-webhook``
serve it).

Anyone who can reach the port can send it anything: the secret header is checked before the body
is read (401), the declared and the actual body size against ``NAR_WEBHOOK_MAX_BODY`` (413,
read in chunks and never past the cap), the body must be a UTF-8 JSON object (400). A secret in
the URL (``?secret=``) is refused (400) and erased from the request before the server logs it.
The pushed ``config.json`` is someone else's: by default it is extracted in a subprocess with
time and memory limits (:func:`~nar_plugin.integrations.receiving.extract_in_sandbox`).
"""

from __future__ import annotations

import functools
import hmac
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from nar_plugin.errors import ConfigError, WebhookPayloadError
from nar_plugin.integrations.hf.keys import REPO_RE, SHA_RE
from nar_plugin.integrations.receiving import (
    NoQueryStrings,
    json_object,
    max_body,
    read_body,
)

logger = logging.getLogger(__name__)

__all__ = ["classify_webhook", "make_webhook_app"]

#: a repo revision to index: ``(repo_id, sha)``; ``sha`` None = the head of ``main``
Revision = tuple[str, str | None]


def classify_webhook(payload: Any) -> list[tuple[str, str | None]] | str:
    """The ``(repo_id, sha)`` revisions a Hub webhook asks to index, or why it is ignored.

    Model repo events with scope ``repo`` (create/update) or ``repo.content`` (and narrower
    ``repo.content.*`` scopes, as the Hub docs advise) are indexed: at the ``newSha`` of every
    updated branch in ``updatedRefs`` (pull-request refs, tags and deleted refs are skipped), or
    at ``repo.headSha`` (the head of ``main``) when ``updatedRefs`` is absent. Everything else
    (datasets, Spaces, discussions, config changes, deletions, moves) is ignored.

    Raises:
        ValueError: the payload is not a Hub webhook payload.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict) or not isinstance(payload.get("repo"), dict):
        raise ValueError("expected a Hub webhook payload with 'event' and 'repo' objects")
    event, repo = payload["event"], payload["repo"]
    action, scope = event.get("action"), str(event.get("scope") or "")
    if repo.get("type") != "model":
        return f"repo type {repo.get('type')!r} is not 'model'"
    if scope == "repo":
        if action not in ("create", "update"):
            return f"action {action!r} on scope 'repo' does not add a revision"
    elif not (scope == "repo.content" or scope.startswith("repo.content.")):
        return f"scope {scope!r} does not change the repo's files"
    name = repo.get("name")
    if not isinstance(name, str) or not REPO_RE.fullmatch(name):
        raise ValueError(f"repo.name must be a repo id, found {name!r}")
    refs = payload.get("updatedRefs")
    if isinstance(refs, list) and refs:
        shas = [r.get("newSha") for r in refs
                if isinstance(r, dict) and str(r.get("ref", "")).startswith("refs/heads/") and r.get("newSha")]
        if not shas:
            return "only pull-request refs, tags or deleted refs were updated"
    else:
        shas = [repo.get("headSha")]
    for sha in shas:
        if sha is not None and not (isinstance(sha, str) and SHA_RE.fullmatch(sha)):
            raise ValueError(f"a commit sha must be 40 hex digits, found {sha!r}")
    return [(name, sha) for sha in dict.fromkeys(shas)]


def make_webhook_app(secret: str | None = None, index: Any = None, indexer: Callable[..., Any] | None = None, *,
                     background: bool = True, queue_size: int = 256, token: str | bool | None = None,
                     cache_dir: str | Path | None = None, max_body_bytes: int | None = None) -> Any:
    """A Starlette app receiving Hub webhooks at ``POST /`` (and ``/webhook``); ``GET /health``.

    Every delivery must carry the secret in the ``X-Webhook-Secret`` header (compared in constant
    time), else 401 and nothing is read; a secret in the URL (``?secret=``) is refused (400) and
    never logged. Bodies over ``max_body_bytes`` (default ``NAR_WEBHOOK_MAX_BODY``, 1 MiB) get
    413, bodies that are no UTF-8 JSON object 400. Model repo updates (see
    :func:`classify_webhook`) are indexed by ``indexer(repo_id, revision=sha, token=token,
    index=index)`` (default :func:`~nar_plugin.integrations.hf.index.index_repo` reading
    ``config.json`` only, from ``cache_dir``, extracted in a sandboxed subprocess): queued for one
    worker thread (202; 503 with ``Retry-After`` when the bounded queue is full) or, with
    ``background=False``, indexed before answering (200 with the keys). Other events: 200 with the
    reason they are ignored; a malformed payload: 400. ``app.state.drain()`` waits until the queue
    is processed.

    Args:
        secret: the webhook secret (default ``NAR_WEBHOOK_SECRET``).

    Raises:
        ConfigError: no secret, or a malformed ``NAR_WEBHOOK_MAX_BODY``.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from nar_plugin.config import NAR_WEBHOOK_SECRET

    secret = secret or NAR_WEBHOOK_SECRET.get()
    if not secret:
        raise ConfigError("the HF webhook receiver needs a secret: set NAR_WEBHOOK_SECRET (the value "
                          "entered in the Hub webhook settings)")
    if indexer is None:
        from nar_plugin.integrations.hf.index import index_repo
        from nar_plugin.integrations.receiving import extract_in_sandbox

        indexer = functools.partial(index_repo, cache_dir=cache_dir, extract=extract_in_sandbox)
    limit = max_body_bytes if max_body_bytes is not None else max_body()
    rx = _Receiver(secret.encode("utf-8"), lambda rid, sha: indexer(rid, revision=sha, token=token, index=index),
                   background, queue_size, limit)
    app = Starlette(routes=[Route("/", rx.receive, methods=["POST"]), Route("/webhook", rx.receive, methods=["POST"]),
                            Route("/health", rx.health, methods=["GET"])], lifespan=rx.lifespan,
                    middleware=[Middleware(NoQueryStrings)])
    app.state.stats, app.state.keys = rx.stats, rx.keys
    app.state.drain = rx.jobs.join  # block until every queued delivery was processed (tests, shutdown)
    return app


class _Receiver:
    """The state and the handlers of one webhook app: counters, the job queue and its worker."""

    def __init__(self, secret: bytes, run: Callable[[str, str | None], Any], background: bool,
                 queue_size: int, max_body: int) -> None:
        self.secret, self.run, self.background, self.max_body = secret, run, background, max_body
        self.jobs: queue.Queue[Revision | None] = queue.Queue(maxsize=queue_size)
        #: rejected: no or a wrong secret; malformed: signed but too large or no JSON object
        self.stats = {"accepted": 0, "ignored": 0, "rejected": 0, "malformed": 0, "indexed": 0, "failed": 0}
        self.keys: list[str] = []
        self.worker: threading.Thread | None = None
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- indexing
    def index_one(self, repo_id: str, sha: str | None) -> str:
        key = str(self.run(repo_id, sha))
        with self.lock:
            self.stats["indexed"] += 1
            self.keys.append(key)
        return key

    def work(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                self.index_one(*job)
            except Exception:
                with self.lock:
                    self.stats["failed"] += 1
                logger.exception("webhook: indexing %s failed", job)
            finally:
                self.jobs.task_done()

    def ensure_worker(self) -> None:
        with self.lock:
            if self.worker is None or not self.worker.is_alive():
                self.worker = threading.Thread(target=self.work, name="nar-hf-webhook", daemon=True)
                self.worker.start()

    # ---------------------------------------------------------------- HTTP
    async def receive(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        # the Hub sends the secret verbatim (no HMAC) in a header; checked before the body is read
        # (a ?secret= query was refused, and erased before logging, by NoQueryStrings)
        got = request.headers.get("x-webhook-secret")
        if got is None or not hmac.compare_digest(got.encode("utf-8"), self.secret):
            self.stats["rejected"] += 1
            return _reply(401, status="rejected", reason="missing or wrong X-Webhook-Secret")
        try:
            body = await read_body(request, self.max_body)
            decision = classify_webhook(json_object(body))
        except WebhookPayloadError as e:
            self.stats["malformed"] += 1
            return _reply(e.status, status="rejected", reason=str(e))
        except (ValueError, RecursionError) as e:
            self.stats["malformed"] += 1
            return _reply(400, status="rejected", reason=f"bad payload: {type(e).__name__}: {str(e)[:200]}")
        if isinstance(decision, str):
            self.stats["ignored"] += 1
            return _reply(200, status="ignored", reason=decision)
        self.stats["accepted"] += 1
        if not self.background:
            return await self.index_now(decision)
        self.ensure_worker()
        try:
            for job in decision:
                self.jobs.put_nowait(job)
        except queue.Full:
            return JSONResponse({"status": "busy", "reason": "indexing queue is full"}, status_code=503,
                                headers={"Retry-After": "30"})
        return _reply(202, status="queued", repo=decision[0][0], revisions=[sha for _, sha in decision])

    async def index_now(self, decision: list[Revision]) -> Any:
        """``background=False``: index before answering; a failure is a 500 for the Hub to see."""
        from starlette.concurrency import run_in_threadpool

        repo_id, revisions = decision[0][0], [sha for _, sha in decision]
        try:
            keys = [await run_in_threadpool(self.index_one, rid, sha) for rid, sha in decision]
        except Exception as e:
            self.stats["failed"] += 1
            logger.exception("webhook: indexing %s at %s failed", repo_id, revisions)
            return _reply(500, status="failed", repo=repo_id, revisions=revisions, error=type(e).__name__)
        return _reply(200, status="indexed", repo=repo_id, revisions=revisions, keys=keys)

    async def health(self, request: Any) -> Any:
        return _reply(200, status="ok", queued=self.jobs.qsize(), **self.stats)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        yield
        if self.worker is not None and self.worker.is_alive():
            self.jobs.put(None)
            await run_in_threadpool(self.worker.join, 60)


def _reply(code: int, **body: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=code)
