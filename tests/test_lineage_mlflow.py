"""Registry dedup on weights, against a real `mlflow server` (SQLite backend) started by the tests.

Real torch models, actually trained: a base classifier, an exact copy of it under another name
(blocked), a retrain of the same architecture as version 2 (allowed, ``same-architecture``), a
child fine-tuned from version 1 for a few hundred SGD steps (``fine-tuned-from`` version 1, the
right way round), and the retrain is not ``fine-tuned-from`` anything. Nothing here calls
nar-plugin to index: the hooks `import mlflow` installs do it.
"""

from __future__ import annotations

import copy
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from fixtures.training import sgd_train
from torch import nn

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")

X = torch.randn(1, 3, 16, 16)


def _cnn(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _train(model: nn.Module, steps: int, seed: int, lr: float = 0.05, params: list | None = None) -> nn.Module:
    return sgd_train(model, steps, seed, size=16, lr=lr, params=params)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    base = _train(_cnn(0), 200, seed=1)
    return {
        "base": base,
        "retrain": _train(_cnn(7), 200, seed=1),  # same architecture, same data, another init
        "child": _train(copy.deepcopy(base), 300, seed=2, lr=0.01),  # fine-tuned on other data
    }


def _log(model: nn.Module):
    with mlflow.start_run():
        return mlflow.pytorch.log_model(model, name="model", input_example=X.numpy(), pip_requirements=["torch"])


def _exists(name: str) -> bool:
    return bool(mlflow.MlflowClient().search_registered_models(filter_string=f"name = '{name}'"))


def test_registry_dedup_on_weights(tracking: str, models: dict[str, nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import DuplicateModelError, DuplicateModelWarning
    from nar_plugin.search.api import find_similar

    monkeypatch.setenv("NAR_DEDUP", "block")
    client = mlflow.MlflowClient()
    uid = uuid.uuid4().hex[:6]
    name, other, tuned = f"clf-{uid}", f"copy-{uid}", f"tuned-{uid}"

    base = _log(models["base"])
    tags = client.get_logged_model(base.model_id).tags
    assert len(tags["nar.weights_hash"]) == 64 and tags["nar.fingerprint"].startswith("nar/fingerprint.json.gz@sha256:")
    assert "fingerprint.json.gz" in {Path(f.path).name for f in client.list_logged_model_artifacts(base.model_id, "nar")}
    v1 = mlflow.register_model(f"models:/{base.model_id}", name)

    # the same trained model logged again and registered under another name: refused
    copy_info = _log(models["base"])
    with pytest.raises(DuplicateModelError) as ei:
        mlflow.register_model(f"models:/{copy_info.model_id}", other)
    assert ei.value.duplicate_of == f"{name}/{v1.version}" and "same weights" in str(ei.value)
    assert not _exists(other)

    # a retrain of the same architecture as version 2: the normal case
    retrain = _log(models["retrain"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v2 = mlflow.register_model(f"models:/{retrain.model_id}", name)
    assert not [w for w in caught if issubclass(w.category, DuplicateModelWarning)]
    t2 = client.get_model_version(name, v2.version).tags
    assert t2["nar.relation_to_previous"] == "same-architecture"
    assert "nar.duplicate_of" not in t2 and "nar.parent" not in t2 and "nar.possible_duplicate_of" not in t2

    # fine-tuned from version 1 for 300 SGD steps, registered under its own name
    child = _log(models["child"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vc = mlflow.register_model(f"models:/{child.model_id}", tuned)
    tc = client.get_model_version(tuned, vc.version).tags
    assert tc["nar.parent"] == f"models:/{name}/{v1.version}"
    assert "nar.duplicate_of" not in tc
    # its parent's model (v1, and the retrain v2) has its architecture by definition: no news
    assert "nar.possible_duplicate_of" not in tc
    assert not [w for w in caught if issubclass(w.category, DuplicateModelWarning)]
    # the same architecture under a third name, new weights: a possible duplicate, said once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vs = mlflow.register_model(f"models:/{_log(_cnn(11)).model_id}", f"stranger-{uid}")
    ts = client.get_model_version(f"stranger-{uid}", vs.version).tags
    assert ts["nar.possible_duplicate_of"].rpartition("/")[0] in (name, tuned) and "nar.parent" not in ts
    assert len([w for w in caught if issubclass(w.category, DuplicateModelWarning)]) == 1

    # find_similar by run id: the parent is named, the right way round; the retrain is not kin
    matches = {m.key: m for m in find_similar(child.model_id, k=10)}
    parent = matches[f"mlflow:model:{base.model_id}"]
    assert parent.relation == "fine-tuned-from" and parent.lineage == "parent", parent.why()
    assert parent.weights.similarity > 0.9
    assert matches[f"mlflow:model:{retrain.model_id}"].relation == "same-architecture"
    from_base = {m.key: m for m in find_similar(base.model_id, k=10)}
    assert from_base[f"mlflow:model:{child.model_id}"].lineage == "child"
    assert from_base[f"mlflow:model:{copy_info.model_id}"].relation == "same-weights"
    assert from_base[f"mlflow:model:{retrain.model_id}"].relation == "same-architecture"


def test_fingerprints_are_restored_by_sync(tracking: str, models: dict[str, nn.Module], tmp_path: Path) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.lineage import fingerprint_module
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.search.weights import fingerprint_of, lineage

    info = _log(models["base"])
    fresh = EmbeddingIndex(tmp_path / "fresh", encoder_version=encoder_version())
    rep = sync_from_tracking(tracking, index=fresh)
    assert rep.fingerprints >= 1
    fp = fingerprint_of(fresh, f"mlflow:model:{info.model_id}")
    assert fp is not None and fp.weights_hash == fingerprint_module(models["base"]).weights_hash
    child = _log(models["child"])
    sync_from_tracking(tracking, index=fresh)
    report = lineage(fresh, f"mlflow:model:{child.model_id}")
    assert report.parents and fp.weights_hash == fingerprint_of(fresh, report.parents[0][0]).weights_hash


def test_a_fingerprint_failure_is_one_warning_and_the_model_is_indexed(
        tracking: str, models: dict[str, nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import CorruptArtifactError, NarMlflowWarning
    from nar_plugin.integrations.mlflow import indexing

    def broken(*_: object, **__: object) -> None:
        raise CorruptArtifactError("injected: unreadable weights")

    monkeypatch.setenv("NAR_TESTING", "false")
    monkeypatch.setattr(indexing, "compute_fingerprint", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = _log(models["retrain"])
    assert len([w for w in caught if issubclass(w.category, NarMlflowWarning)]) == 1
    tags = mlflow.MlflowClient().get_logged_model(info.model_id).tags
    assert tags["nar.status"] == "ok" and "nar.weights_hash" not in tags
