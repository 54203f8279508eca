"""nar_plugin.integrations.hf: index Hub repos by id (keys, hub, configs, index, card relations),
from a hand-seeded offline cache or a mock Hub (tests/fixtures/hf_hub.py); no network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")
httpx2 = pytest.importorskip("httpx2")
pytest.importorskip("transformers")

# tests/ is on sys.path (rootdir conftest); cache, downloads and hub are fixtures
from fixtures.hf_hub import (  # noqa: E402, F401
    ROOT,
    TINY_BERT,
    MockHub,
    cache,
    cosine,
    downloads,
    hfh,
    hub,
    seed,
)
from huggingface_hub import constants  # noqa: E402

from nar_plugin.integrations import hf  # noqa: E402


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


def test_keys_round_trip() -> None:
    from nar_plugin.integrations.hf.keys import repo_key_prefix

    key = hf.repo_key("org/name", "a" * 40)
    assert key == "hf:org/name@" + "a" * 40 and key.startswith(repo_key_prefix("org/name"))
    assert hf.parse_repo_spec(key) == ("org/name", "a" * 40)


def test_index_repo_offline_reads_only_config_and_card(cache: Path, downloads: list[str]) -> None:
    from nar_plugin.search.api import find_similar
    from nar_plugin.search.api import open_index as _index

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
    assert matches[0].key == base and matches[0].relation == "same-architecture"
    assert matches[0].metadata["repo_id"] == "org/bert-base"
    assert hf.relation_vs_base_model(matches[0], key) == "agrees: base_model is the match"
    # seen from the base model, the fine-tune is its child
    back = next(m for m in find_similar(base) if m.key == key)
    assert hf.relation_vs_base_model(back, base) == "agrees: the match is fine-tuned from the query"


def test_index_repo_matches_in_memory_model(cache: Path) -> None:
    import torch
    import transformers

    from nar_plugin.model.inference import embed
    from nar_plugin.search.api import open_index as _index

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


# ------------------------------------------------------------------ online (the mock Hub)
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
