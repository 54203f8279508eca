"""The `nar` command line: JSON output, exit codes, one-line errors, every command documented."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import numpy as np
import pytest

from nar_plugin import errors
from nar_plugin.cli.main import main, nar

#: the commands `nar` had before the move to click; none may disappear
COMMANDS = {"corpus", "corpus build", "corpus stats", "dedup", "demo", "embed", "eval", "graph", "index",
            "index add", "index export", "index hf", "index rebuild", "index stats", "index sync", "map",
            "motifs", "serve", "similar", "train"}


def _walk(group: click.Group = nar, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        yield prefix + name, cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, f"{prefix}{name} ")


# ------------------------------------------------------------------ the command tree
def test_every_command_is_still_there() -> None:
    assert {path for path, _ in _walk()} >= COMMANDS


@pytest.mark.parametrize(("path", "cmd"), list(_walk()), ids=[p for p, _ in _walk()])
def test_every_command_option_and_argument_has_help(path: str, cmd: click.Command) -> None:
    assert cmd.help, f"nar {path} has no help text"
    assert not [p.name for p in cmd.params if not p.help], f"nar {path}: parameters without help"


def test_help_and_version_exit_0_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0 and "similar" in capsys.readouterr().out
    assert main(["index", "-h"]) == 0 and "rebuild" in capsys.readouterr().out
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("nar-plugin ")
    assert main([]) == 2
    assert main(["graph", "resnet18", "--no-such-flag"]) == 2


def test_import_is_light_and_python_m_works() -> None:
    code = ("import sys, nar_plugin.cli; heavy = {'torch', 'mlflow', 'transformers', 'huggingface_hub', 'rich'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    r = subprocess.run([sys.executable, "-m", "nar_plugin.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("nar-plugin ")


# ------------------------------------------------------------------ one model
def test_graph_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "resnet18", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 20 convs with their BatchNorms folded in (the IR is the inference-folded graph on every path)
    assert out["nodes"] == 50 and out["ops"]["conv"] == 20 and "batch_norm" not in out["ops"]
    assert len(out["graph_hash"]) == 32


def test_unsupported_source_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_DEBUG", "false")
    assert main(["graph", "no_such_model_anywhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nar: unsupported:")


def test_motifs_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["motifs", "resnet18", "--max-size", "16", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["nodes"] == 50 and 0 < s["macro_nodes"] < 50 and s["types"] == len(s["per_type"])
    assert max(t["size"] for t in s["per_type"]) <= 16
    assert main(["motifs", "resnet18", "--top", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("graph: 50 nodes") and "macro graph:" in text and "more types" in text
    assert main(["motifs", "resnet18", "--steps", "-1"]) == 2  # the library's ValueError: bad input


def test_embed_tag_and_json_agree(capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import encoder_version

    assert main(["embed", "resnet18"]) == 0
    tag = capsys.readouterr().out.strip()
    assert main(["embed", "resnet18", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out.count("\n") == 1  # one line, as before the move to click
    assert data["encoder"] == encoder_version()
    np.testing.assert_allclose(decode_embedding(tag), np.array(data["embedding"]), atol=2e-3)


# ------------------------------------------------------------------ the index
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


def test_index_add_rejects_bad_meta_and_key_with_two_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "add", "resnet18", "--meta", "no-equals-sign"]) == 2
    assert "K=V" in capsys.readouterr().err
    assert main(["index", "add", "resnet18", "resnet34", "--key", "k"]) == 2
    assert capsys.readouterr().err.startswith("nar: invalid input: --key names one entry")


def test_unknown_key_is_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["similar", "mlflow:model:m-nothing", "--index", str(tmp_path / "i")]) == 3
    assert capsys.readouterr().err.startswith("nar: not found:")


def test_dedup_clusters_registered_versions(capsys: pytest.CaptureFixture[str]) -> None:
    # registered versions as `nar index sync` stores them; --no-sync: no MLflow server needed
    for key, src in (("a/1", "resnet18"), ("b/3", "resnet18"), ("c/1", "vit_tiny_patch16_224")):
        assert main(["index", "add", src, "--key", f"mlflow:version:{key}"]) == 0
    assert main(["index", "add", "resnet34"]) == 0  # not a registered version: never in a cluster
    capsys.readouterr()
    assert main(["dedup", "--no-sync", "--json"]) == 0
    clusters = json.loads(capsys.readouterr().out)
    assert {"relation": "same-architecture", "members": ["a/1", "b/3"], "min_score": 1.0, "edges": []} in clusters
    assert all("c/1" not in c["members"] for c in clusters)
    assert main(["dedup", "--no-sync"]) == 0
    assert "same-architecture (min cosine 1.000): a/1, b/3" in capsys.readouterr().out


def test_dedup_registry_flag_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    # it was a no-op ("the default and only scope"); scripts passing it now get a usage error
    assert main(["dedup", "--registry", "--no-sync"]) == 2
    assert "--registry" in capsys.readouterr().err


# ------------------------------------------------------------------ nar serve
def test_serve_without_secret_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAR_WEBHOOK_SECRET", raising=False)
    assert main(["serve", "mlflow-webhook", "--port", "1"]) == 1
    assert capsys.readouterr().err == "nar: error: a webhook receiver needs a secret (NAR_WEBHOOK_SECRET)\n"
    assert main(["serve", "no-such-receiver"]) == 2


@pytest.mark.integration
@pytest.mark.parametrize("what", ["mlflow-webhook", "hf-webhook"])
def test_serve_answers_health_and_stops_on_ctrl_c(what: str, tmp_path: Path) -> None:
    from fixtures.net import free_port, wait_http

    port = free_port()
    env = {**os.environ, "NAR_WEBHOOK_SECRET": "s3cret", "NAR_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "nar_plugin.cli", "serve", what, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 60, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "Application shutdown complete" in out


# ------------------------------------------------------------------ the error table
@pytest.fixture
def raising_command() -> Iterator[Callable[[BaseException], None]]:
    """Mounts ``nar boom``, which raises the exception handed to the fixture's function."""
    pending: list[BaseException] = []

    @click.command("boom")
    def boom() -> None:
        raise pending.pop()

    nar.add_command(boom)
    yield pending.append
    del nar.commands["boom"]


@pytest.mark.parametrize(("exc", "code", "prefix"), [
    (errors.DuplicateModelError("blocked"), 4, "duplicate"),
    (errors.KeyNotFoundError("no entry k"), 3, "not found"),
    (errors.MissingDependencyError("timm", "timm"), 2, "missing dependency"),
    (errors.ConfigError("NAR_X must be an int"), 2, "configuration"),
    (errors.ExampleInputsError("no inputs"), 2, "inputs"),
    (errors.UnsupportedModelError("what is this"), 2, "unsupported"),
    (errors.CorruptArtifactError("bad file"), 2, "corrupt"),
    (errors.IndexCorruptError("bad db"), 2, "index corrupt"),
    (errors.IndexLockedError("lock held"), 1, "index busy"),
    (errors.IndexWriteError("disk full"), 1, "index write failed"),
    (errors.BudgetExceededError("config layers", 800, 200, "NAR_MAX_LAYERS"), 2, "over budget"),
    (errors.GraphTooLargeError(60_000, 50_000), 2, "graph too large"),
    (errors.EncoderVersionMismatchError("v2", "v1"), 2, "encoder mismatch"),
    (errors.GraphExtractionError("fx failed:\n  second line"), 1, "extraction failed"),
    (errors.WebhookVerificationError("bad signature"), 1, "error"),
    (FileNotFoundError("missing.json"), 3, "not found"),
    (ValueError("bad value"), 2, "invalid input"),
    (RuntimeError("boom"), 1, "unexpected RuntimeError"),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_error_table(exc: BaseException, code: int, prefix: str, raising_command: Callable[[BaseException], None],
                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAR_DEBUG", raising=False)
    raising_command(exc)
    assert main(["boom"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"nar: {prefix}: ")
    assert "Traceback" not in err


def _instance(cls: type[BaseException]) -> BaseException:
    init = inspect.signature(cls.__init__).parameters.values()
    required = [p for p in init if p.name != "self" and p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return cls(*["first line\nsecond line"] * max(1, len(required)))


NAR_ERRORS = [n for n in errors.__all__ if isinstance(t := getattr(errors, n), type) and issubclass(t, errors.NarError)]


@pytest.mark.parametrize("name", NAR_ERRORS)
def test_every_nar_error_is_a_known_one_liner(name: str, raising_command: Callable[[BaseException], None],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    raising_command(_instance(getattr(errors, name)))
    assert main(["boom"]) in (1, 2, 3, 4)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nar: ") and "unexpected" not in err


def test_nar_debug_prints_the_traceback_and_keeps_the_code(raising_command: Callable[[BaseException], None],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_DEBUG", "1")
    raising_command(errors.KeyNotFoundError("no entry k"))
    assert main(["boom"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "KeyNotFoundError" in err
    assert err.splitlines()[-1] == "nar: not found: no entry k"


def test_ctrl_c_is_exit_130(raising_command: Callable[[BaseException], None], capsys: pytest.CaptureFixture[str]) -> None:
    raising_command(KeyboardInterrupt())
    assert main(["boom"]) == 130
    assert capsys.readouterr().err == "nar: interrupted\n"
