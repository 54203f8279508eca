"""MLflow integration against a real `mlflow server` (SQLite backend) started by the tests.

No test body calls nar-plugin to index: the entry point that `import mlflow` loads does it.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")


def _tags(d: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in d.items() if k.startswith("nar.")}


def _log_torch(model: nn.Module, x: torch.Tensor, name: str = "model", **kw):
    return mlflow.pytorch.log_model(model.eval(), name=name, input_example=x.numpy(),
                                    pip_requirements=["torch"], **kw)


def _resnet(name: str) -> nn.Module:
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return timm.create_model(name)


X = torch.randn(1, 3, 64, 64)


def CNN() -> nn.Module:  # noqa: N802 - a model factory
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_entry_point_is_active() -> None:
    from nar_plugin.integrations.mlflow.hooks import is_autologging

    assert is_autologging()


def test_pytorch_pt2_log_model_is_tagged_and_indexed(tracking: str) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import embed, encoder_version

    model = _resnet("resnet18")
    with mlflow.start_run() as run:
        info = _log_torch(model, X)
    client = mlflow.MlflowClient()
    lm_tags = _tags(client.get_logged_model(info.model_id).tags)
    run_tags = _tags(client.get_run(run.info.run_id).data.tags)
    assert lm_tags["nar.status"] == "ok"
    assert lm_tags["nar.encoder"] == encoder_version()
    assert run_tags == {k: v for k, v in lm_tags.items() if k != "nar.description"}  # run tags are capped
    assert json.loads(lm_tags["nar.description"])["ops"]["conv"] == 20
    assert len(lm_tags["nar.embedding"]) < 1000
    vec = decode_embedding(lm_tags["nar.embedding"])
    assert float(vec @ embed(model, (X,))) > 0.999
    entry = EmbeddingIndex().get(f"mlflow:model:{info.model_id}")
    assert entry is not None and entry.metadata["run_id"] == run.info.run_id


def test_onnx_export_of_a_logged_model_is_identical(tracking: str, tmp_path: Path) -> None:
    """The README's headline: `check_duplicate("model.onnx")` on the normal ONNX export (eval mode,
    BatchNorm folded by the exporter) of a model logged to MLflow finds that logged model."""
    import nar_plugin

    model = _resnet("resnet18").eval()
    with mlflow.start_run():
        info = _log_torch(model, X)
    path = tmp_path / "resnet18.onnx"
    torch.onnx.export(model, (X,), str(path), dynamo=False)  # the legacy default: constant folding on
    report = nar_plugin.check_duplicate(str(path))
    assert report.is_duplicate and report.relation == "same-architecture", report
    assert report.best is not None and report.best.key.endswith(info.model_id), report.best


def test_onnx_log_model_is_tagged(tracking: str, tmp_path: Path) -> None:
    import onnx

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), str(tmp_path / "m.onnx"), dynamo=True, external_data=False)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(onnx.load(str(tmp_path / "m.onnx")), name="onnx_model",
                                     pip_requirements=["onnx"])
    tags = _tags(mlflow.MlflowClient().get_logged_model(info.model_id).tags)
    assert tags["nar.status"] == "ok" and int(tags["nar.num_nodes"]) >= 6


def test_transformers_log_model_is_tagged(tracking: str, tmp_path: Path) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    model = tf.BertModel(cfg).eval()
    with mlflow.start_run():
        info = mlflow.transformers.log_model({"model": model, "tokenizer": fast}, name="bert",
                                             task="feature-extraction", pip_requirements=["transformers"])
    tags = _tags(mlflow.MlflowClient().get_logged_model(info.model_id).tags)
    assert tags["nar.status"] == "ok"
    from nar_plugin.extract import extract_graph

    assert tags["nar.graph_hash"] == extract_graph(cfg).graph_hash


def test_find_similar_by_run_id_ranks_same_family_first(tracking: str) -> None:
    import nar_plugin

    runs = {}
    for name in ("resnet18", "resnet34", "vit_tiny_patch16_224", "mobilenetv3_small_100"):
        x = torch.randn(1, 3, 224, 224) if name.startswith("vit") else X
        with mlflow.start_run() as run:
            _log_torch(_resnet(name), x)
        runs[name] = run.info.run_id
    exp_id = mlflow.get_run(runs["resnet18"]).info.experiment_id

    def this_experiment(entry) -> bool:  # the server is shared by the whole test session
        return entry.metadata.get("experiment_id") == exp_id

    matches = nar_plugin.find_similar(runs["resnet18"], k=3, where=this_experiment)
    assert matches, "no matches"
    assert matches[0].metadata["run_id"] == runs["resnet34"]
    assert all(m.metadata["run_id"] != runs["resnet18"] for m in matches)
    assert matches[0].metadata["experiment_id"]
    assert matches[0].relation in ("related", "near-duplicate")
    # model ids and models:/ URIs resolve the same way
    model_id = matches[0].metadata["model_id"]
    again = nar_plugin.find_similar(f"models:/{model_id}", k=1, where=this_experiment)
    assert again[0].metadata["run_id"] in runs.values()


def test_find_similar_by_run_id_in_a_fresh_process(tracking: str) -> None:
    """The MLflow resolver registers itself on first use: nothing imports the integration first."""
    import subprocess
    import sys

    with mlflow.start_run() as run:
        info = _log_torch(CNN(), X)
    code = ("import json, sys, nar_plugin\n"
            "assert 'nar_plugin.integrations.mlflow.resolve' not in sys.modules\n"
            "matches = nar_plugin.find_similar(sys.argv[1], k=3)\n"
            "print(json.dumps([m.metadata.get('model_id') for m in matches]))\n")
    out = subprocess.run([sys.executable, "-c", code, run.info.run_id], capture_output=True, text=True, check=False,
                         timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found and all(found) and info.model_id not in found


def test_one_log_model_embeds_and_describes_once(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.model import inference
    from nar_plugin.search import api, results

    calls = {"embed_graph": 0, "describe_graph": 0}

    def counting(name, *modules):
        real = getattr(modules[0], name)

        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)

        for mod in modules:  # every binding of the function the hook's code path can reach
            monkeypatch.setattr(mod, name, wrapper, raising=False)

    counting("embed_graph", inference, api)
    counting("describe_graph", results, api)
    with mlflow.start_run():
        info = _log_torch(SMALL, XS)
    assert calls == {"embed_graph": 1, "describe_graph": 1}
    from nar_plugin.index import EmbeddingIndex

    entry = EmbeddingIndex().get(f"mlflow:model:{info.model_id}")
    tags = mlflow.MlflowClient().get_logged_model(info.model_id).tags
    from nar_plugin.index.codec import decode_embedding

    assert entry is not None and float(entry.vector @ decode_embedding(tags["nar.embedding"])) > 0.999
    assert entry.metadata["description"]["num_motifs"] == int(tags["nar.num_motifs"])


def _register(model_name: str, run_model_id: str):
    return mlflow.register_model(f"models:/{run_model_id}", model_name)


@pytest.mark.parametrize("policy", ["warn", "tag", "block"])
def test_registry_dedup_policies(tracking: str, policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same architecture, other weights: a retrain under the same name is normal; under another
    name it is a possible duplicate (tagged; a warning under warn and block, never refused: the
    weights were compared and differ)."""
    from nar_plugin.errors import DuplicateModelWarning

    name, other = f"reg-{policy}-{uuid.uuid4().hex[:6]}", f"oth-{policy}-{uuid.uuid4().hex[:6]}"
    with mlflow.start_run():
        first = _log_torch(CNN(), X)
    with mlflow.start_run():
        second = _log_torch(CNN(), X)
    with mlflow.start_run():
        third = _log_torch(CNN(), X)
    monkeypatch.setenv("NAR_DEDUP", "warn")
    v1 = _register(name, first.model_id)
    monkeypatch.setenv("NAR_DEDUP", policy)
    client = mlflow.MlflowClient()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v2 = _register(name, second.model_id)  # a retrain: a new version of the same model
    assert not [w for w in caught if issubclass(w.category, DuplicateModelWarning)]
    tags = client.get_model_version(name, v2.version).tags
    assert tags["nar.relation_to_previous"] == "same-architecture" and "nar.duplicate_of" not in tags
    assert tags["nar.status"] == "ok"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vo = _register(other, third.model_id)  # the same architecture under another name
    dup_warnings = [w for w in caught if issubclass(w.category, DuplicateModelWarning)]
    assert len(dup_warnings) == (0 if policy == "tag" else 1)
    tags = client.get_model_version(other, vo.version).tags
    assert tags["nar.possible_duplicate_of"] in (f"{name}/{v1.version}", f"{name}/{v2.version}")
    assert tags["nar.relation"] == "same-architecture" and "nar.duplicate_of" not in tags


def test_dedup_report_clusters_the_registry(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.integrations.mlflow.registry import dedup_report

    monkeypatch.setenv("NAR_DEDUP", "tag")
    name = f"rep-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        with mlflow.start_run():
            info = _log_torch(CNN(), X)
        _register(name, info.model_id)
    clusters = dedup_report(tracking_uri=tracking)
    mine = [c for c in clusters if any(m.startswith(name + "/") for m in c.members)]
    assert mine and mine[0].relation == "same-architecture" and {f"{name}/1", f"{name}/2"} <= set(mine[0].members)


# ------------------------------------------------------------------ fault injection
@pytest.fixture
def no_reraise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_TESTING", "false")


def _assert_logged(info, run_id: str) -> dict[str, str]:
    from mlflow.models.model import ModelInfo

    assert isinstance(info, ModelInfo) and info.model_id
    client = mlflow.MlflowClient()
    assert client.list_logged_model_artifacts(info.model_id) if hasattr(client, "list_logged_model_artifacts") else True
    return _tags(client.get_logged_model(info.model_id).tags)


SMALL = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
XS = torch.randn(2, 4)


def _boom(*a, **k):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("target", ["nar_plugin.extract.mlflow_model.graph_from_mlflow_dir",
                                    "nar_plugin.model.inference.embed_graph"])
def test_fault_extractor_or_encoder_raises(tracking: str, no_reraise: None, monkeypatch: pytest.MonkeyPatch,
                                           target: str) -> None:
    mod, fn = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(mod, fromlist=[fn]), fn, _boom)
    with mlflow.start_run() as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = _log_torch(SMALL, XS)
    from nar_plugin.errors import NarMlflowWarning

    tags = _assert_logged(info, run.info.run_id)
    assert tags["nar.status"] == "error:RuntimeError"
    assert sum("nar-plugin" in str(w.message) for w in caught) == 1
    assert [w.category for w in caught if "nar-plugin" in str(w.message)] == [NarMlflowWarning]


def test_fault_reraised_under_nar_testing(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.model import inference

    monkeypatch.setattr(inference, "embed_graph", _boom)  # NAR_TESTING=true from conftest
    with mlflow.start_run(), pytest.raises(RuntimeError, match="injected failure"):
        _log_torch(SMALL, XS)


def test_users_own_mlflow_error_propagates_unchanged(tracking: str, no_reraise: None, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MlflowException):
            mlflow.MlflowClient().log_model_artifacts("m-" + "0" * 32, str(tmp_path))
    assert not [w for w in caught if "nar-plugin" in str(w.message)]  # the hook never ran


def test_fault_index_locked(tracking: str, no_reraise: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import filelock

    from nar_plugin.index import EmbeddingIndex

    monkeypatch.setenv("NAR_LOCK_TIMEOUT", "0.2")
    idx = EmbeddingIndex()
    with filelock.FileLock(str(idx.path / ".lock")), mlflow.start_run() as run:
        info = _log_torch(SMALL, XS)
    tags = _assert_logged(info, run.info.run_id)
    assert tags["nar.status"] == "ok"  # tags written; the index is repaired by `nar index sync`


def test_fault_index_dir_read_only(tracking: str, no_reraise: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits: make the index path a file instead (not a directory)
        bad = tmp_path / "home"
        bad.write_text("not a directory")
        monkeypatch.setenv("NAR_HOME", str(bad))
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        monkeypatch.setenv("NAR_HOME", str(ro))
    with mlflow.start_run() as run:
        info = _log_torch(SMALL, XS)
    assert _assert_logged(info, run.info.run_id)["nar.status"] == "ok"


def test_fault_pickle_only_model_is_skipped(tracking: str, no_reraise: None) -> None:
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(SMALL, name="m", serialization_format="pickle", pip_requirements=["torch"])
    assert _assert_logged(info, run.info.run_id)["nar.status"] == "skipped:pickle"


def test_fault_huge_graph_is_skipped(tracking: str, no_reraise: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # a real 100k-node graph would take minutes to export on 2 cores; lowering the limit below
    # this model's size exercises the same path
    monkeypatch.setenv("NAR_MAX_NODES", "3")
    with mlflow.start_run() as run:
        info = _log_torch(SMALL, XS)
    assert _assert_logged(info, run.info.run_id)["nar.status"] == "skipped:too-large"


def test_fault_corrupt_artifact(tracking: str, no_reraise: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import nar_plugin.extract.mlflow_model as mm

    real = mm.graph_from_mlflow_dir

    def corrupting(d):
        for p in Path(d).glob("data/*.pt2"):
            p.write_bytes(b"this is not a zip archive")
        return real(d)

    monkeypatch.setattr(mm, "graph_from_mlflow_dir", corrupting)
    with mlflow.start_run() as run:
        info = _log_torch(SMALL, XS)
    assert _assert_logged(info, run.info.run_id)["nar.status"] == "error:CorruptArtifactError"


def test_fault_tracking_unreachable_during_sync(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.integrations.mlflow.sync import (
        TrackingUnavailableError,
        sync_from_tracking,
    )

    # MLflow's client retries with backoff for minutes by default
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TrackingUnavailableError):
        sync_from_tracking("http://127.0.0.1:9")  # nothing listens on the discard port


def test_sync_is_incremental(tracking: str, tmp_path: Path) -> None:
    from nar_plugin.index import EmbeddingIndex
    from nar_plugin.integrations.mlflow.sync import sync_from_tracking

    with mlflow.start_run():
        _log_torch(SMALL, XS)
    fresh = EmbeddingIndex(tmp_path / "fresh")
    first = sync_from_tracking(tracking, index=fresh)
    assert first.models_added >= 1 and not first.incremental
    second = sync_from_tracking(tracking, index=fresh)
    assert second.incremental and second.models_added == 0
    with mlflow.start_run():
        _log_torch(SMALL, XS)
    third = sync_from_tracking(tracking, index=fresh)
    assert third.models_added == 1


def test_autolog_off_leaves_mlflow_untouched(tracking: str) -> None:
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    import nar_plugin.mlflow as nm

    nm.autolog(disable=True)
    try:
        assert not hasattr(TrackingServiceClient.log_model_artifacts, "__nar_wrapped__")
        with mlflow.start_run():
            info = _log_torch(SMALL, XS)
        assert not _tags(mlflow.MlflowClient().get_logged_model(info.model_id).tags)
    finally:
        nm.autolog()
    nm.autolog()  # idempotent
    assert not hasattr(TrackingServiceClient.log_model_artifacts.__nar_wrapped__, "__nar_wrapped__")


# ------------------------------------------------------------------ webhook receiver
def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    return server, t


def test_webhook_receiver_tags_new_version_and_rejects_bad_deliveries(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from fixtures.net import free_port, wait_http
    from mlflow.entities.webhook import WebhookEvent

    from nar_plugin.integrations.mlflow.webhook import make_app, sign

    secret = "s3cret-" + uuid.uuid4().hex
    handled: list[tuple[str, str, str]] = []

    from nar_plugin.integrations.mlflow.webhook import handle_version_created

    def handler(name: str, version: str, source: str):
        handled.append((name, version, source))
        return handle_version_created(name, version, source)

    port = free_port()
    server, thread = _serve(make_app(secret, handler=handler), port)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 20)
        client = mlflow.MlflowClient()
        hook = client.create_webhook(name=f"nar-{uuid.uuid4().hex[:6]}", url=f"http://127.0.0.1:{port}/webhook",
                                     events=[WebhookEvent("model_version", "created")], secret=secret)
        name = f"wh-{uuid.uuid4().hex[:6]}"
        time.sleep(1.5)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1 s
        import nar_plugin.mlflow as nm

        nm.autolog(disable=True)  # the server side alone must tag it
        try:
            with mlflow.start_run():
                info = _log_torch(SMALL, XS)
            mv = mlflow.register_model(f"models:/{info.model_id}", name)
        finally:
            nm.autolog()
        deadline = time.time() + 60
        while time.time() < deadline and "nar.status" not in client.get_model_version(name, mv.version).tags:
            time.sleep(0.5)
        tags = client.get_model_version(name, mv.version).tags
        assert tags.get("nar.status") == "ok", (tags, handled)
        assert handled == [(name, str(mv.version), f"models:/{info.model_id}")]
        client.delete_webhook(hook.webhook_id)

        url = f"http://127.0.0.1:{port}/webhook"
        body = json.dumps({"entity": "model_version", "action": "created",
                           "data": {"name": name, "version": "99", "source": "models:/m-0"}})
        ts = str(int(time.time()))
        did = uuid.uuid4().hex
        good = {"X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                "X-MLflow-Signature": sign(secret, did, ts, body), "Content-Type": "application/json"}
        before = len(handled)
        assert httpx.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 401
        wrong = dict(good, **{"X-MLflow-Signature": sign("other-secret", did, ts, body)})
        assert httpx.post(url, content=body, headers=wrong).status_code == 401
        stale_ts = str(int(time.time()) - 3600)
        stale = dict(good, **{"X-MLflow-Timestamp": stale_ts, "X-MLflow-Signature": sign(secret, did, stale_ts, body)})
        assert httpx.post(url, content=body, headers=stale).status_code == 401
        assert len(handled) == before  # nothing rejected reached the handler
        ignored = json.dumps({"entity": "registered_model", "action": "created", "data": {}})
        d2 = uuid.uuid4().hex
        h2 = {"X-MLflow-Delivery-Id": d2, "X-MLflow-Timestamp": ts, "X-MLflow-Signature": sign(secret, d2, ts, ignored)}
        assert httpx.post(url, content=ignored, headers=h2).status_code == 202
        first = httpx.post(url, content=body, headers=good)
        assert first.status_code == 500 and len(handled) == before + 1  # version 99 does not exist
        retry = httpx.post(url, content=body, headers=good)  # a failed delivery is not "seen": retried
        assert retry.status_code == 500 and len(handled) == before + 2
        assert httpx.post(url, content=ignored, headers=h2).status_code == 409  # a handled one is a replay
    finally:
        server.should_exit = True
        thread.join(10)
