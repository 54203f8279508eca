"""``NAR_DEDUP=block`` fails closed: when no duplicate check can be made (no model id, a pickle,
the index locked, a plugin error) registration is refused with a message naming the reason and
the override, and nothing is created; ``warn``/``tag`` let it through with a warning. Also the
index under faults: ``NAR_LOCK_TIMEOUT`` validated, a disk full mid-batch is a typed error."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.integration


def _small() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


def _log(fmt: str = "pt2", model: Any = None) -> Any:
    import torch

    with mlflow.start_run():
        if fmt == "pickle":
            return mlflow.pytorch.log_model(_small(), name="m", serialization_format="pickle",
                                            pip_requirements=["torch"])
        return mlflow.pytorch.log_model(model if model is not None else _small(), name="m",
                                        input_example=torch.randn(2, 4).numpy(), pip_requirements=["torch"])


def _exists(name: str) -> bool:
    return bool(mlflow.MlflowClient().search_registered_models(filter_string=f"name = '{name}'"))


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_DEDUP", "block")


# ------------------------------------------------------------------ the causes of "no check could be made"
def test_pickle_flavour_is_refused_and_leaves_no_registered_model(tracking: str, block: None) -> None:
    from nar_plugin.errors import DedupCheckFailedError, DuplicateModelError

    info = _log("pickle")
    name = _name("blk-pkl")
    with pytest.raises(DedupCheckFailedError) as ei:
        mlflow.register_model(f"models:/{info.model_id}", name)
    assert isinstance(ei.value, DuplicateModelError)  # callers catching the duplicate error see it too
    msg = str(ei.value)
    assert "skipped:pickle" in msg and "NAR_DEDUP=warn" in msg and name in msg
    assert not _exists(name)  # register_model created the name first: removed again


def test_source_that_is_no_logged_model_is_refused(tracking: str, block: None, tmp_path: Any) -> None:
    from nar_plugin.errors import DedupCheckFailedError

    client = mlflow.MlflowClient()
    name = _name("blk-src")
    client.create_registered_model(name)
    with pytest.raises(DedupCheckFailedError, match="not a LoggedModel"):
        client.create_model_version(name, source=f"file://{tmp_path}/somewhere")
    assert not _exists(name)


def test_artifact_location_source_resolves_the_model_and_blocks_the_duplicate(tracking: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import DedupCheckFailedError, DuplicateModelError

    model = _small()
    first, second = _log(model=model), _log(model=model)  # the same weights logged twice: a duplicate
    client = mlflow.MlflowClient()
    name = _name("blk-loc")
    monkeypatch.setenv("NAR_DEDUP", "warn")
    v1 = mlflow.register_model(f"models:/{first.model_id}", name)
    monkeypatch.setenv("NAR_DEDUP", "block")
    location = client.get_logged_model(second.model_id).artifact_location
    with pytest.raises(DuplicateModelError) as ei:  # no model id given: resolved from the location
        client.create_model_version(name, source=location)
    assert not isinstance(ei.value, DedupCheckFailedError)
    assert ei.value.duplicate_of == f"{name}/{v1.version}"
    # a crafted path that names another model's id is not that model: no check, refused
    forged = location.replace("/models/", "/elsewhere/models/")
    with pytest.raises(DedupCheckFailedError):
        client.create_model_version(name, source=forged)
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [v1.version]  # kept


def test_lock_timeout_is_refused(tracking: str, block: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import filelock

    from nar_plugin.errors import DedupCheckFailedError
    from nar_plugin.index import EmbeddingIndex

    info = _log()
    monkeypatch.setenv("NAR_LOCK_TIMEOUT", "0.2")
    idx = EmbeddingIndex()
    name = _name("blk-lock")
    with filelock.FileLock(str(idx.path / ".lock")), pytest.raises(DedupCheckFailedError) as ei:
        mlflow.register_model(f"models:/{info.model_id}", name)
    assert "IndexLockedError" in ei.value.reason and "NAR_DEDUP=warn" in str(ei.value)
    assert not _exists(name)


@pytest.mark.parametrize("testing", ["true", "false"])
def test_plugin_error_is_refused(tracking: str, block: None, monkeypatch: pytest.MonkeyPatch, testing: str) -> None:
    from nar_plugin.errors import DedupCheckFailedError
    from nar_plugin.integrations.mlflow import registry

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("injected plugin failure")

    info = _log()
    monkeypatch.setattr(registry, "find_version_duplicates", boom)
    monkeypatch.setenv("NAR_TESTING", testing)
    name = _name("blk-err")
    with pytest.raises(DedupCheckFailedError, match="RuntimeError: injected plugin failure"):
        mlflow.register_model(f"models:/{info.model_id}", name)
    assert not _exists(name)


def test_refusal_never_deletes_a_model_that_has_versions(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import DedupCheckFailedError

    good, pickled = _log(), _log("pickle")
    name = _name("blk-keep")
    monkeypatch.setenv("NAR_DEDUP", "warn")
    mlflow.register_model(f"models:/{good.model_id}", name)
    monkeypatch.setenv("NAR_DEDUP", "block")
    with pytest.raises(DedupCheckFailedError):
        mlflow.register_model(f"models:/{pickled.model_id}", name)
    assert _exists(name)
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{name}'")) == 1


# ------------------------------------------------------------------ warn / tag fail open, with the warning
@pytest.mark.parametrize("policy", ["warn", "tag"])
def test_warn_and_tag_fail_open_with_a_warning(tracking: str, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    from nar_plugin.errors import NarMlflowWarning

    info = _log("pickle")
    monkeypatch.setenv("NAR_DEDUP", policy)
    monkeypatch.setenv("NAR_TESTING", "false")
    name = _name(f"open-{policy}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mv = mlflow.register_model(f"models:/{info.model_id}", name)
    assert str(mv.version) == "1"
    ours = [w for w in caught if issubclass(w.category, NarMlflowWarning)]
    assert len(ours) == 1 and "no duplicate check" in str(ours[0].message) and "skipped:pickle" in str(ours[0].message)


# ------------------------------------------------------------------ the index under faults
@pytest.mark.parametrize("value", ["-1", "inf", "nan", "-0.5"])
def test_lock_timeout_must_be_finite_and_non_negative(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import ConfigError
    from nar_plugin.index.locks import lock_timeout

    monkeypatch.setenv("NAR_LOCK_TIMEOUT", value)
    with pytest.raises(ConfigError, match="NAR_LOCK_TIMEOUT"):
        lock_timeout()
    monkeypatch.setenv("NAR_LOCK_TIMEOUT", "0")
    assert lock_timeout() == 0.0


def test_disk_full_during_a_batch_is_a_typed_error_and_changes_nothing(tmp_path: Any) -> None:
    import numpy as np

    from nar_plugin.errors import IndexWriteError
    from nar_plugin.index import EmbeddingIndex

    idx = EmbeddingIndex(tmp_path / "idx")
    rng = np.random.default_rng(0)
    idx.add("kept", rng.standard_normal(idx.dim).astype("float32"))
    conn = idx._db.refresh()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # what a full disk looks like to SQLite
    batch = [(f"k{i}", rng.standard_normal(idx.dim).astype("float32")) for i in range(500)]
    with pytest.raises(IndexWriteError) as ei:
        idx.add_many(batch)
    assert isinstance(ei.value, OSError) and "SQLITE_FULL" in str(ei.value)
    assert idx.keys() == ["kept"]  # rolled back
