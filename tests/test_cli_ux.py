"""A newcomer's first hour with `nar`: read-only and misconfigured homes, a corrupt index, piped
output, missing extras and a model whose forward fails must each say what to do (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest

from nar_plugin import errors
from nar_plugin.cli.main import main, nar

#: a key longer than any terminal: it must come out whole when piped
LONG_KEY = "mlflow:model:m-" + "0123456789abcdef" * 8


def _units(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A NAR_HOME whose index holds three entries of the loaded encoder (one with LONG_KEY)."""
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.model.inference import encoder_version

    h = tmp_path / "home"
    monkeypatch.setenv("NAR_HOME", str(h))
    v = _units(3, seed=1)
    v[1] = v[0] + 0.05 * v[1]  # the long key is the query's nearest neighbour
    with EmbeddingIndex(h / "index", encoder_version=encoder_version()) as idx:
        idx.add_many([("timm:a", v[0]), (LONG_KEY, v[1]), ("timm:c", v[2])])
    return h


def _tiny_graph_json() -> str:
    from torch import nn

    from nar_plugin.extract import extract_graph

    return extract_graph(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))).to_json()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "NAR_DEBUG": "false", **extra}


# ------------------------------------------------------------------ read-only NAR_HOME
def _deny_writes_under(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``os.access`` report ``root`` unwritable (tests run as root, where chmod stops nothing)."""
    real = os.access

    def access(path: object, mode: int, *a: object, **k: object) -> bool:
        if mode & os.W_OK and Path(os.fspath(path)).resolve().is_relative_to(root.resolve()):  # type: ignore[arg-type]
            return False
        return real(path, mode, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def test_read_only_home_answers_queries_and_refuses_writes(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    index = home / "index"
    for name in (".lock", ".cache.lock", "vectors.faiss", "vectors.faiss.json"):
        (index / name).unlink(missing_ok=True)
    _deny_writes_under(home, monkeypatch)
    assert main(["similar", "timm:a", "-k", "1", "--json"]) == 0
    assert [m["key"] for m in json.loads(capsys.readouterr().out)] == [LONG_KEY]
    assert main(["index", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert main(["index", "export", str(tmp_path / "e.jsonl")]) == 0
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    # no lock file, no FAISS cache file (a mode=ro reader may still create SQLite's -shm/-wal here,
    # where the folder is in truth writable; the bind-mounted test below has none)
    assert {p.name for p in index.iterdir()} - {"meta.sqlite-shm", "meta.sqlite-wal"} == {"meta.sqlite"}

    import nar_plugin
    from nar_plugin.search.api import open_index

    report = nar_plugin.check_duplicate("timm:a")
    assert report.best is not None and report.best.key == LONG_KEY
    idx = open_index()
    assert idx.read_only
    with pytest.raises(errors.IndexReadOnlyError) as info:
        idx.upsert("timm:new", _units(1, seed=2)[0])
    assert isinstance(info.value, OSError) and isinstance(info.value, errors.InvalidQueryError)
    msg = str(info.value)
    assert str(index) in msg and f"NAR_HOME={home}" in msg and "writable folder" in msg
    assert main(["index", "rebuild"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nar: read-only index: cannot rebuild the index at") and "NAR_HOME" in err


def test_missing_index_in_read_only_home_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    h = tmp_path / "ro-home"
    h.mkdir()
    monkeypatch.setenv("NAR_HOME", str(h))
    _deny_writes_under(h, monkeypatch)
    assert main(["index", "stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nar: read-only index: there is no index at {h / 'index'}") and "NAR_HOME" in err
    assert not (h / "index").exists()


_RO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from nar_plugin.cli.main import main
    codes = [main(["index", "stats", "--json"]), main(["similar", "timm:a", "-k", "1", "--json"]),
             main(["index", "export", sys.argv[1]]), main(["index", "add", sys.argv[2], "--key", "k"])]
    print("CODES", json.dumps(codes))
    """
)


def _ro_bind_available() -> bool:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / / 2>/dev/null || exit 1"],
                           capture_output=True, timeout=30)  # in its own mount namespace: nothing leaks
    return probe.returncode == 0


@pytest.mark.skipif(not _ro_bind_available(), reason="needs root and unshare(1) for a read-only bind mount")
def test_read_only_bind_mounted_home_is_queried_for_real(home: Path, tmp_path: Path) -> None:
    """A truly read-only file system (EROFS): SQLite cannot create its -shm file there."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tiny.json").write_text(_tiny_graph_json())
    cmd = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(home),
           sys.executable, "-c", _RO_SCRIPT, str(tmp_path / "out" / "e.jsonl"), str(tmp_path / "out" / "tiny.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(NAR_HOME=str(home)))
    codes_line = [ln for ln in r.stdout.splitlines() if ln.startswith("CODES ")]
    assert codes_line, r.stdout + r.stderr
    assert json.loads(codes_line[0][6:]) == [0, 0, 0, 2], r.stderr
    assert LONG_KEY in r.stdout and '"count": 3' in r.stdout
    assert "nar: read-only index: cannot write to the index at" in r.stderr
    assert len((tmp_path / "out" / "e.jsonl").read_text().splitlines()) == 4
    assert sorted(p.name for p in (home / "index").iterdir()) == [".cache.lock", ".lock", "meta.sqlite",
                                                                 "vectors.faiss", "vectors.faiss.json"]


# ------------------------------------------------------------------ NAR_HOME is a file
def test_nar_home_pointing_at_a_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "home.txt"
    f.write_text("not a folder")
    monkeypatch.setenv("NAR_HOME", str(f))
    assert main(["index", "stats"]) == 2
    assert capsys.readouterr().err == f"nar: configuration: NAR_HOME={f} is a file; point it at a folder\n"
    monkeypatch.setenv("NAR_HOME", str(f / "sub"))
    from nar_plugin.config import nar_home

    with pytest.raises(errors.ConfigError, match=f"inside {f}, which is a file"):
        nar_home()
    assert main(["index", "--index", str(f / "idx"), "stats"]) == 2  # an explicit --index under a file
    assert "is a file" in capsys.readouterr().err


# ------------------------------------------------------------------ nar index rebuild without flags
def _corrupt(home: Path) -> None:
    (home / "index" / "meta.sqlite").write_bytes(b"garbage" * 100)


def test_rebuild_without_flags_restores_the_export_beside_the_index(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "rebuild", "--json"]) == 0  # intact: the vector cache is re-derived
    assert "SQLite is intact" in json.loads(capsys.readouterr().out)["message"]
    assert main(["index", "export", str(home / "backup.jsonl")]) == 0
    _corrupt(home)
    capsys.readouterr()
    assert main(["index", "rebuild", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["entries"] == 3
    assert "is corrupt" in err and str(home / "backup.jsonl") in err
    assert main(["similar", "timm:a", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["key"] == LONG_KEY


def test_rebuild_without_flags_and_without_a_source_names_the_flags(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _corrupt(home)
    assert main(["index", "rebuild"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nar: index corrupt:")
    assert "--from-export" in err and "--from-tracking" in err and "MLFLOW_TRACKING_URI" in err
    assert "Restore it with `nar index rebuild`" not in err  # not the advice that led here


def test_rebuild_without_flags_uses_the_tracking_server_when_one_is_set(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import nar_plugin.integrations.mlflow.sync as sync_mod

    calls: list[tuple[str | None, bool]] = []

    class Report:
        tracking_uri = "http://tracking.example:5000"

    def fake_sync(tracking_uri: str | None = None, index: object = None, full: bool = False, **_: object) -> Report:
        calls.append((tracking_uri, full))
        index.upsert("mlflow:model:m-1", _units(1, seed=3)[0])  # type: ignore[attr-defined]
        return Report()

    monkeypatch.setattr(sync_mod, "sync_from_tracking", fake_sync)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    _corrupt(home)
    assert main(["index", "rebuild", "--json"]) == 0
    out, err = capsys.readouterr()
    assert calls == [(None, True)] and json.loads(out)["entries"] == 1
    assert "nar tags at http://tracking.example:5000" in err


# ------------------------------------------------------------------ output
def test_piped_output_keeps_full_keys(home: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "nar_plugin.cli", "similar", "timm:a", "-k", "2"],
                       capture_output=True, text=True, timeout=300, env=_env(NAR_HOME=str(home), COLUMNS="40"))
    assert r.returncode == 0, r.stderr
    assert LONG_KEY in r.stdout and "…" not in r.stdout


def test_console_width_follows_tty_and_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.cli.options import WIDE_KEY
    from nar_plugin.cli.output import UNBOUNDED_WIDTH, console

    monkeypatch.setenv("COLUMNS", "60")
    assert console().width == UNBOUNDED_WIDTH  # pytest's stdout is not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert console().width == 60
    with click.Context(nar) as ctx:
        ctx.meta[WIDE_KEY] = True
        assert console().width == UNBOUNDED_WIDTH


def test_wide_is_accepted_at_the_root_and_on_similar(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--wide", "similar", "timm:a", "-k", "1", "--wide"]) == 0
    assert LONG_KEY in capsys.readouterr().out


def test_empty_index_prints_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "tiny.json"
    src.write_text(_tiny_graph_json())
    assert main(["index", "stats", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 0  # stdout stays pure JSON; the hint goes to stderr
    assert err.startswith("hint: the index at") and "nar index add" in err and "nar index sync" in err
    assert main(["similar", str(src), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "is empty" in err


def test_help_texts() -> None:
    assert all(p.help for p in nar.params), "root options without help"
    sim = nar.commands["similar"]
    assert "MLFLOW_TRACKING_URI" in (sim.help or "")
    assert "--wide" in sim.get_help(click.Context(sim))


# ------------------------------------------------------------------ missing extras
_NO_EXTRAS = textwrap.dedent(
    """
    import sys
    sys.modules["mlflow"] = None            # as on an install without the [mlflow] extra
    sys.modules["huggingface_hub"] = None   # ... and without [hf]
    import nar_plugin.hf, nar_plugin.mlflow
    from nar_plugin.errors import MissingDependencyError
    for name, call in [("mlflow.autolog", nar_plugin.mlflow.autolog), ("mlflow.sync", nar_plugin.mlflow.sync),
                       ("mlflow.dedup_report", nar_plugin.mlflow.dedup_report),
                       ("hf.autolog", nar_plugin.hf.autolog), ("hf.index_repo", lambda: nar_plugin.hf.index_repo("a/b"))]:
        try:
            call()
        except MissingDependencyError as e:
            print(name, "->", e)
    print("is_autologging", nar_plugin.mlflow.is_autologging())
    from nar_plugin.cli.main import main
    sys.exit(main(["index", "sync"]))
    """
)


def test_missing_extras_name_the_pip_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _NO_EXTRAS], capture_output=True, text=True, timeout=300,
                       env=_env(NAR_HOME=str(tmp_path)))
    lines = dict(ln.split(" -> ", 1) for ln in r.stdout.splitlines() if " -> " in ln)
    assert set(lines) == {"mlflow.autolog", "mlflow.sync", "mlflow.dedup_report", "hf.autolog", "hf.index_repo"}, r
    for name, msg in lines.items():
        extra = name.split(".")[0]
        assert f"pip install 'nar-plugin[{extra}]'" in msg, (name, msg)
    assert "is_autologging False" in r.stdout
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("nar: missing dependency: mlflow is required for this feature but "
                                                 "is not installed; run `pip install 'nar-plugin[mlflow]'`")


def test_error_table_knows_read_only_and_bare_missing_modules() -> None:
    from nar_plugin.cli.main import _missing_extra, report_error

    assert report_error(errors.IndexReadOnlyError("cannot write")) == 2
    e = ModuleNotFoundError("No module named 'no_such_extra_pkg'", name="no_such_extra_pkg")
    assert _missing_extra(e) is e  # not one of ours: reported as is
    installed = ModuleNotFoundError("No module named 'timm.x'", name="timm.x")
    assert _missing_extra(installed) is installed  # timm is installed: a broken install, not a missing extra


# ------------------------------------------------------------------ a forward that raises
def test_forward_error_is_not_hidden_behind_cannot_infer_inputs() -> None:
    from torch import nn

    from nar_plugin.extract import extract_graph

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            raise KeyError("layer_cfg['depth'] missing")

    with pytest.raises(errors.ExampleInputsError) as info:
        extract_graph(Broken())
    msg = str(info.value)
    assert "cannot infer example inputs for Broken" in msg
    assert "KeyError" in msg and "layer_cfg['depth'] missing" in msg and "example_inputs=" in msg
    assert isinstance(info.value.__cause__, KeyError)
