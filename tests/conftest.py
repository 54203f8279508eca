"""Shared pytest setup: offline HF, a private NAR_HOME per test session, small thread counts."""

from __future__ import annotations

import os

# Nothing may reach a hub: set before any test imports huggingface_hub/transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _nar_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own NAR_HOME so no test sees another's index."""
    monkeypatch.setenv("NAR_HOME", str(tmp_path_factory.mktemp("nar_home")))
    monkeypatch.setenv("NAR_TESTING", "true")
