"""Hugging Face Hub integration, with no network.

- a hand-seeded Hub cache (``models--org--name/refs/main`` + ``snapshots/<sha>/...``) under
  ``HF_HUB_OFFLINE=1`` (set by conftest before huggingface_hub is imported);
- ``huggingface_hub.set_client_factory`` with an ``httpx2.MockTransport`` playing the Hub, which
  records every request and every commit it receives.

``huggingface_hub`` reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` when it is first imported
(``constants``), so tests pass ``cache_dir`` / patch ``constants`` instead of the environment.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.util
import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hfh = pytest.importorskip("huggingface_hub")
httpx2 = pytest.importorskip("httpx2")
pytest.importorskip("transformers")
pytest.importorskip("starlette")

from huggingface_hub import HfApi, constants  # noqa: E402

from nar_plugin.integrations import hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_BERT = {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
             "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 64}
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 512, "n_positions": 64}
TIMM_RESNET = {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 64, 64]}}
BASE_CARD = "---\nlicense: mit\nbase_model: org/bert-base\npipeline_tag: fill-mask\n---\n# A fine-tune\n\nbody\n"


def seed(cache: Path, repo_id: str, files: dict[str, Any], revision: str = "main") -> str:
    """Write a Hub cache entry by hand: refs/<revision> -> sha, snapshots/<sha>/<files>."""
    sha = hashlib.sha1(f"{repo_id}{sorted(files)}{revision}".encode()).hexdigest()
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(sha)
    snap = root / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (snap / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return sha


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = tmp_path_factory.mktemp("hub-cache")
    seed(c, "org/tiny-bert", {"config.json": TINY_BERT, "README.md": BASE_CARD.replace("org/bert-base", "org/bert-base")})
    seed(c, "org/bert-base", {"config.json": TINY_BERT})
    seed(c, "org/tiny-gpt2", {"config.json": TINY_GPT2})
    seed(c, "timm/resnet18.test", {"config.json": TIMM_RESNET})
    return c


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every filename passed to hf_hub_download."""
    seen: list[str] = []
    real = hfh.hf_hub_download

    def spy(repo_id: str, filename: str, **kw: Any) -> str:
        seen.append(filename)
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(hfh, "hf_hub_download", spy)
    return seen


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ index by id (offline cache)
def test_import_is_light() -> None:
    code = ("import sys, nar_plugin.hf, nar_plugin.integrations;"
            "print(sorted(m for m in ('huggingface_hub','transformers','torch','starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_parse_repo_spec() -> None:
    assert hf.parse_repo_spec("org/name") == ("org/name", None)
    assert hf.parse_repo_spec("hf:org/name@abc") == ("org/name", "abc")
    with pytest.raises(ValueError, match="repo id"):
        hf.parse_repo_spec("not a repo")


def test_index_repo_offline_reads_only_config_and_card(cache: Path, downloads: list[str]) -> None:
    from nar_plugin.search.api import find_similar, open_index as _index

    sha = (cache / "models--org--tiny-bert" / "refs" / "main").read_text()
    key = hf.index_repo("org/tiny-bert", cache_dir=cache)
    assert key == f"hf:org/tiny-bert@{sha}"
    assert set(downloads) == {"config.json", "README.md"}
    meta = _index().get(key).metadata
    assert meta["revision"] == sha and meta["repo_id"] == "org/tiny-bert"
    assert meta["base_model"] == ["org/bert-base"] and meta["pipeline_tag"] == "fill-mask"
    assert meta["library"] == "transformers" and meta["model_type"] == "bert"
    base = hf.index_repo("org/bert-base", revision="main", cache_dir=cache)
    assert hf.index_repo(key, cache_dir=cache) == key  # a key is a valid spec; re-indexing is an upsert
    matches = find_similar(key)
    assert matches[0].key == base and matches[0].relation == "identical"
    assert matches[0].metadata["repo_id"] == "org/bert-base"
    assert hf.relation_vs_base_model(matches[0], key) == "agrees: base_model is the match"
    # seen from the base model, the fine-tune is its child
    back = next(m for m in find_similar(base) if m.key == key)
    assert hf.relation_vs_base_model(back, base) == "agrees: the match is fine-tuned from the query"


def test_index_repo_matches_in_memory_model(cache: Path) -> None:
    import torch
    import transformers

    from nar_plugin.search.api import open_index as _index
    from nar_plugin.model.inference import embed

    key = hf.index_repo("org/tiny-bert", cache_dir=cache)
    with torch.device("meta"):
        model = transformers.BertModel(transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}))
    assert cosine(_index().get(key).vector, embed(model.eval())) >= 0.99


def test_index_repo_errors(cache: Path) -> None:
    from nar_plugin.errors import KeyNotFoundError, UnsupportedModelError

    with pytest.raises(KeyNotFoundError, match="offline cache"):
        hf.index_repo("org/not-cached", cache_dir=cache)
    seed(cache, "org/not-a-model", {"config.json": {"foo": 1}})
    with pytest.raises(UnsupportedModelError, match="model_type"):
        hf.index_repo("org/not-a-model", cache_dir=cache)


def test_index_repos_bulk_summary(cache: Path) -> None:
    calls: list[tuple[str, str | None, str | None]] = []
    summary = hf.index_repos(["org/tiny-gpt2", "timm/resnet18.test", "org/not-cached", "bad spec!"], workers=3,
                             progress=lambda spec, key, err: calls.append((spec, key, type(err).__name__ if err else None)),
                             cache_dir=cache)
    assert set(summary.indexed) == {"org/tiny-gpt2", "timm/resnet18.test"}
    assert summary.indexed["timm/resnet18.test"].startswith("hf:timm/resnet18.test@")
    assert [(f.repo, f.error) for f in summary.failed] == [("bad spec!", "ValueError"), ("org/not-cached", "KeyNotFoundError")]
    assert len(calls) == 4 and not summary.ok
    assert json.loads(json.dumps(summary.to_dict()))["repos_per_minute"] > 0


def test_relation_vs_base_model_reports_disagreement() -> None:
    from nar_plugin.search.api import Match

    child = {"repo_id": "org/child", "base_model": ["org/base"]}
    assert hf.relation_vs_base_model(Match("hf:org/child@x", 0.99, "near-duplicate", child), "org/base") == \
        "agrees: the match is fine-tuned from the query"
    assert hf.relation_vs_base_model(Match("hf:org/child@x", 0.5, "unrelated", child), "org/base") == \
        "differs: the match is fine-tuned from the query but the architectures are unrelated"
    assert hf.relation_vs_base_model(Match("hf:org/other@x", 0.99, "identical", {"repo_id": "org/other"}),
                                     "org/base") == "no base_model link"


# ------------------------------------------------------------------ a mock Hub over httpx2
class MockHub:
    """Plays the Hub API: model_info, resolve (HEAD/GET), create repo, preupload, validate-yaml,
    commit. Records requests and decoded commits; ``readme`` is the repo's current README."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.commits: list[dict[str, bytes]] = []
        self.files: dict[str, bytes] = {}
        self.sha = "c" * 40
        self.card: dict[str, Any] | None = None
        self.commit_status = 200

    def handler(self, req: Any) -> Any:
        path = req.url.path
        self.requests.append((req.method, path))
        if path.startswith("/api/models/") and req.method == "GET":  # model_info
            repo = "/".join(path[len("/api/models/"):].split("/")[:2])
            return httpx2.Response(200, json={"id": repo, "sha": self.sha, "pipeline_tag": "feature-extraction",
                                              "library_name": "transformers", "cardData": self.card, "siblings": []})
        if "/resolve/" in path:
            name = path.split("/resolve/", 1)[1].split("/", 1)[1]
            if name not in self.files:
                return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "not found"})
            data = self.files[name]
            headers = {"X-Repo-Commit": self.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                       "Content-Length": str(len(data))}
            return httpx2.Response(200, headers=headers, content=b"" if req.method == "HEAD" else data)
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/org/pushed"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(req.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                        for f in files]})
        if "/commit/" in path:
            if self.commit_status != 200:
                return httpx2.Response(self.commit_status, json={"error": "forbidden"})
            lines = [json.loads(ln) for ln in req.content.decode().splitlines() if ln]
            self.commits.append({ln["value"]["path"]: base64.b64decode(ln["value"]["content"])
                                 for ln in lines if ln["key"] == "file"})
            oid = hashlib.sha1(str(len(self.commits)).encode()).hexdigest()
            return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/org/pushed/commit/{oid}",
                                              "commitOid": oid, "pullRequestUrl": None})
        return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": f"mock: {path}"})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockHub]:
    mock = MockHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the mock transport is the only "network"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", "hf_mock")
    hfh.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(mock.handler)))
    yield mock
    hfh.set_client_factory(hfh.utils._http.default_client_factory)


@pytest.fixture
def hook() -> Iterator[None]:
    hf.autolog()
    yield
    hf.autolog(disable=True)


def test_index_repo_online_downloads_only_config(hub: MockHub, tmp_path: Path) -> None:
    hub.files = {"config.json": json.dumps(TINY_BERT).encode(), "model.safetensors": b"W" * 64}
    hub.card = {"base_model": "org/bert-base"}
    key = hf.index_repo("org/online", cache_dir=tmp_path)
    assert key == f"hf:org/online@{hub.sha}"
    fetched = {p for _, p in hub.requests if "/resolve/" in p}
    assert fetched == {f"/org/online/resolve/{hub.sha}/config.json"}
    from nar_plugin.search.api import open_index as _index

    assert _index().get(key).metadata["base_model"] == ["org/bert-base"]


def test_unreachable_hub_falls_back_to_the_cache(hub: MockHub, cache: Path) -> None:
    def down(req: Any) -> Any:
        raise httpx2.ConnectError("no route to host", request=req)

    hub.handler = down  # type: ignore[method-assign]
    hfh.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(down)))
    sha = (cache / "models--org--tiny-gpt2" / "refs" / "main").read_text()
    assert hf.index_repo("org/tiny-gpt2", cache_dir=cache) == f"hf:org/tiny-gpt2@{sha}"


def _folder(tmp_path: Path, config: dict[str, Any], readme: str | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "model.safetensors").write_bytes(b"\0" * 256)
    if readme is not None:
        (d / "README.md").write_text(readme)
    return d


def _card(commit: dict[str, bytes]) -> dict[str, Any]:
    from huggingface_hub import ModelCard

    return ModelCard(commit["README.md"].decode()).data.to_dict()


def test_upload_folder_carries_card_metadata(hub: MockHub, hook: None, tmp_path: Path) -> None:
    from nar_plugin.search.api import open_index as _index
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import encoder_version

    info = HfApi().upload_folder(repo_id="org/pushed", folder_path=_folder(tmp_path, TINY_BERT))
    (commit,) = hub.commits
    assert set(commit) == {"config.json", "model.safetensors", "README.md"}  # same commit
    nar = _card(commit)["nar"]
    assert nar["encoder"] == encoder_version()
    entry = _index().get(f"hf:org/pushed@{info.oid}")
    assert entry is not None and entry.graph_hash == nar["graph_hash"]
    assert cosine(decode_embedding(nar["embedding"]), entry.vector) > 0.999


def test_push_to_hub_merges_into_the_transformers_card(hub: MockHub, hook: None) -> None:
    import transformers

    hub.files = {"README.md": BASE_CARD.encode()}  # the repo already has a card
    cfg = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"})
    transformers.BertModel(cfg).push_to_hub("org/pushed")
    (commit,) = hub.commits
    assert "model.safetensors" in commit and "config.json" in commit
    card = _card(commit)
    assert card["base_model"] == "org/bert-base" and card["license"] == "mit"  # existing card kept
    assert card["nar"]["embedding"].startswith("nar1:")
    assert b"# A fine-tune" in commit["README.md"]


def test_existing_readme_in_the_commit_is_merged(hub: MockHub, hook: None, tmp_path: Path) -> None:
    HfApi().upload_folder(repo_id="org/pushed", folder_path=_folder(tmp_path, TINY_BERT, readme=BASE_CARD))
    (commit,) = hub.commits
    card = _card(commit)
    assert card["license"] == "mit" and "graph_hash" in card["nar"]
    assert not any(p.endswith("/README.md") for _, p in hub.requests)  # no need to read the remote card


def test_failing_hook_leaves_the_push_intact(hub: MockHub, hook: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import nar_plugin.model.inference

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(nar_plugin.model.inference, "embed_graph", boom)
    monkeypatch.setenv("NAR_TESTING", "false")
    folder = _folder(tmp_path, TINY_BERT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = HfApi().upload_folder(repo_id="org/pushed", folder_path=folder)
    ours = [w for w in caught if "nar-plugin" in str(w.message)]
    assert len(ours) == 1 and "encoder exploded" in str(ours[0].message)
    assert info.oid and set(hub.commits[0]) == {"config.json", "model.safetensors"}
    assert hub.commits[0]["config.json"] == (folder / "config.json").read_bytes()
    # NAR_TESTING=true re-raises plugin errors (and nothing is committed)
    monkeypatch.setenv("NAR_TESTING", "true")
    with pytest.raises(RuntimeError, match="encoder exploded"):
        HfApi().upload_folder(repo_id="org/pushed", folder_path=folder)
    assert len(hub.commits) == 1


def test_unknown_remote_card_is_never_overwritten(hub: MockHub, hook: None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import errors as hf_errors

    def offline(*_: Any, **__: Any) -> Any:
        raise hf_errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(HfApi, "hf_hub_download", offline)
    monkeypatch.setenv("NAR_TESTING", "false")
    with pytest.warns(UserWarning, match="nar-plugin"):
        HfApi().upload_folder(repo_id="org/pushed", folder_path=_folder(tmp_path, TINY_BERT))
    assert "README.md" not in hub.commits[0]


def test_user_errors_propagate_unchanged(hub: MockHub, hook: None) -> None:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    hub.commit_status = 403
    ops = (op for op in [CommitOperationAdd("config.json", json.dumps(TINY_BERT).encode())])  # a one-shot iterable
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi().create_commit("org/pushed", ops, commit_message="x")
    assert exc.value.response.status_code == 403
    # non-model repos and commits without config.json are not touched
    hub.commit_status = 200
    HfApi().create_commit("org/data", [CommitOperationAdd("config.json", b"{}")], commit_message="x", repo_type="dataset")
    HfApi().create_commit("org/pushed", [CommitOperationAdd("notes.txt", b"hi")], commit_message="x")
    assert [set(c) for c in hub.commits] == [{"config.json"}, {"notes.txt"}]


def test_autolog_is_idempotent_and_revertible(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_api

    original = HfApi.create_commit
    hf.autolog()
    wrapped = HfApi.create_commit
    hf.autolog(silent=True)
    assert HfApi.create_commit is wrapped and wrapped.__wrapped__ is original
    assert hf_api.create_commit.__func__ is wrapped  # the module-level alias follows
    hf.autolog(disable=True)
    hf.autolog(disable=True)
    assert HfApi.create_commit is original and hf_api.create_commit.__func__ is original
    monkeypatch.delenv("NAR_HF_AUTOLOG", raising=False)
    assert hf.maybe_autolog() is False and HfApi.create_commit is original
    monkeypatch.setenv("NAR_HF_AUTOLOG", "maybe")
    assert hf.maybe_autolog() is False
    monkeypatch.setenv("NAR_HF_AUTOLOG", "true")
    try:
        assert hf.maybe_autolog() is True and HfApi.create_commit is not original
    finally:
        hf.autolog(disable=True)


# ------------------------------------------------------------------ webhook receiver
SECRET = "s3cret"


def payload(repo_type: str = "model", scope: str = "repo.content", action: str = "update",
            name: str = "org/tiny-bert", sha: str | None = "a" * 40) -> dict[str, Any]:
    return {"event": {"action": action, "scope": scope},
            "repo": {"type": repo_type, "name": name, "id": "1", "private": False, "headSha": sha},
            "webhook": {"id": "w", "version": 3}}


def test_webhook_verifies_the_secret_and_indexes_model_updates() -> None:
    from starlette.testclient import TestClient

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(repo_id: str, **kw: Any) -> str:
        calls.append((repo_id, kw))
        return f"hf:{repo_id}@{kw['revision']}"

    app = hf.make_webhook_app(SECRET, indexer=fake)
    with TestClient(app) as client:
        r = client.post("/", json=payload(), headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        app.state.drain()
        assert calls == [("org/tiny-bert", {"revision": "a" * 40, "token": None, "index": None})]
        for headers in ({}, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": SECRET + " "}):
            assert client.post("/", json=payload(), headers=headers).status_code == 401
        for ignored in (payload(repo_type="dataset"), payload(scope="discussion"), payload(scope="repo", action="delete")):
            r = client.post("/webhook", json=ignored, headers={"X-Webhook-Secret": SECRET})
            assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"]
        r = client.post("/", content=b"{not json", headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 400
        assert client.post("/", json=payload(sha="HEAD"), headers={"X-Webhook-Secret": SECRET}).status_code == 400
        pr_only = {**payload(), "updatedRefs": [{"ref": "refs/pr/3", "oldSha": None, "newSha": "b" * 40}]}
        r = client.post("/", json=pr_only, headers={"X-Webhook-Secret": SECRET})
        assert r.json()["status"] == "ignored"
        branch = {**payload(), "updatedRefs": [{"ref": "refs/heads/dev", "oldSha": None, "newSha": "d" * 40},
                                               {"ref": "refs/tags/v1", "oldSha": None, "newSha": "e" * 40}]}
        r = client.post(f"/?secret={SECRET}", json=branch)  # the secret may come as a query parameter
        assert r.status_code == 202 and r.json()["revisions"] == ["d" * 40]
        app.state.drain()
        assert [c[1]["revision"] for c in calls] == ["a" * 40, "d" * 40]
        health = client.get("/health").json()
        assert health["rejected"] == 3 and health["ignored"] == 4 and health["indexed"] == 2


@pytest.mark.integration
def test_webhook_on_a_real_uvicorn_server() -> None:
    import threading
    import time

    import httpx
    import uvicorn

    calls: list[str] = []
    app = hf.make_webhook_app(SECRET, indexer=lambda repo_id, **kw: calls.append(kw["revision"]) or "k")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/webhook"
        assert httpx.post(url, json=payload()).status_code == 401
        r = httpx.post(url, json=payload(), headers={"X-Webhook-Secret": SECRET})
        assert r.status_code == 202
        app.state.drain()
        assert calls == ["a" * 40]
    finally:
        server.should_exit = True
        thread.join(10)


def test_webhook_without_a_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import ConfigError

    monkeypatch.delenv("NAR_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="NAR_WEBHOOK_SECRET"):
        hf.make_webhook_app()


def test_webhook_indexes_with_the_real_index_repo(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from starlette.testclient import TestClient

    from nar_plugin.search.api import open_index as _index

    sha = (cache / "models--org--tiny-gpt2" / "refs" / "main").read_text()
    monkeypatch.setenv("NAR_WEBHOOK_SECRET", SECRET)
    app = hf.make_webhook_app(indexer=functools.partial(hf.index_repo, cache_dir=cache), background=False)
    with TestClient(app) as client:
        r = client.post("/", json=payload(name="org/tiny-gpt2", sha=sha), headers={"X-Webhook-Secret": SECRET})
    assert r.status_code == 200 and r.json()["keys"] == [f"hf:org/tiny-gpt2@{sha}"]
    assert _index().get(f"hf:org/tiny-gpt2@{sha}") is not None


# ------------------------------------------------------------------ git pre-push hook
def _load_pre_push() -> Any:
    path = ROOT / "hooks" / "pre-push"
    loader = importlib.machinery.SourceFileLoader("nar_pre_push", str(path))
    spec = importlib.util.spec_from_loader("nar_pre_push", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_pre_push_warns_on_duplicates_and_blocks_only_when_asked(cache: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    hf.index_repo("org/bert-base", cache_dir=cache)
    pre_push = _load_pre_push()
    repo = tmp_path / "work"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps(TINY_BERT))
    err = io.StringIO()
    argv = ["origin", "https://huggingface.co/org/my-bert"]
    assert pre_push.main(argv, stdin=io.StringIO(""), cwd=repo, stderr=err) == 0
    assert "org/bert-base" in err.getvalue() and "identical" in err.getvalue()
    monkeypatch.setenv("NAR_DEDUP", "block")
    assert pre_push.main(argv, stdin=io.StringIO(""), cwd=repo, stderr=io.StringIO()) == 1
    (repo / "config.json").unlink()  # nothing to check: never blocks
    assert pre_push.main(argv, stdin=io.StringIO(""), cwd=repo, stderr=io.StringIO()) == 0


# ------------------------------------------------------------------ CLI
def test_cli_index_hf(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    import nar_plugin.cli.hf  # noqa: F401 - registers the commands
    from nar_plugin.cli.main import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    listing = tmp_path / "repos.txt"
    listing.write_text("# repos\norg/tiny-gpt2\norg/not-cached\n")
    rc = main(["index", "hf", "org/bert-base", "--from-file", str(listing), "--workers", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and set(out["indexed"]) == {"org/bert-base", "org/tiny-gpt2"}
    assert [f["repo"] for f in out["failed"]] == ["org/not-cached"]
