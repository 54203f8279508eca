"""The Hub webhook receiver (nar_plugin.integrations.hf.webhook): secret check, event
classification, queued and inline indexing, on Starlette's test client and a real uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("httpx2")
pytest.importorskip("transformers")
pytest.importorskip("starlette")

# tests/ is on sys.path (rootdir conftest); cache is a fixture
from fixtures.hf_hub import cache  # noqa: E402, F401

from nar_plugin.integrations import hf  # noqa: E402

SECRET = "s3cret"


def payload(repo_type: str = "model", scope: str = "repo.content", action: str = "update",
            name: str = "org/tiny-bert", sha: str | None = "a" * 40) -> dict[str, Any]:
    return {"event": {"action": action, "scope": scope},
            "repo": {"type": repo_type, "name": name, "id": "1", "private": False, "headSha": sha},
            "webhook": {"id": "w", "version": 3}}


def test_webhook_verifies_the_secret_and_indexes_model_updates() -> None:
    from starlette.testclient import TestClient

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(repo_id: str, **kw: Any) -> str:
        calls.append((repo_id, kw))
        return f"hf:{repo_id}@{kw['revision']}"

    app = hf.make_webhook_app(SECRET, indexer=fake)
    with TestClient(app) as client:
        r = client.post("/", json=payload(), headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        app.state.drain()
        assert calls == [("org/tiny-bert", {"revision": "a" * 40, "token": None, "index": None})]
        for headers in ({}, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": SECRET + " "}):
            assert client.post("/", json=payload(), headers=headers).status_code == 401
        for ignored in (payload(repo_type="dataset"), payload(scope="discussion"), payload(scope="repo", action="delete")):
            r = client.post("/webhook", json=ignored, headers={"X-Webhook-Secret": SECRET})
            assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"]
        r = client.post("/", content=b"{not json", headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 400
        assert client.post("/", json=payload(sha="HEAD"), headers={"X-Webhook-Secret": SECRET}).status_code == 400
        pr_only = {**payload(), "updatedRefs": [{"ref": "refs/pr/3", "oldSha": None, "newSha": "b" * 40}]}
        r = client.post("/", json=pr_only, headers={"X-Webhook-Secret": SECRET})
        assert r.json()["status"] == "ignored"
        branch = {**payload(), "updatedRefs": [{"ref": "refs/heads/dev", "oldSha": None, "newSha": "d" * 40},
                                               {"ref": "refs/tags/v1", "oldSha": None, "newSha": "e" * 40}]}
        r = client.post(f"/?secret={SECRET}", json=branch)  # a secret in the URL is refused (access logs)
        assert r.status_code == 400
        r = client.post("/", json=branch, headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 202 and r.json()["revisions"] == ["d" * 40]
        app.state.drain()
        assert [c[1]["revision"] for c in calls] == ["a" * 40, "d" * 40]
        health = client.get("/health").json()
        assert health["rejected"] == 3 and health["ignored"] == 4 and health["indexed"] == 2


@pytest.mark.integration
def test_webhook_on_a_real_uvicorn_server() -> None:
    import threading
    import time

    import httpx
    import uvicorn

    calls: list[str] = []
    app = hf.make_webhook_app(SECRET, indexer=lambda repo_id, **kw: calls.append(kw["revision"]) or "k")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/webhook"
        assert httpx.post(url, json=payload()).status_code == 401
        r = httpx.post(url, json=payload(), headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 202
        app.state.drain()
        assert calls == ["a" * 40]
    finally:
        server.should_exit = True
        thread.join(10)


def test_webhook_without_a_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import ConfigError

    monkeypatch.delenv("NAR_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="NAR_WEBHOOK_SECRET"):
        hf.make_webhook_app()


def test_webhook_indexes_with_the_real_index_repo(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from starlette.testclient import TestClient

    from nar_plugin.search.api import open_index as _index

    sha = (cache / "models--org--tiny-gpt2" / "refs" / "main").read_text()
    monkeypatch.setenv("NAR_WEBHOOK_SECRET", SECRET)
    app = hf.make_webhook_app(indexer=functools.partial(hf.index_repo, cache_dir=cache), background=False)
    with TestClient(app) as client:
        r = client.post("/", json=payload(name="org/tiny-gpt2", sha=sha), headers={"X-Webhook-Secret": SECRET})
    assert r.status_code == 200 and r.json()["keys"] == [f"hf:org/tiny-gpt2@{sha}"]
    assert _index().get(f"hf:org/tiny-gpt2@{sha}") is not None


def test_webhook_reports_a_failed_inline_index_and_keeps_serving() -> None:
    from starlette.testclient import TestClient

    def broken(repo_id: str, **kw: Any) -> str:
        raise RuntimeError("no disk")

    app = hf.make_webhook_app(SECRET, indexer=broken, background=False)
    with TestClient(app) as client:
        r = client.post("/", json=payload(), headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 500 and r.json() == {"status": "failed", "repo": "org/tiny-bert",
                                                     "revisions": ["a" * 40], "error": "RuntimeError"}
        assert client.get("/health").json()["failed"] == 1
