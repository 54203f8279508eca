"""One exception boundary for every hook: with ``warnings.simplefilter("error")`` (as many test
suites run) and a failure injected into nar-plugin, the user's ``log_model``,
``register_model`` / ``create_model_version`` and HF push still return normally."""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def no_reraise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_TESTING", "false")


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected plugin failure")


# ------------------------------------------------------------------ the boundary itself
def test_warn_safely_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    from nar_plugin.errors import PluginFailureWarning
    from nar_plugin.integrations.boundary import warn_safely

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_safely("x", PluginFailureWarning) is False
    with warnings.catch_warnings():
        warnings.simplefilter("always")

        def explode(*_: Any, **__: Any) -> None:
            raise OSError("stderr closed")

        warnings.showwarning = explode  # restored by catch_warnings
        assert warn_safely("y", PluginFailureWarning) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_safely("z", PluginFailureWarning) is True
    assert [str(w.message) for w in caught] == ["z"] and caught[0].filename == __file__


def test_boundary_under_error_filters_logs_instead(no_reraise: None, caplog: pytest.LogCaptureFixture) -> None:
    from nar_plugin.errors import NarMlflowWarning
    from nar_plugin.integrations.boundary import plugin_boundary

    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        with plugin_boundary("indexing X", category=NarMlflowWarning):
            raise RuntimeError("broken")
        result = "the user's result"
    assert result == "the user's result"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "nar-plugin: indexing X failed (RuntimeError: broken); the call itself succeeded"]


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_malformed_nar_testing_counts_as_false_with_a_log_line(value: str, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from nar_plugin.integrations.boundary import plugin_boundary

    monkeypatch.setenv("NAR_TESTING", value)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        with plugin_boundary("x"):
            raise RuntimeError("broken")
    assert any("NAR_TESTING" in r.getMessage() and "counted as false" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ MLflow hooks (real tracking server)
mlflow = pytest.importorskip("mlflow")


def _small() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


def _log(name: str = "m") -> Any:
    import torch

    return mlflow.pytorch.log_model(_small(), name=name, input_example=torch.randn(2, 4).numpy(),
                                    pip_requirements=["torch"])


@pytest.mark.integration
def test_log_model_succeeds_under_error_filters_with_a_plugin_failure(tracking: str, no_reraise: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.models.model import ModelInfo

    from nar_plugin.model import inference

    monkeypatch.setattr(inference, "embed_graph", _boom)
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("error")
        # MLflow's own warnings (type hints...) would break log_model under "error" by themselves;
        # ours are attributed to this file and stay errors
        warnings.filterwarnings("ignore", module="mlflow")
        info = _log()
    assert isinstance(info, ModelInfo) and info.model_id
    assert mlflow.MlflowClient().get_logged_model(info.model_id).tags["nar.status"] == "error:RuntimeError"


@pytest.mark.integration
@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("call", ["register_model", "create_model_version"])
def test_registration_succeeds_under_error_filters_with_a_plugin_failure(
        tracking: str, no_reraise: None, monkeypatch: pytest.MonkeyPatch, where: str, call: str) -> None:
    from nar_plugin.integrations.mlflow import registry

    with mlflow.start_run():
        info = _log()
    monkeypatch.setenv("NAR_DEDUP", "warn")
    monkeypatch.setattr(registry, "before_create" if where == "before" else "after_create", _boom)
    client = mlflow.MlflowClient()
    name = f"hk-{uuid.uuid4().hex[:6]}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if call == "register_model":
            mv = mlflow.register_model(f"models:/{info.model_id}", name)
        else:
            client.create_registered_model(name)
            mv = client.create_model_version(name, f"models:/{info.model_id}", model_id=info.model_id)
    assert str(mv.version) == "1"
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]


@pytest.mark.integration
def test_duplicate_warning_under_error_filters_still_tags_and_indexes(tracking: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.search.api import open_index

    with mlflow.start_run():
        first = _log()
    with mlflow.start_run():
        second = _log()
    monkeypatch.setenv("NAR_DEDUP", "warn")
    name = f"dw-{uuid.uuid4().hex[:6]}"
    v1 = mlflow.register_model(f"models:/{first.model_id}", name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the DuplicateModelWarning must not abort the tagging
        # the same architecture under another name: a possible duplicate (issue 17)
        v2 = mlflow.register_model(f"models:/{second.model_id}", f"{name}-copy")
    tags = mlflow.MlflowClient().get_model_version(f"{name}-copy", v2.version).tags
    assert tags["nar.possible_duplicate_of"] == f"{name}/{v1.version}"
    assert any(k.endswith(f"{name}-copy/{v2.version}") for k in open_index().keys())  # noqa: SIM118 - a method, not a dict


# ------------------------------------------------------------------ HF push hook (mock Hub)
hub_fixtures = pytest.importorskip("fixtures.hf_hub")
from fixtures.hf_hub import TINY_BERT, MockHub, hook, hub  # noqa: F401


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_BERT))
    (d / "model.safetensors").write_bytes(b"\0" * 256)
    return d


@pytest.mark.parametrize("target", ["nar_plugin.model.inference.embed_graph", "nar_plugin.search.api.index_graph"])
def test_hf_push_succeeds_under_error_filters_with_a_plugin_failure(
        hub: MockHub, hook: None,  # noqa: F811 - fixtures
        tmp_path: Path, no_reraise: None, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    from huggingface_hub import HfApi

    mod, fn = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(mod, fromlist=[fn]), fn, _boom)
    folder = _folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = HfApi().upload_folder(repo_id="org/pushed", folder_path=folder)
    assert info.oid and len(hub.commits) == 1
    assert hub.commits[0]["config.json"] == (folder / "config.json").read_bytes()


def test_hf_push_with_a_malformed_nar_testing_goes_ahead(hub: MockHub, hook: None, tmp_path: Path,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from huggingface_hub import HfApi

    import nar_plugin.model.inference

    monkeypatch.setattr(nar_plugin.model.inference, "embed_graph", _boom)
    monkeypatch.setenv("NAR_TESTING", "maybe")
    with warnings.catch_warnings(record=True), caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        info = HfApi().upload_folder(repo_id="org/pushed", folder_path=_folder(tmp_path))
    assert info.oid and len(hub.commits) == 1
    assert any("NAR_TESTING" in r.getMessage() for r in caplog.records)
