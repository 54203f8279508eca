"""Safe loading: no foreign code (auto_map, trust_remote_code), no local file loaded on a config's
say-so (timm model_args), no file outside the model folder read (MLmodel paths, ONNX external
data, links), and the sandboxed extraction that receivers use."""

from __future__ import annotations

import builtins
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from untrusted_artifacts import onnx_chain, write_mlmodel, write_onnx, write_pt2, write_zip_member
from nar_plugin.errors import (
    BudgetExceededError,
    ConfigError,
    CorruptArtifactError,
    ExtractionTimeoutError,
    NarError,
    PickleOnlyModelError,
    SandboxMemoryError,
    UnsafeConfigError,
    UnsafePathError,
    UnsupportedModelError,
)
from nar_plugin.extract.mlflow_model import graph_from_mlflow_dir


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers asks "run custom code?" with input(): make any prompt a test failure."""
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail(f"prompted: {a[0][:80] if a else ''}"))


@pytest.fixture
def no_remote_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.dynamic_module_utils as dyn

    monkeypatch.setattr(dyn, "get_class_from_dynamic_module", lambda *a, **k: pytest.fail("remote code loaded"))


# ------------------------------------------------------------------ transformers: no custom code
AUTO_MAP = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
TINY_BERT = {"model_type": "bert", "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
             "intermediate_size": 64, "vocab_size": 100}


def test_auto_map_without_local_class_does_not_prompt(no_prompt: None, no_remote_code: None) -> None:
    # align_text_model has no AutoModel entry: with auto_map, transformers would ask whether to
    # run the repo's code (a prompt inside a receiver or a log_model call)
    from nar_plugin.extract.transformers import graph_from_hf_config

    with pytest.raises(UnsupportedModelError):
        graph_from_hf_config({"model_type": "align_text_model", "num_hidden_layers": 1, "auto_map": AUTO_MAP})


def test_auto_map_is_stripped_and_trust_remote_code_is_false(tmp_path: Path, no_prompt: None, no_remote_code: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from nar_plugin.extract.transformers import build_meta_model, load_config

    seen: list[dict[str, Any]] = []
    real = transformers.AutoModel.from_config.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, config: Any, **kwargs: Any) -> Any:
        seen.append({"kwargs": dict(kwargs), "auto_map": hasattr(config, "auto_map")})
        return real(cls, config, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_config", classmethod(spy))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_BERT, "auto_map": AUTO_MAP, "custom_pipelines": {"x": {"impl": "evil.P"}}}))
    config = load_config(path)
    assert not hasattr(config, "auto_map") and not hasattr(config, "custom_pipelines")
    build_meta_model(config)
    assert seen == [{"kwargs": {"trust_remote_code": False}, "auto_map": False}]


def test_auto_map_config_still_gives_its_graph(no_prompt: None, no_remote_code: None) -> None:
    from nar_plugin.extract.transformers import graph_from_hf_config

    with_map = graph_from_hf_config({**TINY_BERT, "auto_map": AUTO_MAP})
    assert with_map.graph_hash == graph_from_hf_config(dict(TINY_BERT)).graph_hash


@pytest.mark.parametrize("text,error", [
    ("[1, 2]", CorruptArtifactError),
    ("{not json", CorruptArtifactError),
    ('{"model_type": 7}', CorruptArtifactError),
    ('{"hidden_size": 8}', CorruptArtifactError),
    ('{"model_type": "no-such-type"}', UnsupportedModelError),
    ('{"model_type": "bert", "x": ' + "[" * 5000 + "]" * 5000 + "}", BudgetExceededError),
])
def test_malformed_configs_are_one_typed_line(text: str, error: type[Exception], tmp_path: Path) -> None:
    from nar_plugin.extract.transformers import load_config

    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(error) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_oversized_config_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.extract.transformers import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_BERT, "pad": "x" * (2 << 20)}))
    monkeypatch.setenv("NAR_MAX_JSON_MB", "1")
    with pytest.raises(BudgetExceededError) as info:
        load_config(path)
    assert info.value.budget == "NAR_MAX_JSON_MB"


# ------------------------------------------------------------------ timm: model_args allow-list
@pytest.fixture
def no_checkpoint_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import timm.models
    import torch

    calls: list[Any] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or pytest.fail("torch.load called"))
    monkeypatch.setattr(timm.models, "load_checkpoint", lambda *a, **k: calls.append(a) or pytest.fail("loaded"))
    return calls


@pytest.mark.parametrize("model_args", [
    {"checkpoint_path": "/etc/passwd"},
    {"pretrained_cfg_overlay": {"file": "/etc/passwd"}},
    {"pretrained": True},
    {"cache_dir": "/tmp"},
    {"some_new_arg": 3},
    {"act_layer": "../../evil.py"},
    {"norm_layer": {"file": "x"}},
])
def test_timm_model_args_outside_the_allow_list_are_refused(model_args: dict[str, Any], tmp_path: Path,
                                                             no_checkpoint_load: list[Any]) -> None:
    from nar_plugin.extract.timm_models import graph_from_timm_config

    with pytest.raises(UnsafeConfigError) as info:
        graph_from_timm_config({"architecture": "resnet18", "model_args": model_args})
    assert no_checkpoint_load == [] and "\n" not in str(info.value)


def test_timm_config_with_allowed_args_gives_its_graph(no_checkpoint_load: list[Any]) -> None:
    from nar_plugin.extract.timm_models import graph_from_timm_config

    g = graph_from_timm_config({"architecture": "resnet18", "num_classes": 10,
                                "model_args": {"drop_rate": 0.1, "global_pool": "avg"},
                                "pretrained_cfg": {"file": "/etc/passwd", "hf_hub_id": "x/y"}})
    assert g.op_histogram()["conv"] == 20 and g.metadata["name"] == "resnet18"


def test_build_meta_timm_never_loads_a_checkpoint(no_checkpoint_load: list[Any]) -> None:
    from nar_plugin.extract.timm_models import build_meta_timm

    with pytest.raises(UnsafeConfigError):
        build_meta_timm("resnet18", checkpoint_path="/etc/passwd")


def test_hub_timm_config_cannot_load_a_local_file(no_checkpoint_load: list[Any]) -> None:
    from nar_plugin.integrations.hf.configs import graph_from_repo_config

    with pytest.raises(UnsafeConfigError):
        graph_from_repo_config({"architecture": "resnet18", "model_args": {"checkpoint_path": "/etc/passwd"}})


@pytest.mark.parametrize("config,error", [
    ({"architecture": 5}, CorruptArtifactError),
    ({"architecture": "../x"}, CorruptArtifactError),
    ({"architecture": "resnet18", "num_classes": "ten"}, CorruptArtifactError),
    ({"architecture": "resnet18", "model_args": [1]}, CorruptArtifactError),
    ({"architecture": "vit_tiny_patch16_224", "model_args": {"depth": 900}}, BudgetExceededError),
    ({"architecture": "not_a_timm_model"}, UnsupportedModelError),
])
def test_malformed_timm_configs_are_typed(config: dict[str, Any], error: type[Exception]) -> None:
    from nar_plugin.extract.timm_models import graph_from_timm_config

    with pytest.raises(error):
        graph_from_timm_config(config)


# ------------------------------------------------------------------ paths confined to the model folder
@pytest.fixture
def onnx_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import onnx

    reads: list[str] = []
    real = onnx.load
    monkeypatch.setattr(onnx, "load", lambda f, *a, **k: reads.append(str(f)) or real(f, *a, **k))
    return reads


@pytest.mark.parametrize("data", ["../../outside.onnx", "ABSOLUTE"])
def test_mlmodel_onnx_data_outside_the_folder_is_not_read(data: str, tmp_path: Path, onnx_reads: list[str]) -> None:
    outside = write_onnx(tmp_path / "outside.onnx", onnx_chain(2))
    model = write_mlmodel(tmp_path / "a" / "b" / "model", {"onnx": {"data": str(outside) if data == "ABSOLUTE" else data}})
    with pytest.raises(UnsafePathError) as info:
        graph_from_mlflow_dir(model)
    assert onnx_reads == [] and info.value.root == str(model.resolve())
    assert isinstance(info.value, PermissionError)


def test_mlmodel_onnx_data_inside_the_folder_is_read(tmp_path: Path, onnx_reads: list[str]) -> None:
    model = write_mlmodel(tmp_path / "model", {"onnx": {"data": "sub/model.onnx"}})
    (model / "sub").mkdir()
    write_onnx(model / "sub" / "model.onnx", onnx_chain(2))
    assert graph_from_mlflow_dir(model).op_histogram()["linear"] == 2
    assert onnx_reads == [str((model / "sub" / "model.onnx").resolve())]


@pytest.mark.parametrize("target", ["data/model.pt2", "config.json", "model.onnx"])
def test_links_leading_out_of_the_folder_are_not_followed(target: str, tmp_path: Path, small_pt2: Path) -> None:
    outside = {"data/model.pt2": small_pt2, "config.json": tmp_path / "cfg.json",
               "model.onnx": write_onnx(tmp_path / "o.onnx", onnx_chain(2))}[target]
    (tmp_path / "cfg.json").write_text(json.dumps({"model_type": "bert"}))
    model = write_mlmodel(tmp_path / "model", {"python_function": {}})
    link = model / target
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, link)
    with pytest.raises(UnsafePathError):
        graph_from_mlflow_dir(model)


@pytest.mark.parametrize("location,ok", [("../secret.bin", False), ("/etc/passwd", False), ("weights.bin", True),
                                         ("sub/../weights.bin", True)])
def test_onnx_external_data_must_stay_in_the_model_folder(location: str, ok: bool, tmp_path: Path) -> None:
    import onnx

    from nar_plugin.extract.onnx import graph_from_onnx

    model = onnx_chain(3)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    if ok:  # the data is never read (it need not even exist): widths come from dims
        assert graph_from_onnx(path).op_histogram()["linear"] == 3
    else:
        with pytest.raises(UnsafePathError, match="outside the model folder"):
            graph_from_onnx(path)


@pytest.mark.parametrize("mlmodel,error", [
    ("flavors: [1, 2]\n", CorruptArtifactError),
    ("flavors:\n  onnx:\n    data: 7\n", CorruptArtifactError),
    ("flavors: {\n", CorruptArtifactError),
    ("a: " + "[" * 5000 + "]" * 5000 + "\nflavors: {}\n", CorruptArtifactError),
    ("\xff\xfe", CorruptArtifactError),
    ("no flavors here\n", CorruptArtifactError),
])
def test_malformed_mlmodel_is_one_typed_line(mlmodel: str, error: type[Exception], tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_bytes(mlmodel.encode("latin-1"))
    with pytest.raises(error) as info:
        graph_from_mlflow_dir(tmp_path)
    assert "\n" not in str(info.value)


def test_oversized_mlmodel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {}\npad: " + "x" * (2 << 20) + "\n")
    monkeypatch.setenv("NAR_MAX_JSON_MB", "1")
    with pytest.raises(BudgetExceededError):
        graph_from_mlflow_dir(tmp_path)


# ------------------------------------------------------------------ nothing indexed
@pytest.mark.parametrize("attack", ["bomb", "outside"])
def test_refused_artifacts_leave_nothing_in_the_index(attack: str, tmp_path: Path) -> None:
    from nar_plugin.index import open_index
    from nar_plugin.search.api import index_model

    if attack == "bomb":
        src = write_zip_member(tmp_path / "bomb.pt2", "a/models/model.json", 200)
    else:
        write_onnx(tmp_path / "outside.onnx", onnx_chain(2))
        src = write_mlmodel(tmp_path / "x" / "model", {"onnx": {"data": "../../outside.onnx"}})
    with pytest.raises((BudgetExceededError, UnsafePathError)):
        index_model(src)
    assert len(open_index()) == 0


# ------------------------------------------------------------------ the sandbox receivers use
def test_sandbox_returns_the_in_process_graph(small_pt2: Path) -> None:
    from nar_plugin.extract.aten import graph_from_pt2
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    assert extract_graph_sandboxed(small_pt2).graph_hash == graph_from_pt2(small_pt2).graph_hash


def test_sandbox_raises_the_childs_typed_error_with_its_fields(tmp_path: Path) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    bomb = write_zip_member(tmp_path / "bomb.pt2", "a/models/model.json", 400)
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceededError) as info:
        extract_graph_sandboxed(bomb)
    assert time.perf_counter() - t0 < 10.0
    assert info.value.budget == "NAR_MAX_MEMBER_MB" and info.value.path == str(bomb.resolve())
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 800}))
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceededError, match="NAR_MAX_CONFIG_LAYERS"):
        extract_graph_sandboxed(cfg)  # refused before the child imports torch
    assert time.perf_counter() - t0 < 5.0
    outside = write_onnx(tmp_path / "o.onnx", onnx_chain(2))
    model = write_mlmodel(tmp_path / "a" / "model", {"onnx": {"data": str(outside)}})
    with pytest.raises(UnsafePathError) as up:
        extract_graph_sandboxed(model)
    assert isinstance(up.value, PermissionError) and up.value.root == str(model.resolve())


def test_sandbox_kills_the_child_at_the_wall_time_limit(tmp_path: Path) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_BERT))  # importing torch + transformers alone takes longer
    t0 = time.perf_counter()
    with pytest.raises(ExtractionTimeoutError) as info:
        extract_graph_sandboxed(cfg, timeout_s=0.3)
    assert time.perf_counter() - t0 < 3.0
    assert info.value.limit_s == 0.3 and isinstance(info.value, TimeoutError)


def test_sandbox_memory_limit(tmp_path: Path) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    # 30 MB of a valid, flat JSON array: parsing it needs far more than 8 MB
    nodes = "[" + ",".join(["0"] * (15 << 20)) + "]"
    big = write_pt2(tmp_path / "big.pt2", '{"graph_module": {"graph": {"nodes": ' + nodes + "}}}")
    with pytest.raises(SandboxMemoryError) as info:
        extract_graph_sandboxed(big, memory_mb=8)
    assert info.value.limit_mb == 8 and isinstance(info.value, MemoryError)


def test_sandbox_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    model = write_mlmodel(tmp_path / "model", {"pytorch": {"pickle_module_name": "cloudpickle"}})
    (model / "data").mkdir()
    (model / "data" / "model.pth").write_bytes(b"\x80\x04K\x01.")
    monkeypatch.setenv("NAR_TRUST_PICKLE", "true")  # the parent may trust pickles; the sandbox never does
    with pytest.raises(PickleOnlyModelError):
        extract_graph_sandboxed(model)


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"timeout_s": float("inf")}, {"memory_mb": -1}])
def test_sandbox_limits_are_validated(kwargs: dict[str, Any], small_pt2: Path) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    with pytest.raises(ConfigError):
        extract_graph_sandboxed(small_pt2, **kwargs)


def test_sandbox_refuses_what_is_not_a_stored_artifact(tmp_path: Path) -> None:
    from nar_plugin.extract.sandbox import extract_graph_sandboxed

    with pytest.raises(UnsupportedModelError):
        extract_graph_sandboxed(tmp_path / "missing.pt2")
    (tmp_path / "resnet50").write_text("not a model")
    with pytest.raises(UnsupportedModelError):
        extract_graph_sandboxed(tmp_path / "resnet50")
    with pytest.raises(NarError):
        extract_graph_sandboxed(write_pt2(tmp_path / "x.pt2", "{}"))

