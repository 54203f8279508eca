"""The webhook receivers under hostile or broken deliveries: each test sends the input (or injects
the fault) and asserts the answer and what happened (nothing read, nothing handled, the tag after
a retried delivery, only graph files downloaded, the temporary folder gone)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from fixtures.receivers import post_raw, rss_mb, start_receiver, stop

SECRET = "s3cret-" + "x" * 16
MB = 1 << 20


def _signed(body: bytes, secret: str = SECRET, did: str | None = None, ts: str | None = None) -> dict[str, str]:
    from nar_plugin.integrations.mlflow.webhook import sign

    did = did or uuid.uuid4().hex
    ts = ts or str(int(time.time()))
    return {"X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts, "X-MLflow-Signature": sign(secret, did, ts, body),
            "Content-Type": "application/json"}


def _created(name: str = "m", version: str = "1", source: str = "models:/m-" + "0" * 32) -> bytes:
    return json.dumps({"entity": "model_version", "action": "created",
                       "data": {"name": name, "version": version, "source": source}}).encode()


def _mlflow_client(handler: Any = None, **kw: Any) -> Any:
    from starlette.testclient import TestClient

    from nar_plugin.integrations.mlflow.webhook import make_app

    return TestClient(make_app(SECRET, handler=handler or (lambda n, v, s: {"name": n}), **kw))


# ------------------------------------------------------------------ size: nothing read unsigned, 413 past the cap
@pytest.mark.integration
@pytest.mark.parametrize("kind", ["mlflow", "hf"])
def test_unsigned_300mb_post_is_refused_before_the_body_is_read(kind: str) -> None:
    proc, port = start_receiver(kind, SECRET)
    try:
        before, _ = rss_mb(proc.pid)
        reply = post_raw(port, "/webhook", {"Content-Type": "application/json"}, 300 * MB)
        time.sleep(0.2)
        _, peak = rss_mb(proc.pid)
    finally:
        stop(proc)
    assert reply.status == 401, reply.head[:200]
    assert reply.seconds < 2.0
    assert peak - before < 50, f"receiver grew {peak - before:.0f} MB"
    assert reply.sent < 64 * MB  # it stopped reading: only socket buffers were filled


@pytest.mark.integration
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_signed_body_over_the_cap_is_413_and_bounded(chunked: bool) -> None:
    proc, port = start_receiver("mlflow", SECRET, env={"NAR_WEBHOOK_MAX_BODY": str(MB)})
    try:
        before, _ = rss_mb(proc.pid)
        headers = _signed(b"whatever: the size is refused before the signature is computed")
        reply = post_raw(port, "/webhook", headers, 300 * MB, chunked=chunked)
        time.sleep(0.2)
        _, peak = rss_mb(proc.pid)
    finally:
        stop(proc)
    assert reply.status == 413, reply.head[:200]
    assert reply.seconds < 2.0 and peak - before < 50


def test_max_body_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import ConfigError
    from nar_plugin.integrations.mlflow.webhook import make_app

    monkeypatch.setenv("NAR_WEBHOOK_MAX_BODY", "2000")
    seen: list[str] = []
    with _mlflow_client(lambda n, v, s: seen.append(n)) as client:
        body = _created(name="a" * 100)
        assert client.post("/webhook", content=body, headers=_signed(body)).status_code == 200
        big = _created(name="a" * 3000)
        r = client.post("/webhook", content=big, headers=_signed(big))
        assert r.status_code == 413 and "NAR_WEBHOOK_MAX_BODY" in r.json()["error"]
    assert seen == ["a" * 100]
    monkeypatch.setenv("NAR_WEBHOOK_MAX_BODY", "0")
    with pytest.raises(ConfigError, match="NAR_WEBHOOK_MAX_BODY"):
        make_app(SECRET)


# ------------------------------------------------------------------ HMAC over the raw bytes; malformed bodies are 400
def test_hmac_covers_the_raw_bytes() -> None:
    from nar_plugin.integrations.mlflow.webhook import sign

    a = b'{"entity": "model_version", "action": "\xff"}'
    b = b'{"entity": "model_version", "action": "\xfe"}'  # decodes to the same text with errors="replace"
    assert sign(SECRET, "d", "1", a) != sign(SECRET, "d", "1", b)
    handled: list[str] = []
    with _mlflow_client(lambda n, v, s: handled.append(n)) as client:
        forged = _signed(a)
        assert client.post("/webhook", content=b, headers=forged).status_code == 401
        r = client.post("/webhook", content=a, headers=_signed(a))
        assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    assert handled == []


MALFORMED = {
    "not-json": b"{not json",
    "not-utf8": b'{"entity": "\xff\xfe"}',
    "array": b"[1, 2, 3]",
    "string": b'"model_version"',
    "deep": b"[" * 200_000 + b"]" * 200_000,
    "data-not-object": b'{"entity": "model_version", "action": "created", "data": [1]}',
    "name-not-string": b'{"entity": "model_version", "action": "created", "data": {"name": {"a": 1}, "version": 1}}',
    "no-version": b'{"entity": "model_version", "action": "created", "data": {"name": "m"}}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_signed_malformed_json_is_400_not_500(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_WEBHOOK_MAX_BODY", str(MB))
    body = MALFORMED[case]
    handled: list[str] = []
    with _mlflow_client(lambda n, v, s: handled.append(n)) as client:
        r = client.post("/webhook", content=body, headers=_signed(body))
    assert r.status_code == 400, r.text
    assert "error" in r.json() and "Traceback" not in r.text
    assert handled == []


@pytest.mark.parametrize("case", sorted(MALFORMED)[:5])
def test_hf_receiver_malformed_bodies_are_400(case: str) -> None:
    from starlette.testclient import TestClient

    from nar_plugin.integrations.hf.webhook import make_webhook_app

    calls: list[str] = []
    app = make_webhook_app(SECRET, indexer=lambda repo_id, **kw: calls.append(repo_id) or "k", background=False)
    with TestClient(app) as client:
        r = client.post("/", content=MALFORMED[case], headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 400, r.text
        big = client.post("/", content=b" " * (2 * MB), headers={"X-Webhook-Secret": SECRET})
        assert big.status_code == 413
        assert client.get("/health").json()["malformed"] == 2
    assert calls == []


# ------------------------------------------------------------------ replays: an id counts once handled
def test_replay_guard_states() -> None:
    from nar_plugin.integrations.mlflow.webhook import ReplayGuard

    g = ReplayGuard(ttl=60)
    assert g.claim("d", now=0) == "new"
    assert g.claim("d", now=1) == "busy"
    g.finish("d", handled=False)
    assert g.claim("d", now=2) == "new"  # a failed delivery is forgotten: its retry is handled
    g.finish("d", handled=True, now=2)
    assert g.claim("d", now=3) == "done"
    assert g.claim("d", now=100) == "new"  # remembered for ttl seconds only


def test_a_delivery_that_failed_is_handled_on_retry_then_is_a_replay() -> None:
    calls: list[str] = []

    def flaky(name: str, version: str, source: str) -> dict[str, str]:
        calls.append(version)
        if len(calls) == 1:
            raise RuntimeError("injected: tracking server briefly down")
        return {"tagged": "yes"}

    body = _created()
    headers = _signed(body)
    with _mlflow_client(flaky) as client:
        first = client.post("/webhook", content=body, headers=headers)
        assert first.status_code == 500 and first.json() == {"error": "handling the delivery failed (RuntimeError)"}
        retry = client.post("/webhook", content=body, headers=headers)  # MLflow's retry: same id, same signature
        assert retry.status_code == 200 and retry.json()["result"] == {"tagged": "yes"}
        assert client.post("/webhook", content=body, headers=headers).status_code == 409
    assert calls == ["1", "1"]


# ------------------------------------------------------------------ no secrets in URLs or logs
def _serve(app: Any, **config: Any) -> tuple[Any, threading.Thread, int]:
    """``app`` on a real uvicorn in a thread, on a free port of 127.0.0.1; (server, thread, port)."""
    import uvicorn

    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["mlflow", "hf"])
def test_secret_in_the_query_is_refused_and_never_logged(kind: str) -> None:
    import httpx

    from nar_plugin.integrations.hf.webhook import make_webhook_app
    from nar_plugin.integrations.mlflow.webhook import make_app

    app = make_app(SECRET) if kind == "mlflow" else make_webhook_app(SECRET, indexer=lambda *a, **k: "k")
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "nar_plugin")]
    for lg in loggers:
        lg.addHandler(records)
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    server, thread, port = _serve(app, log_config=None, access_log=True, log_level="info")
    try:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/webhook?secret={SECRET}", content=b"{}", headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 400 and "query" in r.json()["error"]
        assert httpx.get(f"{base}/health?secret={SECRET}").status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
        for lg, level in zip(loggers, old_levels):
            lg.removeHandler(records)
            lg.setLevel(level)
    assert any("/webhook" in line for line in records.lines), records.lines  # the access log did run
    assert not [line for line in records.lines if SECRET in line]


# ------------------------------------------------------------------ the real tracking server: retried delivery, graph files only
mlflow = pytest.importorskip("mlflow")


def _log_without_plugin(serialization_format: str = "pt2") -> Any:
    import torch
    from torch import nn

    import nar_plugin.mlflow as nm

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    nm.autolog(disable=True)
    try:
        with mlflow.start_run():
            if serialization_format == "pickle":
                return mlflow.pytorch.log_model(model, name="m", serialization_format="pickle",
                                                pip_requirements=["torch"])
            return mlflow.pytorch.log_model(model, name="m", input_example=torch.randn(2, 4).numpy(),
                                            pip_requirements=["torch"])
    finally:
        nm.autolog()


def _register_without_plugin(model_id: str, name: str) -> Any:
    import nar_plugin.mlflow as nm

    nm.autolog(disable=True)
    try:
        return mlflow.register_model(f"models:/{model_id}", name)
    finally:
        nm.autolog()


def _ours(tmp: Path) -> list[str]:
    """nar-plugin's temporary folders left in ``tmp`` (torch_geometric writes its own files there)."""
    return [p.name for p in tmp.iterdir() if p.name.startswith("nar-")]


@pytest.fixture
def spies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Temporary folders under ``tmp_path/tmp``; the artifacts downloaded; what extraction saw."""
    import tempfile

    import mlflow.artifacts

    from nar_plugin.integrations import receiving

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out: dict[str, Any] = {"tmp": tmp, "downloads": [], "seen": []}
    real_download, real_extract = mlflow.artifacts.download_artifacts, receiving.extract_in_sandbox

    def download(*a: Any, **kw: Any) -> Any:
        out["downloads"].append(kw.get("artifact_uri") or a[0])
        return real_download(*a, **kw)

    def extract(path: Any) -> Any:
        root = Path(path)
        out["seen"].append(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
                           if root.is_dir() else [root.name])
        return real_extract(path)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    monkeypatch.setattr(receiving, "extract_in_sandbox", extract)
    return out


@pytest.mark.integration
def test_receiver_downloads_only_the_graph_file_and_removes_its_temp_folder(tracking: str, spies: dict[str, Any]) -> None:
    from nar_plugin.integrations.mlflow.webhook import handle_version_created

    info = _log_without_plugin()
    name = f"wh-{uuid.uuid4().hex[:6]}"
    mv = _register_without_plugin(info.model_id, name)
    result = handle_version_created(name, str(mv.version), mv.source)
    assert result["tagged"] is True
    assert mlflow.MlflowClient().get_model_version(name, mv.version).tags["nar.status"] == "ok"
    assert spies["seen"] == [["MLmodel", "data/model.pt2"]]  # extracted in the sandbox, from these only
    paths = [u.rsplit("/artifacts/", 1)[1] for u in spies["downloads"]]
    # of the new version: the graph file only; besides: the small fingerprint JSON of indexed
    # same-architecture candidates (issue 17), never their weights
    assert [p for p in paths if p != "nar/fingerprint.json.gz"] == ["MLmodel", "data/model.pt2"]
    assert _ours(spies["tmp"]) == []  # temp folders removed (the download's and the sandbox's)


@pytest.mark.integration
def test_receiver_never_downloads_a_pickle(tracking: str, spies: dict[str, Any]) -> None:
    from nar_plugin.integrations.mlflow.webhook import handle_version_created

    info = _log_without_plugin("pickle")
    name = f"wh-{uuid.uuid4().hex[:6]}"
    mv = _register_without_plugin(info.model_id, name)
    result = handle_version_created(name, str(mv.version), mv.source)  # a final answer, not an error
    assert result["tagged"] is False
    assert mlflow.MlflowClient().get_logged_model(info.model_id).tags["nar.status"] == "skipped:pickle"
    assert [u.rsplit("/artifacts/", 1)[1] for u in spies["downloads"]] == ["MLmodel"]
    assert spies["seen"] == [] and _ours(spies["tmp"]) == []


@pytest.mark.integration
def test_mlflow_retry_after_a_500_tags_the_version(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real server delivers, our handler fails once (injected), MLflow retries with the same
    delivery id: the retry is handled and the version is tagged."""
    from mlflow.entities.webhook import WebhookEvent

    from nar_plugin.integrations.mlflow.webhook import handle_version_created, make_app

    calls: list[tuple[str, str]] = []
    delivery_ids: list[str] = []

    def flaky(name: str, version: str, source: str) -> Any:
        calls.append((name, version))
        if len(calls) == 1:
            raise RuntimeError("injected failure on the first delivery")
        return handle_version_created(name, version, source)

    inner = make_app(SECRET, handler=flaky)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/webhook":
            delivery_ids.append(dict(scope["headers"]).get(b"x-mlflow-delivery-id", b"").decode())
        await inner(scope, receive, send)

    server, thread, port = _serve(recording)
    client = mlflow.MlflowClient()
    hook = None
    try:
        hook = client.create_webhook(name=f"nar-{uuid.uuid4().hex[:6]}", url=f"http://127.0.0.1:{port}/webhook",
                                     events=[WebhookEvent("model_version", "created")], secret=SECRET)
        time.sleep(1.5)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1 s
        info = _log_without_plugin()
        name = f"retry-{uuid.uuid4().hex[:6]}"
        mv = _register_without_plugin(info.model_id, name)
        deadline = time.time() + 120
        while time.time() < deadline and "nar.status" not in client.get_model_version(name, mv.version).tags:
            time.sleep(0.5)
        tags = client.get_model_version(name, mv.version).tags
    finally:
        if hook is not None:
            client.delete_webhook(hook.webhook_id)
        server.should_exit = True
        thread.join(10)
    mine = [c for c in calls if c[0] == name]
    assert len(mine) >= 2, calls  # failed once, retried
    assert len(set(delivery_ids)) == 1, delivery_ids  # ...with the same delivery id
    assert tags.get("nar.status") == "ok", tags


@pytest.mark.integration
def test_hf_receiver_extracts_pushed_configs_in_the_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tempfile

    from fixtures.hf_hub import TINY_GPT2, seed
    from starlette.testclient import TestClient

    from nar_plugin.integrations import receiving
    from nar_plugin.integrations.hf.webhook import make_webhook_app
    from nar_plugin.search.api import open_index

    cache = tmp_path / "hub"
    sha = seed(cache, "org/tiny-gpt2", {"config.json": TINY_GPT2})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    seen: list[str] = []
    real = receiving.extract_in_sandbox
    monkeypatch.setattr(receiving, "extract_in_sandbox", lambda p: seen.append(Path(p).name) or real(p))
    app = make_webhook_app(SECRET, background=False, cache_dir=cache)
    payload = {"event": {"action": "update", "scope": "repo.content"},
               "repo": {"type": "model", "name": "org/tiny-gpt2", "headSha": sha}}
    with TestClient(app) as client:
        r = client.post("/", json=payload, headers={"X-Webhook-Secret": SECRET})
    assert r.status_code == 200, r.text
    assert seen == ["config.json"]
    assert open_index().get(f"hf:org/tiny-gpt2@{sha}") is not None
    assert _ours(tmp) == []
