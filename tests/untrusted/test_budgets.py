"""Budgets for untrusted input: each attack is injected and refused with a typed one-line error in
bounded time, and honest models of realistic size still extract."""

from __future__ import annotations

import copy
import json
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from untrusted_artifacts import onnx_chain, write_mlmodel, write_onnx, write_pt2, write_zip_member
from nar_plugin.errors import (
    BudgetExceededError,
    ConfigError,
    CorruptArtifactError,
    ExtractionTimeoutError,
    GraphTooLargeError,
    NarError,
    TraceTooLargeError,
)
from nar_plugin.extract.aten import graph_from_pt2
from nar_plugin.extract.limits import Budgets, check_config_sizes, json_depth
from nar_plugin.extract.onnx import graph_from_onnx


def _one_line(e: BaseException) -> None:
    assert isinstance(e, NarError)
    assert "\n" not in str(e) and str(e)


# ------------------------------------------------------------------ archive member size
def test_pt2_bomb_is_refused_on_its_declared_size_before_a_byte_is_inflated(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = write_zip_member(tmp_path / "bomb.pt2", "archive/models/model.json", 400)
    assert bomb.stat().st_size < 1 << 20  # 400 MB inflated, under 1 MB on disk
    opened: list[str] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(str(name))
                        or real_open(self, name, *a, **k))
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceededError) as info:
        graph_from_pt2(bomb)
    assert time.perf_counter() - t0 < 2.0
    assert opened == []  # refused on ZipInfo.file_size alone
    assert info.value.budget == "NAR_MAX_MEMBER_MB" and "400.0 MB" in str(info.value)
    _one_line(info.value)


def test_member_budget_follows_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = write_zip_member(tmp_path / "b.pt2", "archive/models/model.json", 20)
    monkeypatch.setenv("NAR_MAX_MEMBER_MB", "10")
    with pytest.raises(BudgetExceededError):
        graph_from_pt2(bomb)
    monkeypatch.setenv("NAR_MAX_MEMBER_MB", "30")  # now read: 20 MB of spaces is not JSON
    with pytest.raises(CorruptArtifactError, match="does not parse") as info:
        graph_from_pt2(bomb)
    _one_line(info.value)


def test_huge_budgets_do_not_allocate_them(small_pt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # read(n) allocates n bytes up front: a budget of 100 GB must not become a 100 GB buffer
    from nar_plugin.extract.mlflow_model import read_mlmodel
    from nar_plugin.extract.transformers import load_config

    for var in ("NAR_MAX_MEMBER_MB", "NAR_MAX_JSON_MB"):
        monkeypatch.setenv(var, "100000")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2}))
    assert load_config(cfg).num_hidden_layers == 2
    assert graph_from_pt2(small_pt2).num_nodes > 0
    write_mlmodel(tmp_path / "m", {"onnx": {"data": "model.onnx"}})
    assert "onnx" in read_mlmodel(tmp_path / "m")["flavors"]


@pytest.mark.parametrize("raw", ["0", "1.5", "abc", "-1", "inf", "nan"])
def test_malformed_budget_variables_are_config_errors(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_MAX_MEMBER_MB" if raw != "1.5" else "NAR_MAX_JSON_DEPTH", raw)
    with pytest.raises(ConfigError, match="NAR_MAX_"):
        Budgets.from_env()


def test_extract_timeout_must_be_positive_and_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in ("0", "-5", "inf"):
        monkeypatch.setenv("NAR_EXTRACT_TIMEOUT", raw)
        with pytest.raises(ConfigError, match="NAR_EXTRACT_TIMEOUT"):
            Budgets.from_env()


# ------------------------------------------------------------------ JSON depth and malformed model.json
def _depth(o: Any) -> int:
    if isinstance(o, dict):
        return 1 + max((_depth(v) for v in o.values()), default=0)
    if isinstance(o, list):
        return 1 + max((_depth(v) for v in o), default=0)
    return 0


def _random_json(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, "a[{\"}]\\", None, 2.5, "}}]]", "\\\\\"[", ""])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_json_depth_equals_the_parsed_depth_and_ignores_brackets_in_strings() -> None:
    rng = random.Random(0)
    for _ in range(300):
        obj = _random_json(rng, rng.randint(0, 9))
        assert json_depth(json.dumps(obj)) == _depth(obj)
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000  # no recursion


def test_deeply_nested_model_json_is_refused_before_parsing(tmp_path: Path) -> None:
    deep = write_pt2(tmp_path / "deep.pt2", '{"graph_module": ' + "[" * 200_000 + "]" * 200_000 + "}")
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceededError) as info:
        graph_from_pt2(deep)
    assert time.perf_counter() - t0 < 2.0
    assert info.value.budget == "NAR_MAX_JSON_DEPTH"
    _one_line(info.value)


def test_nesting_past_pythons_recursion_limit_is_a_corrupt_artifact(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_MAX_JSON_DEPTH", "1000000")  # the scan lets it through; json.loads recurses
    deep = write_pt2(tmp_path / "deep.pt2", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptArtifactError) as info:
        graph_from_pt2(deep)
    assert not isinstance(info.value.__cause__, CorruptArtifactError)
    _one_line(info.value)


def _mutations() -> list[tuple[str, Any]]:
    def nodes(m: dict[str, Any]) -> list[Any]:
        return m["graph_module"]["graph"]["nodes"]

    return [
        ("top-level list", lambda m: []),
        ("graph_module a list", lambda m: {**m, "graph_module": []}),
        ("nodes not a list", lambda m: (m["graph_module"]["graph"].__setitem__("nodes", {"a": 1}), m)[1]),
        ("node an int", lambda m: (nodes(m).__setitem__(0, 7), m)[1]),
        ("node inputs a string", lambda m: (nodes(m)[0].__setitem__("inputs", "x"), m)[1]),
        ("node input a list", lambda m: (nodes(m)[0].__setitem__("inputs", [[1, 2]]), m)[1]),
        ("outputs of ints", lambda m: (nodes(m)[0].__setitem__("outputs", [1, 2]), m)[1]),
        ("target a dict", lambda m: (nodes(m)[0].__setitem__("target", {"x": 1}), m)[1]),
        ("empty input spec", lambda m: (m["graph_module"]["signature"]["input_specs"].__setitem__(0, {}), m)[1]),
        ("size not an int", lambda m: (next(iter(m["graph_module"]["graph"]["tensor_values"].values()))
                                       .__setitem__("sizes", [{"as_int": "x"}]), m)[1]),
        ("tensor_values a list", lambda m: (m["graph_module"]["graph"].__setitem__("tensor_values", [1]), m)[1]),
    ]


@pytest.mark.parametrize("name,mutate", _mutations(), ids=[n for n, _ in _mutations()])
def test_malformed_model_json_is_one_typed_line(name: str, mutate: Any, small_model_json: dict[str, Any],
                                                tmp_path: Path) -> None:
    bad = mutate(copy.deepcopy(small_model_json))
    path = write_pt2(tmp_path / "bad.pt2", bad)
    with pytest.raises(NarError) as info:
        graph_from_pt2(path)
    assert isinstance(info.value, (CorruptArtifactError, BudgetExceededError)), (name, repr(info.value))
    _one_line(info.value)


@pytest.mark.parametrize("payload", [b"not a zip at all", b"PK\x03\x04" + b"\x00" * 64])
def test_not_a_zip_is_a_corrupt_artifact(payload: bytes, tmp_path: Path) -> None:
    p = tmp_path / "x.pt2"
    p.write_bytes(payload)
    with pytest.raises(CorruptArtifactError) as info:
        graph_from_pt2(p)
    _one_line(info.value)


def test_the_real_archive_still_reads(small_pt2: Path) -> None:
    g = graph_from_pt2(small_pt2)
    assert g.op_histogram()["linear"] == 2


# ------------------------------------------------------------------ config sizes
def test_800_layer_config_is_refused_before_any_module_is_built(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import nar_plugin.extract.transformers as tf_extract

    monkeypatch.setattr(tf_extract, "build_meta_model", lambda *_a, **_k: pytest.fail("a module was built"))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 800}))
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceededError) as info:
        tf_extract.graph_from_hf_config(cfg)
    assert time.perf_counter() - t0 < 5.0
    assert info.value.budget == "NAR_MAX_CONFIG_LAYERS" and "800" in str(info.value)
    _one_line(info.value)


@pytest.mark.parametrize("cfg,budget", [
    ({"model_type": "gpt2", "n_layer": 800}, "NAR_MAX_CONFIG_LAYERS"),
    ({"model_type": "t5", "num_layers": 200, "num_decoder_layers": 200}, "NAR_MAX_CONFIG_LAYERS"),
    ({"model_type": "bart", "encoder_layers": 200, "decoder_layers": 100}, "NAR_MAX_CONFIG_LAYERS"),
    ({"model_type": "swin", "depths": [2, 2, 400, 2]}, "NAR_MAX_CONFIG_LAYERS"),
    ({"model_type": "clip", "text_config": {"num_hidden_layers": 200}, "vision_config": {"num_hidden_layers": 200}},
     "NAR_MAX_CONFIG_LAYERS"),
    ({"model_type": "llama", "hidden_size": 1 << 30}, "NAR_MAX_CONFIG_DIM"),
    ({"model_type": "llama", "vocab_size": 10 ** 12}, "NAR_MAX_CONFIG_DIM"),
    ({"model_type": "llama", "num_attention_heads": float("inf")}, "NAR_MAX_CONFIG_DIM"),
    ({"model_type": "llama", "num_hidden_layers": 200, "hidden_size": 1 << 23}, "NAR_MAX_CONFIG_PARAMS"),
    ({"model_type": "mixtral", "num_local_experts": 10 ** 6}, "NAR_MAX_CONFIG_EXPERTS"),
])
def test_config_size_budgets(cfg: dict[str, Any], budget: str) -> None:
    with pytest.raises(BudgetExceededError) as info:
        check_config_sizes(cfg)
    assert info.value.budget == budget
    _one_line(info.value)


@pytest.mark.parametrize("value", [-3, float("nan"), [2, -1]])
def test_impossible_layer_counts_are_corrupt(value: Any) -> None:
    with pytest.raises(CorruptArtifactError):
        check_config_sizes({"model_type": "bert", "num_hidden_layers": value})


def test_config_budgets_follow_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"model_type": "bert", "num_hidden_layers": 800}
    monkeypatch.setenv("NAR_MAX_CONFIG_LAYERS", "1000")
    check_config_sizes(cfg)
    monkeypatch.setenv("NAR_MAX_CONFIG_LAYERS", "12")
    with pytest.raises(BudgetExceededError):
        check_config_sizes({"model_type": "bert", "num_hidden_layers": 13})


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "t5", "bart", "vit", "swin", "whisper", "clip",
                                        "mixtral", "qwen3_moe", "deepseek_v3", "doge"])
def test_default_configs_of_real_families_are_within_budget(model_type: str) -> None:
    from transformers import AutoConfig

    check_config_sizes(AutoConfig.for_model(model_type).to_dict(), model_type)


def test_real_large_models_are_within_budget() -> None:
    # Llama-3.1-405B and Kimi-K2 (1T parameters, 384 experts) as published
    check_config_sizes({"model_type": "llama", "num_hidden_layers": 126, "hidden_size": 16384,
                        "intermediate_size": 53248, "vocab_size": 128256, "max_position_embeddings": 131072})
    check_config_sizes({"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168,
                        "moe_intermediate_size": 2048, "n_routed_experts": 384, "vocab_size": 163840})


def test_config_aliases_are_caught_after_transformers_resolves_them(tmp_path: Path) -> None:
    from nar_plugin.extract.transformers import load_config

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 900}))  # attribute_map -> n_layer
    with pytest.raises(BudgetExceededError):
        load_config(cfg)


# ------------------------------------------------------------------ nodes and time while lowering
def test_node_budget_stops_lowering_the_moment_it_is_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_MAX_TRACE_NODES", "1000")
    with pytest.raises(TraceTooLargeError) as info:
        graph_from_onnx(onnx_chain(2500))  # in memory: only the builder's guard can stop it
    assert info.value.num_nodes == 1001 and info.value.limit == 1000
    assert isinstance(info.value, GraphTooLargeError)
    _one_line(info.value)


def test_node_budget_defaults_to_four_times_max_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_MAX_NODES", "200")
    with pytest.raises(TraceTooLargeError) as info:
        graph_from_onnx(onnx_chain(500))
    assert info.value.limit == 800


def test_stored_graphs_over_the_node_budget_are_refused_before_lowering(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.graph.builder import GraphBuilder

    path = write_onnx(tmp_path / "m.onnx", onnx_chain(600))
    monkeypatch.setenv("NAR_MAX_TRACE_NODES", "1000")
    monkeypatch.setattr(GraphBuilder, "add", lambda *_a, **_k: pytest.fail("lowering started"))
    with pytest.raises(TraceTooLargeError) as info:
        graph_from_onnx(path)
    assert info.value.num_nodes == 1200


def test_wall_time_budget_stops_lowering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_EXTRACT_TIMEOUT", "1e-9")
    t0 = time.perf_counter()
    with pytest.raises(ExtractionTimeoutError) as info:
        graph_from_onnx(onnx_chain(2500))
    assert time.perf_counter() - t0 < 5.0
    assert "NAR_EXTRACT_TIMEOUT" in str(info.value) and isinstance(info.value, TimeoutError)


def test_budgets_are_per_thread() -> None:
    import threading

    from nar_plugin.extract.limits import bounded
    from nar_plugin.graph.builder import ADD_GUARD

    seen: list[Any] = []
    with bounded(Budgets.from_env()):
        assert ADD_GUARD.get() is not None
        t = threading.Thread(target=lambda: seen.append(ADD_GUARD.get()))
        t.start()
        t.join()
    assert seen == [None] and ADD_GUARD.get() is None


# ------------------------------------------------------------------ honest models of realistic size
def test_a_5000_node_honest_model_still_extracts(tmp_path: Path) -> None:
    from nar_plugin.extract.sandbox import extract_untrusted

    path = write_onnx(tmp_path / "deep.onnx", onnx_chain(2500))
    g = extract_untrusted(path)
    assert g.num_nodes >= 5000
    assert g.op_histogram()["linear"] == 2500 and g.op_histogram()["relu"] == 2500
    mlflow_dir = write_mlmodel(tmp_path / "model", {"onnx": {"data": "model.onnx"}})
    write_onnx(mlflow_dir / "model.onnx", onnx_chain(2500))
    assert extract_untrusted(mlflow_dir).graph_hash == g.graph_hash


@pytest.mark.slow
def test_a_5000_node_exported_pt2_still_extracts(tmp_path: Path) -> None:
    import torch

    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    layers: list[torch.nn.Module] = []
    for _ in range(2500):
        layers += [torch.nn.Linear(8, 8), torch.nn.ReLU()]
    ep = torch.export.export(torch.nn.Sequential(*layers).eval(), (torch.zeros(1, 8),))
    torch.export.save(ep, str(tmp_path / "deep.pt2"))
    g = extract_graph_sandboxed(tmp_path / "deep.pt2")
    assert g.num_nodes >= 5000 and g.op_histogram()["linear"] == 2500
