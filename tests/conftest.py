"""Shared pytest setup: offline HF, a private NAR_HOME per test session, small thread counts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

# Nothing may reach a hub: set before any test imports huggingface_hub/transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _nar_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own NAR_HOME so no test sees another's index (or its cached handle)."""
    monkeypatch.setenv("NAR_HOME", str(tmp_path_factory.mktemp("nar_home")))
    monkeypatch.setenv("NAR_TESTING", "true")
    yield
    handles = sys.modules.get("nar_plugin.index.handles")
    if handles is not None:
        handles.close_all()


# ------------------------------------------------------------------ real mlflow server
import subprocess  # noqa: E402


from fixtures.net import free_port, wait_http  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, 127.0.0.1), started once for the test session."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",  # the server caches the webhook list (60 s by default)
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "NAR_AUTOLOG": "false",
    })
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 120, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at the test server, in a fresh experiment per test."""
    import uuid

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(f"t-{uuid.uuid4().hex[:8]}")
    yield mlflow_server
    if mlflow.active_run():
        mlflow.end_run()
