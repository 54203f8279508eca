"""Corpus: small builds, resume, failures recorded, versions, NAS generator and its consistency."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from nar_plugin.corpus import (
    CorpusOptions,
    StaleCorpusError,
    build_corpus,
    corpus_stats,
    load_corpus,
    load_records,
)
from nar_plugin.corpus import nas
from nar_plugin.corpus.pool import Task, WorkerPool, run_task
from nar_plugin.corpus.store import CorpusStore, make_record
from nar_plugin.errors import CorruptArtifactError
from nar_plugin.extract.torch_module import graph_from_module
from nar_plugin.graph import ArchGraph, GraphBuilder

# DARTS_V2 from the DARTS repository (genotypes.py)
DARTS_V2 = nas.DartsGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
)


def _tiny_graph() -> ArchGraph:
    b = GraphBuilder()
    x = b.add_input()
    b.add_output([b.add("relu", [x])])
    return b.build()


# ------------------------------------------------------------------ builds
@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Three builds into one directory: a first small one, a second that adds one NAS family
    per space (and nothing else), a third identical to both that must build nothing."""
    out = tmp_path_factory.mktemp("corpus")
    names = {"timm": ["resnet18"], "torchvision": ["resnet18"]}
    s1 = build_corpus(["timm", "torchvision", "nas"], out, workers=1, progress=False,
                      options=CorpusOptions(names=names, limit=1, nas_members=2))
    more = CorpusOptions(names=names, limit=2, nas_members=2)
    s2 = build_corpus(["nas"], out, workers=1, progress=False, options=more)
    s3 = build_corpus(["timm", "torchvision", "nas"], out, workers=1, progress=False, options=more)
    return out, [s1, s2, s3]


def test_small_build_counts_and_load(small_corpus: tuple[Path, list]) -> None:
    out, (s1, _, _) = small_corpus
    assert s1.sources["timm"].ok == 1 and s1.sources["torchvision"].ok == 1
    assert s1.sources["nas"].ok == 4  # one DARTS + one NB201 family, two members each
    items = load_corpus(out)
    by_key = {i.key: i for i in items}
    assert by_key["timm:resnet18"].family == "resnet"
    assert by_key["tv:resnet18"].family == "resnet"  # shares timm's family label
    assert by_key["timm:resnet18"].graph.graph_hash == by_key["tv:resnet18"].graph.graph_hash
    assert all(i.graph.num_nodes > 10 for i in items)
    nas_families = Counter(i.family for i in items if i.source == "nas")
    assert len(nas_families) == 4 and set(nas_families.values()) == {2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "nar-corpus" and manifest["vocab_version"] == 1
    assert manifest["sources"]["nas"]["ok"] == 8


def test_resume_builds_only_new_items(small_corpus: tuple[Path, list]) -> None:
    _, (_, s2, s3) = small_corpus
    assert s2.sources["nas"].tried == 4 and s2.sources["nas"].cached == 4  # the two new families
    assert all(s.tried == 0 for s in s3.sources.values())
    assert s3.sources["nas"].ok == 8 and s3.sources["timm"].ok == 1


def test_stats_and_cli(small_corpus: tuple[Path, list], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = small_corpus
    stats = corpus_stats(out)
    assert stats.sources["timm"].ok == 1 and stats.size_bytes > 0
    from nar_plugin.cli import main

    assert main(["corpus", "stats", "--out", str(out)]) == 0
    assert "timm" in capsys.readouterr().out
    assert main(["corpus", "stats", "--out", str(out), "--markdown"]) == 0
    assert "### Counts per source" in capsys.readouterr().out
    assert stats.to_dict()["sources"]["nas"]["ok"] == 8


def test_failure_is_recorded_not_raised() -> None:
    bad = Task("nas:bogus", "nas", "bogus", "f", {"space": "no-such-space"})
    rec = run_task(bad)
    assert rec["status"] == "error" and "no-such-space" in rec["reason"] and "graph" not in rec
    good = nas.nas_tasks(0, 1, 0, 1)[0]
    got: list[dict] = []
    with WorkerPool(1, warm=["nas"], timeout_s=60) as pool:
        pool.run([bad, good], got.append)
    assert {r["key"]: r["status"] for r in got} == {"nas:bogus": "error", good.key: "ok"}


def test_timeout_kills_worker_and_build_continues() -> None:
    slow = Task("timm:vit_base_patch16_224", "timm", "vit_base_patch16_224", "vision_transformer",
                {"name": "vit_base_patch16_224"})
    fast = nas.nas_tasks(0, 0, 1, 1)[0]
    got: list[dict] = []
    # no warm imports: the task itself imports timm, which alone takes longer than the limit
    with WorkerPool(1, warm=[], timeout_s=0.05) as pool:
        pool.run([slow], got.append)
        pool.timeout_s = 60
        pool.run([fast], got.append)
        assert pool.restarts >= 1
    assert got[0]["status"] == "error" and got[0]["category"] == "timeout"
    assert got[1]["status"] == "ok"


def test_skipped_items_are_recorded() -> None:
    from nar_plugin.corpus.torchvision_source import torchvision_family

    fam = torchvision_family("quantized_resnet18")
    rec = run_task(Task("tv:quantized_resnet18", "torchvision", "quantized_resnet18", fam, {"name": "quantized_resnet18"}))
    assert rec["status"] == "skipped" and "quantizable copy" in rec["reason"]
    assert torchvision_family("maskrcnn_resnet50_fpn") == "detection.rcnn"
    assert torchvision_family("vgg16") == "vgg"
    assert torchvision_family("mobilenet_v2") == "efficientnet"  # timm's module for the same graph


# ------------------------------------------------------------------ store and versions
def test_version_mismatch_is_detected(tmp_path: Path) -> None:
    store = CorpusStore(tmp_path)
    store.append("nas", [make_record("k", "nas", "n", "f", "ok", graph=_tiny_graph())])
    m = json.loads(store.manifest_path.read_text())
    m["vocab_version"] = 0
    store.manifest_path.write_text(json.dumps(m))
    with pytest.raises(StaleCorpusError, match="vocab_version") as ei:
        load_corpus(tmp_path)
    assert isinstance(ei.value, ValueError) and "--rebuild" in str(ei.value)
    with pytest.raises(StaleCorpusError):
        build_corpus(["nas"], tmp_path, workers=1, progress=False)
    CorpusStore(tmp_path, rebuild=True)  # clears the stale shards and starts a fresh manifest
    assert list(load_records(tmp_path)) == []
    m = json.loads(store.manifest_path.read_text())
    m["format_version"] = 99
    store.manifest_path.write_text(json.dumps(m))
    with pytest.raises(StaleCorpusError, match="format_version"):
        load_corpus(tmp_path)


def test_shards_without_manifest_and_missing_corpus(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "timm.jsonl.gz").write_bytes(gzip.compress(b"{}\n"))
    with pytest.raises(CorruptArtifactError, match="no manifest.json"):
        CorpusStore(tmp_path)


def test_truncated_tail_is_ignored_and_repaired(tmp_path: Path) -> None:
    store = CorpusStore(tmp_path)
    store.append("nas", [make_record("a", "nas", "a", "f", "ok", graph=_tiny_graph())])
    good = store.shard_path("nas").stat().st_size
    blob = gzip.compress(json.dumps(make_record("b", "nas", "b", "f", "error", reason="x")).encode())
    with open(store.shard_path("nas"), "ab") as f:
        f.write(blob[: len(blob) // 2])  # a batch cut off by a crash
    assert [r["key"] for r in store.records("nas")] == ["a"]
    store.records("nas", repair=True)
    assert store.shard_path("nas").stat().st_size == good
    store.append("nas", [make_record("b", "nas", "b", "f", "error", reason="boom")])
    store.compact("nas")
    recs = {r["key"]: r for r in store.records("nas")}
    assert recs["b"]["reason"] == "boom" and recs["a"]["status"] == "ok"
    assert [i.key for i in load_corpus(tmp_path)] == ["a"]


def test_dedupe_modes(tmp_path: Path) -> None:
    store = CorpusStore(tmp_path)
    g = _tiny_graph()
    store.append("timm", [make_record(k, "timm", k, f, "ok", graph=g) for k, f in
                          (("a", "f1"), ("b", "f1"), ("c", "f2"))])
    assert [i.key for i in load_corpus(tmp_path)] == ["a", "b", "c"]
    assert [i.key for i in load_corpus(tmp_path, dedupe=True)] == ["a", "c"]
    assert [i.key for i in load_corpus(tmp_path, dedupe="global")] == ["a"]
    with pytest.raises(ValueError):
        load_corpus(tmp_path, dedupe="yes")


def test_make_record_validates() -> None:
    with pytest.raises(ValueError):
        make_record("k", "s", "n", "f", "ok")
    with pytest.raises(ValueError):
        make_record("k", "s", "n", "f", "weird", reason="x")


# ------------------------------------------------------------------ NAS
def test_nas_generator_is_deterministic_and_family_rule_holds() -> None:
    a = nas.nas_tasks(seed=3, darts_families=6, nb201_families=6, members=4)
    b = nas.nas_tasks(seed=3, darts_families=6, nb201_families=6, members=4)
    c = nas.nas_tasks(seed=4, darts_families=6, nb201_families=6, members=4)
    assert a == b and a != c
    more = nas.nas_tasks(seed=3, darts_families=8, nb201_families=7, members=4)
    assert [t for t in more if t.key.startswith("nas:darts")][:24] == a[:24]  # prefix-stable
    assert [t for t in more if t.key.startswith("nas:nb201")][:24] == a[24:]
    assert len({t.key for t in a}) == len(a) == 48
    fams: dict[str, list[Task]] = defaultdict(list)
    for t in a:
        fams[t.family].append(t)
    assert len(fams) == 12 and all(len(v) == 4 for v in fams.values())
    for fam, members in fams.items():
        if fam.startswith("darts-"):
            normals = {tuple(map(tuple, t.spec["normal"])) for t in members}
            assert len(normals) == 1 and nas.darts_family(next(iter(normals))) == fam
            scales = {(t.spec["layers"], t.spec["C"]) for t in members}
            assert len(scales) == 4  # members differ in depth/width
        else:
            cells = {t.spec["cell"] for t in members}
            assert len(cells) == 1 and nas.nb201_family(nas.Nb201Cell.from_string(next(iter(cells)))) == fam
            assert any(t.spec["N"] == 5 and t.spec["C"] == 16 for t in members)
    graphs = [run_task(t) for t in a[:4]]
    assert all(r["status"] == "ok" for r in graphs)
    assert len({r["info"]["graph_hash"] for r in graphs}) == 4


def test_nb201_canonical_form_and_isomorphic_cells_share_a_family() -> None:
    cell = nas.Nb201Cell.from_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|")
    # node 2 has no input, so its edge to node 3 computes nothing
    assert cell.canonical().op(3, 2) == "none"
    assert nas.Nb201Cell.from_string(str(cell)) == cell
    # parallel branches through node 1 or node 2 are the same cell up to isomorphism
    c1 = nas.Nb201Cell.from_string("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|")
    c2 = nas.Nb201Cell.from_string("|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|")
    assert c1 != c2 and nas.nb201_family(c1) == nas.nb201_family(c2)
    with pytest.raises(ValueError):
        nas.Nb201Cell(("bogus",) * 6)
    with pytest.raises(ValueError):
        nas.DartsGenotype(normal=(("sep_conv_3x3", 5),) * 8, reduce=DARTS_V2.reduce)


def _extract(model: torch.nn.Module) -> ArchGraph:
    return graph_from_module(model.eval(), (torch.zeros(1, 3, 32, 32),))


def test_generated_darts_graph_equals_extracted_reference_model() -> None:
    from nar_plugin.corpus.nas_reference import DartsNetworkCIFAR

    rng = random.Random(0)
    # DARTS_V2, random genotypes, and a cell that never reads state 0 (dead preprocess0)
    no_s0 = (("sep_conv_3x3", 1), ("max_pool_3x3", 1), ("dil_conv_5x5", 1), ("skip_connect", 2),
             ("avg_pool_3x3", 1), ("sep_conv_5x5", 3), ("skip_connect", 1), ("dil_conv_3x3", 4))
    genos = [(DARTS_V2, 16, 8), (nas.DartsGenotype(no_s0, no_s0), 16, 5)]
    genos += [(nas.DartsGenotype(nas.sample_darts_cell(rng), nas.sample_darts_cell(rng)), 24, 6) for _ in range(2)]
    for geno, C, layers in genos:
        with torch.device("meta"):
            model = DartsNetworkCIFAR(geno, C=C, layers=layers)
        extracted = _extract(model)
        generated = nas.darts_graph(geno, C=C, layers=layers)
        assert generated.graph_hash == extracted.graph_hash, str(geno)
        assert generated.ops == extracted.ops and generated.attrs == extracted.attrs


def test_generated_nb201_graph_equals_extracted_reference_model() -> None:
    from nar_plugin.corpus.nas_reference import Nb201TinyNetwork

    rng = random.Random(1)
    cells = [nas.sample_nb201_cell(rng) for _ in range(3)]
    cells.append(nas.Nb201Cell.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"))
    for cell, (C, N) in zip(cells, [(16, 1), (8, 2), (16, 3), (16, 5)]):
        with torch.device("meta"):
            model = Nb201TinyNetwork(cell, C=C, N=N)
        extracted = _extract(model)
        generated = nas.nb201_graph(cell, C=C, N=N)
        assert generated.graph_hash == extracted.graph_hash, str(cell)
        assert generated.edges == extracted.edges


# ------------------------------------------------------------------ transformers planning
def test_transformers_families_modalities_and_variants() -> None:
    pytest.importorskip("transformers")
    import transformers

    from nar_plugin.corpus import transformers_source as ts

    assert ts.hf_family("clip_text_model") == "clip" and ts.hf_family("bert") == "bert"
    assert ts.modality(transformers.BertModel) == "text"
    assert ts.modality(transformers.ViTModel) == "vision"
    assert ts.modality(transformers.Wav2Vec2Model) == "audio"
    assert ts.modality(transformers.CLIPModel) == "multimodal"
    assert ts.model_class("align_text_model") is transformers.AlignTextModel  # no AutoModel entry
    variants = dict(ts.variant_overrides(ts.make_config("bert"), max_layers=24))
    assert set(variants) == {"L2", "L4", "L6", "L24", "W0.5L4", "W2L4"}
    assert variants["W0.5L4"] == {"num_hidden_layers": 4, "hidden_size": 384, "intermediate_size": 1536}
    gpt2 = dict(ts.variant_overrides(ts.make_config("gpt2")))
    assert gpt2["L2"] == {"n_layer": 2}  # attribute_map resolved
    assert ts.make_config("gpt2", gpt2["L2"]).num_hidden_layers == 2
    t5 = dict(ts.variant_overrides(ts.make_config("t5")))
    assert t5["L2"] == {"num_layers": 2, "num_decoder_layers": 2}
    clip = dict(ts.variant_overrides(ts.make_config("clip")))
    cfg = ts.make_config("clip", clip["L2"])
    assert cfg.text_config.num_hidden_layers == 2 and cfg.vision_config.num_hidden_layers == 2
    swin = dict(ts.variant_overrides(ts.make_config("swin")))
    assert swin["D0.5"] == {"depths": [1, 1, 3, 1]}
    opts = CorpusOptions(names={"transformers": ["bert"]})
    tasks = ts.plan({}, opts)
    assert [t.key for t in tasks] == ["hf:bert"]  # variants wait until the default has built
    ok = {"hf:bert": {"status": "ok"}}
    assert len(ts.plan(ok, opts)) == 7


def test_options_validation() -> None:
    with pytest.raises(ValueError):
        CorpusOptions(names={"nope": ["x"]})
    with pytest.raises(ValueError):
        CorpusOptions(timeout_s=0)
    with pytest.raises(ValueError):
        build_corpus(["nope"], "/tmp/never-created-nar-corpus", progress=False)
