"""The push hooks: model cards stamped by ``autolog`` (nar_plugin.integrations.hf.push) through
a mock Hub that records the commits, and the git pre-push hook (hooks/pre-push)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("httpx2")
pytest.importorskip("transformers")

# tests/ is on sys.path (rootdir conftest); cache, hub and hook are fixtures
from fixtures.hf_hub import (  # noqa: E402, F401
    BASE_CARD,
    ROOT,
    TINY_BERT,
    MockHub,
    cache,
    cosine,
    hook,
    hub,
)
from huggingface_hub import HfApi  # noqa: E402

from nar_plugin.integrations import hf  # noqa: E402


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
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import encoder_version
    from nar_plugin.search.api import open_index as _index

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
    assert "org/bert-base" in err.getvalue() and "same-architecture" in err.getvalue()
    monkeypatch.setenv("NAR_DEDUP", "block")
    assert pre_push.main(argv, stdin=io.StringIO(""), cwd=repo, stderr=io.StringIO()) == 1
    # the repo's own earlier revisions are not duplicates of it
    argv_own = ["origin", "https://huggingface.co/org/bert-base"]
    assert pre_push.main(argv_own, stdin=io.StringIO(""), cwd=repo, stderr=io.StringIO()) == 0
    (repo / "config.json").unlink()  # nothing to check: never blocks
    assert pre_push.main(argv, stdin=io.StringIO(""), cwd=repo, stderr=io.StringIO()) == 0
