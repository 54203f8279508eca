"""nar_plugin.utils: atomic writes, versioned JSON, optional imports, progress."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from nar_plugin.errors import CorruptArtifactError, MissingDependencyError
from nar_plugin.utils.deps import is_available, require
from nar_plugin.utils.io import (atomic_write_json, atomic_write_text, atomic_writer, read_versioned_json,
                                 write_versioned_json)
from nar_plugin.utils.progress import Progress


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_atomic_writer_keeps_old_file_on_error(tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(p) as fh:
        fh.write(b"half")
        raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_atomic_write_json_is_canonical(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": 2})
    atomic_write_json(tmp_path / "y.json", {"a": 2, "b": 1})
    assert (tmp_path / "x.json").read_bytes() == (tmp_path / "y.json").read_bytes()


def test_versioned_json_round_trip_and_checks(tmp_path: Path) -> None:
    p = tmp_path / "v.json"
    write_versioned_json(p, "nar-test", 2, {"x": [1, 2]})
    assert read_versioned_json(p, "nar-test", (1, 2))["x"] == [1, 2]
    with pytest.raises(CorruptArtifactError, match="version 2 is not supported"):
        read_versioned_json(p, "nar-test", 1)
    with pytest.raises(CorruptArtifactError, match="expected format 'other'"):
        read_versioned_json(p, "other", 2)
    p.write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="could not read"):
        read_versioned_json(p, "nar-test", 2)
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(CorruptArtifactError, match="found 'list'"):
        read_versioned_json(p, "nar-test", 2)
    with pytest.raises(FileNotFoundError):
        read_versioned_json(tmp_path / "missing.json", "nar-test", 2)


def test_require_names_the_extra() -> None:
    assert require("json") is json
    with pytest.raises(MissingDependencyError, match=r"pip install 'nar-plugin\[ray\]'") as ei:
        require("ray_that_is_not_installed_xyz", "ray")
    assert isinstance(ei.value, ImportError)
    assert is_available("json") and not is_available("ray_that_is_not_installed_xyz")


def test_require_lets_inner_import_errors_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "narpkg_broken.py").write_text("import narpkg_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as ei:
        require("narpkg_broken", "all")
    assert not isinstance(ei.value, MissingDependencyError)
    assert ei.value.name == "narpkg_missing_dependency_xyz"


def test_progress_counts_tasks_and_logs_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nar_plugin.utils.progress")
    with Progress(enabled=False, log_every=1e-9, counters=("ok", "failed")) as bar:
        bar.add_task("timm", 3)
        bar.add_task("timm", 2)
        bar.advance(task="timm", ok=1)
        bar.advance(task="timm", failed=1)
    assert bar.totals["timm"] == 5 and bar.done["timm"] == 2
    assert bar.counts["timm"] == {"ok": 1, "failed": 1}
    assert "timm: 2/5 done, 1 ok, 1 failed" in caplog.text
    with Progress("one", total=2, enabled=False) as single:
        single.advance()
        single.advance()
    assert single.completed == 2
    with pytest.raises(KeyError, match="no progress task"):
        single.advance(task="other")


def test_atomic_write_keeps_the_usual_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.txt").write_text("x")
        os.chmod(tmp_path / "kept.txt", 0o640)
        atomic_write_text(tmp_path / "kept.txt", "y")
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
