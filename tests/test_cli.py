"""The `nar` command line: JSON output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nar_plugin.cli.main import main


def test_graph_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "resnet18", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == 70 and out["ops"]["conv"] == 20 and len(out["graph_hash"]) == 32


def test_unsupported_source_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_DEBUG", "false")
    assert main(["graph", "no_such_model_anywhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nar: unsupported:")


def test_index_add_similar_stats_export_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idx = str(tmp_path / "idx")
    assert main(["index", "--index", idx, "add", "resnet18", "resnet34", "vit_tiny_patch16_224", "--json"]) == 0
    keys = json.loads(capsys.readouterr().out)
    assert keys == ["timm:resnet18", "timm:resnet34", "timm:vit_tiny_patch16_224"]
    assert main(["similar", "timm:resnet18", "-k", "2", "--index", idx, "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)
    assert [m["key"] for m in matches][0] == "timm:resnet34"
    assert all(m["key"] != "timm:resnet18" for m in matches)
    assert main(["index", "--index", idx, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert main(["index", "--index", idx, "export", str(tmp_path / "e.jsonl")]) == 0
    capsys.readouterr()
    (Path(idx) / "meta.sqlite").write_bytes(b"garbage" * 100)  # corrupt the truth
    assert main(["index", "--index", idx, "stats"]) == 2
    assert "nar index rebuild" in capsys.readouterr().err
    assert main(["index", "--index", idx, "rebuild", "--from-export", str(tmp_path / "e.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 3
    assert main(["similar", "timm:resnet18", "-k", "1", "--index", idx, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["key"] == "timm:resnet34"


def test_unknown_key_is_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["similar", "mlflow:model:m-nothing", "--index", str(tmp_path / "i")]) == 3
    assert capsys.readouterr().err.startswith("nar: not found:")
