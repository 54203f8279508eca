"""Tracking servers, keys and query resolution (issue 14): bounded checks of unreachable servers,
no tracking store created by a query, entries scoped by server, ``models:/`` aliases, not-found
exit codes, ``k`` validation and content-derived default keys.

The MLflow tests run against the real ``mlflow server`` of ``conftest.py`` (and, as a second
server, a SQLite store of their own). LoggedModels are created with their ``nar.*`` tags
directly, so no test here pays for a ``log_model``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nar_plugin.cli.main import main
from nar_plugin.errors import (
    InvalidQueryError,
    KeyExistsError,
    KeyNotFoundError,
    TrackingUnavailableError,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
#: "within ~10 s" of the issue, with room for a loaded test machine
LIMIT_S = 15.0


def _unit(seed: int, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def no_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither MLFLOW_TRACKING_URI nor an earlier test's mlflow.set_tracking_uri()."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ------------------------------------------------------------------ default keys
def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def test_in_memory_models_get_content_derived_keys(tmp_path: Path) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.search.api import index_model

    idx = EmbeddingIndex(tmp_path / "idx")
    x = (torch.randn(2, 8),)
    a, b = _mlp(16), nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    key_a = index_model(a, index=idx, example_inputs=x)
    key_b = index_model(b, index=idx, example_inputs=x)
    assert key_a.startswith("module:Sequential@") and key_b.startswith("module:Sequential@")
    assert key_a != key_b and len(idx) == 2  # a second, different Sequential no longer replaces the first
    assert index_model(a, index=idx, example_inputs=x) == key_a and len(idx) == 2  # idempotent
    assert index_model(_mlp(16), index=idx, example_inputs=x) == key_a  # same architecture, other weights
    with pytest.raises(KeyExistsError, match="already holds another architecture") as info:
        index_model(b, key=key_a, index=idx, example_inputs=x)
    assert isinstance(info.value, ValueError) and "replace=True" in str(info.value)
    assert idx.get(key_a).graph_hash != idx.get(key_b).graph_hash  # kept
    assert index_model(b, key=key_a, index=idx, example_inputs=x, replace=True) == key_a
    assert idx.get(key_a).graph_hash == idx.get(key_b).graph_hash


def test_default_key_of_names_and_files(tmp_path: Path) -> None:
    from nar_plugin.search.api import default_key

    assert default_key("timm:resnet18") == "timm:resnet18"  # was timm:timm:resnet18
    assert default_key("resnet18") == "timm:resnet18"
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    assert default_key(str(f)) == default_key(f"onnx:{f}") == f"file:{f.resolve()}"


def test_cli_index_add_keys_and_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idx = str(tmp_path / "idx")
    assert main(["index", "--index", idx, "add", "timm:resnet18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["timm:resnet18"]
    assert main(["index", "--index", idx, "add", "resnet18", "--json"]) == 0  # the same entry again
    assert json.loads(capsys.readouterr().out) == ["timm:resnet18"]
    assert main(["index", "--index", idx, "add", "resnet34", "--key", "timm:resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nar: key exists: key 'timm:resnet18' already holds another architecture") and "--replace" in err
    assert main(["index", "--index", idx, "add", "resnet34", "--key", "timm:resnet18", "--replace"]) == 0
    capsys.readouterr()
    assert main(["index", "--index", idx, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1


# ------------------------------------------------------------------ unreachable servers
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["refused", "silent"])
def dead_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A tracking URI nobody answers: a closed port, or a socket that accepts and never replies."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{_closed_port()}"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # connections complete in the backlog; nothing ever reads or answers them
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_server_is_reported_quickly(dead_server: str, no_tracking_uri: None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import find_similar

    # MLflow's own retry settings are left at their defaults (7 retries with backoff: minutes)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead_server)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as info:
        find_similar(RUN_ID)
    assert time.monotonic() - t0 <= LIMIT_S
    assert dead_server in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)
    assert isinstance(info.value, ConnectionError)

    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="given with tracking_uri"):
        sync_from_tracking(dead_server)
    assert time.monotonic() - t0 <= LIMIT_S

    for argv in (["similar", RUN_ID], ["index", "sync", "--tracking-uri", dead_server]):
        t0 = time.monotonic()
        assert main(argv) == 1
        assert time.monotonic() - t0 <= LIMIT_S
        err = capsys.readouterr().err
        assert f"nar: tracking server unavailable: cannot reach the MLflow tracking server at {dead_server}" in err
        assert "MLFLOW_TRACKING_URI" in err


def test_unreachable_server_from_a_fresh_cli_process(dead_server: str, tmp_path: Path) -> None:
    """What a user waits for, imports included: the server is checked before torch is loaded."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": dead_server, "NAR_HOME": str(tmp_path / "home")}
    for argv in (["similar", RUN_ID], ["index", "sync"]):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "nar_plugin.cli", *argv], env=env, capture_output=True, check=False,
                           text=True, timeout=120)
        assert time.monotonic() - t0 <= LIMIT_S, r.stderr
        assert r.returncode == 1 and dead_server in r.stderr and "MLFLOW_TRACKING_URI" in r.stderr


def test_a_query_creates_no_tracking_store(tmp_path: Path, no_tracking_uri: None, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.search.api import find_similar

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingUnavailableError) as info:
        find_similar(RUN_ID)
    assert "mlflow.db does not exist" in str(info.value) and "MLFLOW_TRACKING_URI is not set" in str(info.value)
    assert main(["similar", RUN_ID]) == 1
    assert main(["dedup"]) == 1
    assert main(["index", "sync"]) == 1
    err = capsys.readouterr().err
    assert err.count("a query does not create one") == 3
    assert main(["dedup", "--no-sync"]) == 0  # the local index only: fine, and still no store
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/


def test_every_mlflow_command_names_its_tracking_uri(tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dedup", "--no-sync", "--json"]) == 0
    out = capsys.readouterr()
    assert isinstance(json.loads(out.out), list)
    assert f"nar: MLflow tracking server {tracking} (from MLFLOW_TRACKING_URI)" in out.err
    assert main(["index", "sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tracking_uri"] == tracking
    assert main(["similar", RUN_ID, "--tracking-uri", tracking]) == 3
    err = capsys.readouterr().err
    assert f"nar: MLflow tracking server {tracking} (given with tracking_uri / --tracking-uri)" in err


# ------------------------------------------------------------------ resolution and not-found
def _tagged_model(client, experiment_id: str, vector: np.ndarray, graph_hash: str) -> str:
    """A LoggedModel carrying nar tags, as the log_model hook leaves it (no artifacts needed)."""
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import encoder_version

    lm = client.create_logged_model(experiment_id, name="m")
    client.set_logged_model_tags(lm.model_id, {"nar.embedding": encode_embedding(vector), "nar.encoder": encoder_version(),
                                               "nar.graph_hash": graph_hash, "nar.status": "ok"})
    return lm.model_id


def _experiment(client) -> str:
    return client.create_experiment(f"t-{uuid.uuid4().hex[:8]}")


def test_alias_latest_and_not_found(tracking: str, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from nar_plugin.search.api import find_similar

    monkeypatch.setenv("NAR_DEDUP", "off")
    client = mlflow.MlflowClient()
    exp = _experiment(client)
    base = _unit(1)
    first = _tagged_model(client, exp, base, "h-first")
    second = _tagged_model(client, exp, (base + 0.3 * _unit(2)) / np.linalg.norm(base + 0.3 * _unit(2)), "h-second")
    name = f"alias-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    v1 = client.create_model_version(name, f"models:/{first}", model_id=first)
    client.create_model_version(name, f"models:/{second}", model_id=second)
    client.set_registered_model_alias(name, "champion", v1.version)

    def keys(query: str) -> set[str]:
        return {m.key for m in find_similar(query, k=50)}

    assert f"mlflow:model:{second}" in keys(f"models:/{name}@champion")  # resolved to the first
    assert f"mlflow:model:{first}" not in keys(f"models:/{name}@champion")
    latest = keys(f"models:/{name}/latest")  # resolved to the second (the highest version)
    assert f"mlflow:model:{first}" in latest and f"mlflow:model:{second}" not in latest
    assert keys(f"models:/{name}/2") == latest

    for query in (f"models:/{name}/99", f"models:/{name}@nobody", f"models:/nope-{name}/latest",
                  f"models:/nope-{name}/1", "m-" + "0" * 32, RUN_ID):
        with pytest.raises(KeyNotFoundError) as info:
            find_similar(query)
        assert query in str(info.value)
        assert main(["similar", query]) == 3
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith("nar: not found: ") and query in err[-1]


def test_k_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.search.api import find_similar

    idx = EmbeddingIndex(tmp_path / "idx")
    for i in range(3):
        idx.add(f"file:m{i}", _unit(i))
    assert len(find_similar("file:m0", k=np.int64(2), index=idx)) == 2
    for bad in (0, -1, 2.5, "3", True, None):
        with pytest.raises(InvalidQueryError, match="k must be an int >= 1") as info:
            find_similar("file:m0", k=bad, index=idx)
        assert repr(bad) in str(info.value) and isinstance(info.value, ValueError)
    for bad in ("0", "-1", "2.5", "x"):
        assert main(["similar", "file:m0", "-k", bad, "--index", str(tmp_path / "idx")]) == 2
        assert "Invalid value for '-k'" in capsys.readouterr().err


# ------------------------------------------------------------------ two servers
@contextlib.contextmanager
def _current(uri: str) -> Iterator[None]:
    import mlflow

    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old)


def _register(client, name: str, model_id: str):
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(name)
    return client.create_model_version(name, f"models:/{model_id}", model_id=model_id)


def test_two_servers_versions_do_not_mix(tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from nar_plugin.integrations.mlflow.keys import server_id, version_key
    from nar_plugin.integrations.mlflow.registry import dedup_report
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import find_similar, open_index

    monkeypatch.setenv("NAR_DEDUP", "warn")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    a, b = mlflow.MlflowClient(tracking), mlflow.MlflowClient(other)
    name = f"shared-{uuid.uuid4().hex[:6]}"
    vec = _unit(7)
    with _current(other):  # a SQLite registry looks model ids up on MLflow's current server
        on_b = _tagged_model(b, _experiment(b), vec, "h-same")
        vb = _register(b, name, on_b)
    exp_a = _experiment(a)
    on_a = _tagged_model(a, exp_a, vec, "h-same")  # the same architecture, on the other server
    va = _register(a, name, on_a)
    # the identical version of the other server is no duplicate of this one
    assert "nar.duplicate_of" not in a.get_model_version(name, va.version).tags
    assert str(va.version) == str(vb.version) == "1"
    sync_from_tracking(other)
    sync_from_tracking(tracking)
    idx = open_index()
    key_a, key_b = version_key(name, "1", server_id(tracking)), version_key(name, "1", server_id(other))
    assert key_a != key_b and key_a in idx and key_b in idx  # neither replaced the other

    again = _tagged_model(a, exp_a, vec, "h-same")
    _register(a, f"{name}-copy", again)  # a real duplicate, on server A
    members = [c.members for c in dedup_report(tracking_uri=tracking, sync=False)]
    assert [f"{name}-copy/1", f"{name}/1"] in members
    assert all(len(m) == len(set(m)) for m in members)  # B's shared/1 is not listed next to A's
    only_b = [c.members for c in dedup_report(tracking_uri=other, sync=False)]
    assert all(f"{name}-copy/1" not in m for m in only_b)

    found = {m.key for m in find_similar(again, k=50)}  # an m- id of server A
    assert f"mlflow:model:{on_a}" in found and f"mlflow:model:{on_b}" not in found


def test_sync_replaces_unscoped_version_keys_of_its_server(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from nar_plugin.integrations.mlflow.keys import server_id, version_key
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.search.api import open_index

    monkeypatch.setenv("NAR_DEDUP", "tag")  # the hook copies the nar tags to the version
    client = mlflow.MlflowClient()
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    mid = _tagged_model(client, _experiment(client), _unit(3), "h-legacy")
    _register(client, name, mid)
    idx = open_index()
    # as releases before server scoping wrote them: one of this server, one of another
    idx.add(f"mlflow:version:{name}/1", _unit(3), metadata={"model_id": mid, "tracking_uri": tracking})
    idx.add(f"mlflow:version:{name}/2", _unit(4), metadata={"model_id": mid, "tracking_uri": "http://elsewhere:5000"})
    sync_from_tracking(tracking, full=True)
    assert f"mlflow:version:{name}/1" not in idx and version_key(name, "1", server_id(tracking)) in idx
    assert f"mlflow:version:{name}/2" in idx  # another server's: still readable, out of this server's scope


def test_incremental_sync_sees_tags_written_after_creation(tracking: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking
    from nar_plugin.model.inference import encoder_version

    monkeypatch.setenv("NAR_DEDUP", "off")
    client = mlflow.MlflowClient()
    name = f"late-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    mv = client.create_model_version(name, "s3://bucket/not-a-logged-model")
    fresh = EmbeddingIndex(tmp_path / "fresh")
    sync_from_tracking(tracking, index=fresh)
    # tagged after the sync: setting a tag does not move the version's last_updated_timestamp
    for k, v in {"nar.embedding": encode_embedding(_unit(5)), "nar.encoder": encoder_version()}.items():
        client.set_model_version_tag(name, mv.version, k, v)
    second = sync_from_tracking(tracking, index=fresh)
    assert second.incremental and second.versions_added == 1
    third = sync_from_tracking(tracking, index=fresh, max_age=60)
    assert third.throttled and third.versions_added == 0
