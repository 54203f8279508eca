"""``nar demo`` on a few models: it works, and it leaves the calling process as it found it."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")


def _process_state() -> dict[str, object]:
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from mlflow.tracking import fluent

    from nar_plugin.apps.demo import _QUIET_LOGGERS

    return {
        "env": dict(os.environ),
        "filters": list(warnings.filters),
        "levels": {name: logging.getLogger(name).level for name in _QUIET_LOGGERS},
        "tracking_uri": mlflow.get_tracking_uri(),
        "tracking_uri_set": tracking_utils._tracking_uri,
        "experiment": fluent._active_experiment_id,
    }


def test_run_demo_on_three_models_restores_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.apps.demo import run_demo

    monkeypatch.delenv("NAR_DEDUP", raising=False)  # the demo sets its own default
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where the user started it: nothing may land here
    monkeypatch.setenv("MY_SETTING", "kept")
    mlflow_logger = logging.getLogger("mlflow")
    old_level = mlflow_logger.level
    mlflow_logger.setLevel(logging.INFO)  # a level the demo changes (to ERROR) and must put back
    lines: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="a filter of the caller")
            before = _process_state()
            result = run_demo(tmp_path / "demo", out_map=tmp_path / "map.html", limit=3, echo=lines.append)
            after = _process_state()
    finally:
        mlflow_logger.setLevel(old_level)
    assert after == before
    assert [r["status"] for r in result["logged"]] == ["ok", "ok", "ok"]
    assert result["planted_duplicate"]["duplicate_of"] == "image-classifier/1"  # same weights, other name
    assert result["planted_duplicate"]["warned"]
    reg = {r["what"]: r for r in result["registry"]}
    assert reg["retrained (new weights)"]["version"] == "image-classifier/2"
    assert reg["retrained (new weights)"]["tags"] == {"nar.relation_to_previous": "same-architecture"}
    assert not reg["retrained (new weights)"]["warned"]  # a retrain is the normal case
    assert reg["fine-tuned from v1"]["tags"]["nar.parent"] == "models:/image-classifier/1"
    assert "nar.duplicate_of" not in reg["fine-tuned from v1"]["tags"]
    clusters = {c["relation"]: c for c in result["dedup"]}  # `nar dedup`: clusters by relation
    assert clusters["same-weights"]["members"] == ["image-classifier-copy/1", "image-classifier/1"]
    assert clusters["fine-tuned-from"]["edges"] == [("image-classifier/1", "image-classifier-finetuned/1")]
    resnet34 = result["similar"]["resnet34"]
    assert resnet34 and all(m["metadata"]["run_id"] for m in resnet34)
    assert (tmp_path / "map.html").is_file() and any("wrote" in line for line in lines)
    assert (tmp_path / "demo" / "nar" / "index").is_dir()  # the demo's own index, not NAR_HOME's
    assert list(cwd.iterdir()) == []  # artifacts live in the working directory, not ./mlruns
    assert list((tmp_path / "demo" / "artifacts").rglob("MLmodel"))
