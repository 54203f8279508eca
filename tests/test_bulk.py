"""nar_plugin.bulk and ``nar index bulk``: sources and revisions, the serial engine, the Ray
engine (real Ray, local cluster) against the serial one, resume after a real kill, MLflow.

Everything is real: timm models built on meta, an ONNX file exported here, HF configs from a
hand-seeded offline cache (tests/fixtures/hf_hub.py), FAISS + SQLite indexes, Ray's local
cluster, an ``mlflow server``. The Hub listing is the one piece read from a fake ``HfApi``
(no network here); what it lists is then indexed from the real offline cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fixtures.hf_hub import TINY_BERT, TINY_GPT2, seed  # tests/ is on sys.path (rootdir conftest)
from nar_plugin.bulk import BulkOptions, Source, bulk_index, indexed_revisions, parse_spec
from nar_plugin.bulk.stages import known_revision, revision_of_path
from nar_plugin.index import EmbeddingIndex

ROOT = Path(__file__).resolve().parents[1]
#: small timm architectures of several families (fx and export paths)
TIMM = ["resnet10t", "resnet14t", "resnet18", "resnet18d", "resnet26", "mobilenetv3_small_050", "mobilenetv2_035",
        "efficientnet_b0", "ghostnet_050", "lcnet_050", "regnetx_002", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
        "convnext_atto", "mixer_s32_224", "densenet121"]


def _onnx(path: Path, width: int = 8) -> Path:
    model = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Conv2d(width, width, 3, groups=width), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = tmp_path_factory.mktemp("bulk-hub")
    seed(c, "org/tiny-bert", {"config.json": TINY_BERT})
    seed(c, "org/tiny-gpt2", {"config.json": TINY_GPT2})
    return c


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _onnx(tmp_path_factory.mktemp("bulk-onnx") / "net.onnx")


def _entries(path: Path) -> dict[str, Any]:
    idx = EmbeddingIndex(path, read_only=True)
    try:
        return {e.key: e for e in idx.entries()}
    finally:
        idx.close()


# ------------------------------------------------------------------ sources and revisions

def test_parse_spec_kinds(onnx_file: Path, tmp_path: Path) -> None:
    assert parse_spec("resnet18") == Source("timm", "resnet18")
    assert parse_spec("timm:vit_tiny_patch16_224").sid == "timm:vit_tiny_patch16_224"
    assert parse_spec("org/name@v1") == Source("hf", "org/name", "v1")
    assert parse_spec("hf:org/name").sid == "hf:org/name"
    assert parse_spec(str(onnx_file)) == Source("file", str(onnx_file.resolve()))
    ml = parse_spec("models:/reg/3", "http://127.0.0.1:5000")
    assert (ml.kind, ml.sid, ml.extra["tracking_uri"]) == ("mlflow", "models:/reg/3", "http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="not a timm name"):
        parse_spec("certainly_not_a_model")
    with pytest.raises(ValueError):
        Source("pickle", "x")


def test_revisions_per_kind(onnx_file: Path, tmp_path: Path) -> None:
    import timm

    assert known_revision(Source("timm", "resnet18")) == f"timm-{timm.__version__}"
    assert known_revision(Source("hf", "org/x", "main")) is None  # a branch moves: resolved when fetched
    assert known_revision(Source("hf", "org/x", None, {"sha": "a" * 40})) == "a" * 40
    assert known_revision(Source("mlflow", "models:/m-" + "0" * 32, extra={"versions": [["r", "2"], ["r", "1"]]})) \
        == "m-" + "0" * 32 + ";r/1;r/2"
    assert known_revision(Source("file", str(onnx_file))) is None
    other = _onnx(tmp_path / "other.onnx", width=16)
    assert revision_of_path(onnx_file) == revision_of_path(onnx_file) != revision_of_path(other)
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a").write_text("1")
    before = revision_of_path(folder)
    (folder / "a").write_text("2")
    assert revision_of_path(folder) != before


def test_hf_author_listing_pins_each_repo_to_the_listed_commit(hub: Path) -> None:
    from nar_plugin.bulk import hf_author_sources

    bert_sha = (hub / "models--org--tiny-bert" / "refs" / "main").read_text()
    gpt_sha = (hub / "models--org--tiny-gpt2" / "refs" / "main").read_text()
    calls: list[dict[str, Any]] = []

    class Api:  # plays HfApi.list_models (the Hub is not reachable here)
        def list_models(self, **kw: Any) -> list[Any]:
            calls.append(kw)
            return [SimpleNamespace(id="org/tiny-gpt2", sha=gpt_sha), SimpleNamespace(id="org/tiny-bert", sha=bert_sha)]

    sources = hf_author_sources("org", api=Api())
    assert calls == [{"author": "org", "expand": ["sha"], "token": None}]
    assert [(s.ref, known_revision(s)) for s in sources] == [("org/tiny-bert", bert_sha), ("org/tiny-gpt2", gpt_sha)]
    # the listed repos index from the (offline) cache; a second run skips them without fetching
    opts = BulkOptions(engine="local", hf_cache_dir=hub, progress=False)
    first = bulk_index(sources, opts)
    assert sorted(first.indexed) == ["hf:org/tiny-bert", "hf:org/tiny-gpt2"] and first.ok
    second = bulk_index(sources, BulkOptions(engine="local", resume=True, progress=False))  # no cache: not read
    assert sorted(second.skipped) == ["hf:org/tiny-bert", "hf:org/tiny-gpt2"] and not second.indexed


# ------------------------------------------------------------------ the serial engine

def test_local_engine_entries_and_failures(hub: Path, onnx_file: Path, tmp_path: Path) -> None:
    from nar_plugin.extract import extract_graph
    from nar_plugin.model.inference import embed

    sources = [Source("timm", "resnet18"), Source("file", str(onnx_file)), Source("hf", "org/tiny-bert"),
               Source("hf", "org/not-cached"), Source("file", str(tmp_path / "gone.onnx")), Source("timm", "resnet18")]
    failures = tmp_path / "failures.jsonl"
    rep = bulk_index(sources, BulkOptions(engine="local", index=tmp_path / "idx", hf_cache_dir=hub,
                                          failures_path=failures, progress=False, batch_size=2))
    assert rep.total == 5  # the repeat is dropped
    sha = (hub / "models--org--tiny-bert" / "refs" / "main").read_text()
    keys = {"timm:resnet18", f"file:{onnx_file}", f"hf:org/tiny-bert@{sha}"}
    got = _entries(tmp_path / "idx")
    assert set(got) == keys and rep.keys_written == 3
    assert [(f.source, f.error) for f in rep.failed] == [(f"file:{tmp_path / 'gone.onnx'}", "FileNotFoundError"),
                                                         ("hf:org/not-cached", "KeyNotFoundError")]
    assert sorted(json.loads(line)["source"] for line in failures.read_text().splitlines()) == [
        f.source for f in rep.failed]
    e = got["timm:resnet18"]
    assert e.graph_hash == extract_graph("timm:resnet18").graph_hash
    assert np.allclose(e.vector, embed("timm:resnet18"), atol=1e-5)
    assert e.metadata["bulk"] == {"sources": {"timm:resnet18": known_revision(Source("timm", "resnet18"))}}
    assert e.metadata["description"]["num_nodes"] > 10 and e.metadata["name"] == "resnet18"
    hf = got[f"hf:org/tiny-bert@{sha}"]
    assert hf.metadata["revision"] == sha and hf.metadata["model_type"] == "bert" and hf.source_kind == "hf"
    assert got[f"file:{onnx_file}"].metadata["bulk"]["sources"] == {f"file:{onnx_file}": revision_of_path(onnx_file)}


def test_resume_skips_same_revision_and_redoes_changed_files(onnx_file: Path, tmp_path: Path) -> None:
    path = _onnx(tmp_path / "mutable.onnx", width=8)
    sources = [Source("timm", "resnet18"), Source("timm", "lcnet_050"), Source("file", str(path))]
    opts = BulkOptions(engine="local", index=tmp_path / "idx", progress=False)
    assert len(bulk_index(sources, opts).indexed) == 3
    before = _entries(tmp_path / "idx")
    again = bulk_index(sources, BulkOptions(engine="local", index=tmp_path / "idx", progress=False, resume=True))
    assert sorted(again.skipped) == sorted(s.sid for s in sources) and not again.indexed
    _onnx(path, width=16)  # new content at the same path: a new revision
    third = bulk_index(sources, BulkOptions(engine="local", index=tmp_path / "idx", progress=False, resume=True))
    assert third.indexed == [f"file:{path}"] and len(third.skipped) == 2
    after = _entries(tmp_path / "idx")
    assert after["timm:resnet18"].updated_at == before["timm:resnet18"].updated_at  # not rewritten
    assert after[f"file:{path}"].graph_hash != before[f"file:{path}"].graph_hash
    assert indexed_revisions(EmbeddingIndex(tmp_path / "idx", read_only=True))[f"file:{path}"] == revision_of_path(path)


def test_embed_stage_on_another_device_gives_the_same_vectors() -> None:
    """The GPU actor's wrapper (forward on the device, the rest as embed_many), run with
    torch.device("cpu") so that the wrapper itself runs here (no GPU in CI)."""
    from nar_plugin.bulk.stages import embed_outcomes, extract_source, on_device
    from nar_plugin.model.inference import embed, load_encoder

    enc = load_encoder()
    wrapped = on_device(enc, torch.device("cpu"))
    assert wrapped is not enc and wrapped.model.config is enc.model.config
    outs = [extract_source(Source("timm", n)) for n in ("resnet18", "vit_tiny_patch16_224")]
    embed_outcomes(outs, wrapped, "cpu")
    for o, n in zip(outs, ("resnet18", "vit_tiny_patch16_224")):
        assert o.status == "ok" and o.graph is None
        np.testing.assert_allclose(o.vector, embed(f"timm:{n}"), atol=1e-6)


def test_local_engine_is_serial() -> None:
    with pytest.raises(ValueError, match="serial"):
        bulk_index([Source("timm", "resnet18")], BulkOptions(engine="local", workers=2))


def test_engine_choice_follows_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.bulk import choose_engine

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert choose_engine("auto") == "local"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert choose_engine(None) == "ray" and choose_engine("local") == "local"
    with pytest.raises(ValueError):
        choose_engine("spark")


def test_no_ray_import_outside_the_ray_path() -> None:
    code = ("import sys, nar_plugin, nar_plugin.bulk, nar_plugin.cli.main; from nar_plugin.bulk import run, "
            "sources, stages, writer; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ Ray vs serial

def test_ray_engine_writes_what_the_serial_engine_writes(hub: Path, onnx_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    sources = ([Source("timm", n) for n in TIMM] + [Source("file", str(onnx_file)), Source("hf", "org/tiny-bert"),
               Source("hf", "org/tiny-gpt2"), Source("hf", "org/not-cached")])
    assert len(sources) == 20
    serial = bulk_index(sources, BulkOptions(engine="local", index=tmp_path / "serial", hf_cache_dir=hub,
                                             progress=False, batch_size=8))
    ray_rep = bulk_index(sources, BulkOptions(engine="ray", workers=2, index=tmp_path / "ray", hf_cache_dir=hub,
                                              progress=False, batch_size=8, ray_init={"num_cpus": 3}))
    assert ray_rep.engine == "ray" and ray_rep.engine_info["workers"] == 2
    assert len(ray_rep.workers) == 2  # two extraction processes, neither of them this one
    assert all(w.rsplit(":", 1)[1] != str(os.getpid()) for w in ray_rep.workers)
    assert [f.source for f in ray_rep.failed] == [f.source for f in serial.failed] == ["hf:org/not-cached"]
    a, b = _entries(tmp_path / "serial"), _entries(tmp_path / "ray")
    assert set(a) == set(b) and len(a) == 19
    for key, e in a.items():
        f = b[key]
        assert (e.graph_hash, e.uri, e.source_kind, e.encoder_version) == (f.graph_hash, f.uri, f.source_kind,
                                                                          f.encoder_version), key
        assert e.metadata == f.metadata, key
        np.testing.assert_allclose(e.vector, f.vector, atol=1e-5, err_msg=key)


def test_ray_plan_puts_embed_actors_on_gpus_only_when_there_is_one_each() -> None:
    from nar_plugin.bulk.ray_engine import _plan

    def cluster(cpus: int, gpus: int = 0) -> Any:
        return SimpleNamespace(cluster_resources=lambda: {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})})

    assert _plan(cluster(3), 2, "auto") == (2, "cpu", 0.0, 1)
    assert _plan(cluster(17), None, "auto") == (16, "cpu", 0.0, 1)  # CPUs less one
    assert _plan(cluster(9, gpus=1), None, "auto") == (8, "cuda", 1.0, 1)
    assert _plan(cluster(9, gpus=1), None, "cpu") == (8, "cpu", 0.0, 1)
    assert _plan(cluster(1025, gpus=4), None, "auto") == (1024, "cpu", 0.0, 32)  # 4 GPUs < 32 actors
    assert _plan(cluster(1025, gpus=32), None, "auto") == (1024, "cuda", 1.0, 32)


# ------------------------------------------------------------------ kill and resume

def _count(index_dir: Path) -> int:
    if not (index_dir / "meta.sqlite").exists():
        return 0
    idx = EmbeddingIndex(index_dir, read_only=True, verify=False)
    try:
        return len(idx)
    finally:
        idx.close()


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_killed_run_resumes_without_duplicates_or_losses(engine: str, tmp_path: Path) -> None:
    from nar_plugin.cli.main import main

    if engine == "ray":
        pytest.importorskip("ray.data")
    names = TIMM[:12]
    specs = tmp_path / "specs.txt"
    specs.write_text("# a registry export\n" + "\n".join(names) + "\n")
    index_dir = tmp_path / "idx"
    env = {**os.environ, "NAR_HOME": str(tmp_path / "home")}
    run = ["index", "--index", str(index_dir), "bulk", "--from-file", str(specs), "--engine", engine, "--json"]
    run += ["--workers", "2"] if engine == "ray" else []
    proc = subprocess.Popen([sys.executable, "-m", "nar_plugin.cli", *run, "--batch-size", "1"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while _count(index_dir) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-way: no clean-up runs
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    written = _entries(index_dir)
    assert 3 <= len(written) < len(names)
    assert main([*run, "--resume", "--batch-size", "4"]) == 0
    after = _entries(index_dir)
    assert sorted(after) == sorted(f"timm:{n}" for n in names)  # no losses, one entry per source
    for key, e in written.items():  # what the killed run wrote was skipped, not redone
        assert (after[key].id, after[key].updated_at) == (e.id, e.updated_at)
    assert len({e.id for e in after.values()}) == len(names)


def test_cli_bulk_reports_bad_lines_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.cli.main import main

    specs = tmp_path / "s.txt"
    specs.write_text("resnet18\nnot_a_model_name\n")
    rc = main(["index", "--index", str(tmp_path / "idx"), "bulk", "--from-file", str(specs), "--engine", "local",
               "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["indexed"] == 1 and [f["source"] for f in out["failed"]] == ["not_a_model_name"]
    lines = (tmp_path / "idx" / "bulk-failures.jsonl").read_text().splitlines()
    assert [json.loads(x)["source"] for x in lines] == ["not_a_model_name"]
    assert main(["index", "bulk", "--engine", "local"]) == 2  # nothing to index: invalid input


# ------------------------------------------------------------------ MLflow

@pytest.mark.integration
def test_mlflow_registry_is_indexed_like_sync(tracking: str, tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    import onnx

    from nar_plugin.bulk import mlflow_sources
    from nar_plugin.integrations.mlflow.keys import model_key, server_id, version_key

    from nar_plugin.integrations.mlflow.hooks import autolog, is_autologging

    was = is_autologging()
    autolog(disable=True, silent=True)  # bulk, not the log_model hook, is what indexes here
    try:
        name = f"bulk-{os.getpid()}-{time.time_ns() % 10**6}"
        with mlflow.start_run():
            info = mlflow.onnx.log_model(onnx.load(str(_onnx(tmp_path / "a.onnx"))), name="m",
                                         pip_requirements=["onnx"], registered_model_name=name)
            other = mlflow.onnx.log_model(onnx.load(str(_onnx(tmp_path / "b.onnx", 16))), name="n",
                                          pip_requirements=["onnx"])
    finally:
        if was:
            autolog(silent=True)
    sources = [s for s in mlflow_sources(tracking) if s.ref in (f"models:/{info.model_id}", f"models:/{other.model_id}")]
    assert len(sources) == 2
    rep = bulk_index(sources + [parse_spec(f"models:/{name}/1", tracking)],
                     BulkOptions(engine="local", index=tmp_path / "idx", progress=False))
    assert rep.ok, rep.failed
    got = _entries(tmp_path / "idx")
    vkey = version_key(name, "1", server_id(tracking))
    assert set(got) == {model_key(info.model_id), model_key(other.model_id), vkey}
    assert np.array_equal(got[vkey].vector, got[model_key(info.model_id)].vector)
    assert got[vkey].metadata["model_id"] == info.model_id and got[vkey].metadata["server"] == server_id(tracking)
    assert got[model_key(info.model_id)].metadata["uri"] == f"models:/{info.model_id}"
    # both sources wrote the version's entry: each keeps its own resume record
    assert set(got[vkey].metadata["bulk"]["sources"]) == {f"models:/{info.model_id}", f"models:/{name}/1"}
    again = bulk_index(sources, BulkOptions(engine="local", index=tmp_path / "idx", progress=False, resume=True))
    assert sorted(again.skipped) == sorted(s.sid for s in sources)  # known revisions: nothing fetched
