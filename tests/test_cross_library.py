"""Cross-library benchmark: protocol numbers on hand-made models, rules, committed data."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nar_plugin.corpus.crosslib.dataset import CrossLibItem
from nar_plugin.evaluation.cross_library import (
    LeaveOneOut,
    aten_histogram_embed,
    first_hit_ranks,
    pair_cosines,
    run_cross_library,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "corpus" / "cross_library"


# ------------------------------------------------------------------ two coding styles
class MlpModules(nn.Module):  # library "mods": nn.Sequential of modules
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MlpFunctional(nn.Module):  # library "func": attributes + functional activations
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class DeepMlpModules(nn.Module):  # same family, another configuration (no twin in "func")
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Linear(32 if i == 0 else 128, 128), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CnnModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CnnFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.relu(self.b2(self.c2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class ResModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(_Block(16), _Block(16))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class ResFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.convs = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm2d(16) for _ in range(4))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        for i in (0, 2):
            identity = x
            out = F.relu(self.bns[i](self.convs[i](x)))
            out = self.bns[i + 1](self.convs[i + 1](out))
            out += identity
            x = F.relu(out)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


#: (library, name, family, fine, class, input shape)
MODELS = [
    ("mods", "mlp", "mlp", "mlp3", MlpModules, (1, 32)),
    ("mods", "mlp_deep", "mlp", "mlp5", DeepMlpModules, (1, 32)),
    ("mods", "cnn", "cnn", "cnn2", CnnModules, (1, 3, 32, 32)),
    ("mods", "res", "resnet", "res2", ResModules, (1, 3, 32, 32)),
    ("func", "mlp", "mlp", "mlp3", MlpFunctional, (1, 32)),
    ("func", "cnn", "cnn", "cnn2", CnnFunctional, (1, 3, 32, 32)),
    ("func", "res", "resnet", "res2", ResFunctional, (1, 3, 32, 32)),
]


@pytest.fixture(scope="module")
def items() -> list[CrossLibItem]:
    from nar_plugin.corpus.crosslib.worker import count_aten_ops
    from nar_plugin.extract import extract_graph
    from nar_plugin.extract.torch_module import meta_copy

    out = []
    for lib, name, fam, fine, cls, shape in MODELS:
        torch.manual_seed(0)
        m = cls().eval()
        g = extract_graph(m, (torch.zeros(shape),))
        ops = count_aten_ops(meta_copy(m), (torch.zeros(shape),))
        out.append(CrossLibItem(f"{lib}:{name}", lib, fam, fine, g, ops))
    return out


def _onehot(values: list[str]) -> np.ndarray:
    cols = {v: i for i, v in enumerate(dict.fromkeys(values))}
    out = np.zeros((len(values), len(cols)))
    out[np.arange(len(values)), [cols[v] for v in values]] = 1.0
    return out


def oracle(items: list[CrossLibItem]) -> np.ndarray:
    """Embeds by family and fine label: the perfect method."""
    return np.hstack([_onehot([it.family for it in items]), _onehot([it.fine for it in items])])


def random_embed(items: list[CrossLibItem]) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(len(items), 8))


def test_oracle_is_perfect_and_random_is_not(items: list[CrossLibItem]) -> None:
    res = run_cross_library(items, {"oracle": oracle, "random": random_embed}, k=10, seen=())
    rows = {(r["method"], r["library"]): r for r in res.rows}
    for lib in ("mods", "func"):
        r = rows[("oracle", lib)]
        assert r["MAP@10"] == pytest.approx(1.0) and r["MRR@10"] == pytest.approx(1.0)
        assert r["fine_top1"] == pytest.approx(1.0) and r["fine_median_rank"] == pytest.approx(1.0)
    # mods has 4 queries (all have a family in func); mlp5 has no twin in func: 3 fine queries
    assert rows[("oracle", "mods")]["queries"] == 4 and rows[("oracle", "mods")]["fine_queries"] == 3
    assert rows[("oracle", "func")]["queries"] == 3 and rows[("oracle", "func")]["fine_queries"] == 3
    assert res.mean("random", "MAP@10") < 1.0
    assert res.mean("oracle", "MAP@10") == pytest.approx(1.0)
    md = res.to_markdown()
    assert "mean over unseen libraries" in md and "oracle" in md


def _tied_map(m: int, h: int) -> float:
    """MAP of a query whose whole gallery (m items, h relevant) ties: mean over all orders."""
    from itertools import permutations

    vals = []
    for order in permutations([1] * h + [0] * (m - h)):
        hits = np.cumsum(order)
        vals.append(sum(hits[i] / (i + 1) for i in range(m) if order[i]) / h)
    return float(np.mean(vals))


def test_gallery_others_excludes_the_query_library(items: list[CrossLibItem]) -> None:
    # an embedder that only knows the coding style: with other libraries only, every gallery item
    # ties and the tie-fair MAP is the random expectation; with "all", the query's own-library
    # siblings (mostly of other families) tie at the top and push the relevant items down
    def style(its: list[CrossLibItem]) -> np.ndarray:
        return _onehot([it.library for it in its])

    others = run_cross_library(items, {"style": style}, gallery="others", seen=())
    every = run_cross_library(items, {"style": style}, gallery="all", seen=())
    o = {r["library"]: r for r in others.rows}
    a = {r["library"]: r for r in every.rows}
    # func queries rank mods' 4 tied items: mlp has 2 relevant (mlp3, mlp5), cnn and res 1 each
    assert o["func"]["MAP@10"] == pytest.approx(np.mean([_tied_map(4, 2), _tied_map(4, 1), _tied_map(4, 1)]))
    assert a["mods"]["MAP@10"] < o["mods"]["MAP@10"]


def test_first_hit_rank_is_tie_fair() -> None:
    emb = np.ones((5, 2))
    labels = ["a", "a", "a", "b", "b"]
    # query 0 vs gallery 1..4: all tied, 2 relevant of 4 -> (4 + 1) / (2 + 1)
    assert first_hit_ranks(emb, labels, [0], [1, 2, 3, 4])[0] == pytest.approx(5 / 3)
    emb2 = np.array([[1, 0], [0, 1], [1, 0.1], [1, 0], [0, 1]], dtype=float)
    assert first_hit_ranks(emb2, labels, [0], [1, 2, 3, 4])[0] == pytest.approx(2.0)  # b(3) first, then a(2)


def test_histograms_see_through_coding_style(items: list[CrossLibItem]) -> None:
    # both styles lower to the same ops, so the IR histogram and the ATen histogram pair every
    # model with its twin; the NAR encoder runs and gives a number in [0, 1]
    res = run_cross_library(items, ["histogram", "aten", "nar"], seen=())
    rows = {(r["method"], r["library"]): r for r in res.rows}
    for lib in ("mods", "func"):
        assert rows[("histogram", lib)]["fine_top1"] == pytest.approx(1.0)
        assert rows[("aten", lib)]["fine_top1"] == pytest.approx(1.0)
        assert 0.0 <= rows[("nar", lib)]["MAP@10"] <= 1.0
    pc = pair_cosines(items, [("mods:cnn", "func:cnn")], {"aten": aten_histogram_embed})
    assert pc[0]["aten"] == pytest.approx(1.0)


def test_leave_one_out_trains_once_per_query_library(items: list[CrossLibItem]) -> None:
    calls: list[str] = []

    def train_fn(excluded: str):
        calls.append(excluded)
        return oracle

    res = run_cross_library(items, {"loo": LeaveOneOut(train_fn)}, seen=())
    assert calls == ["mods", "func"]
    assert res.mean("loo", "MAP@10") == pytest.approx(1.0)


def test_protocol_validates_inputs(items: list[CrossLibItem]) -> None:
    with pytest.raises(ValueError, match="gallery"):
        run_cross_library(items, {"o": oracle}, gallery="mine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown methods"):
        run_cross_library(items, ["nope"])
    with pytest.raises(ValueError, match="two libraries"):
        run_cross_library([it for it in items if it.library == "mods"], {"o": oracle})


def test_aten_histogram_zero_row_without_ops(items: list[CrossLibItem]) -> None:
    bare = CrossLibItem("x:y", "x", "mlp", "mlp3", items[0].graph, {})
    e = aten_histogram_embed([items[0], bare])
    assert np.linalg.norm(e[0]) == pytest.approx(1.0) and not e[1].any()


# ------------------------------------------------------------------ rules and install
@pytest.mark.parametrize("library,name,expected", [
    ("pytorchcv", "densenet121", ("densenet", "densenet121")),
    ("pytorchcv", "mobilenetv2_w3d4", ("mobilenet_v2", "mobilenet_v2_075")),
    ("pytorchcv", "bn_vgg16b", ("vgg", "vgg16_bn")),
    ("pytorchcv", "shufflenetv2_w3d2", ("shufflenet_v2", "shufflenet_v2_x1_5")),
    ("pytorchcv", "nasnet_4a1056", ("nasnet", "nasnetamobile")),
    ("pytorchcv", "resnet50_cub", None),
    ("torchvision", "regnet_y_1_6gf", ("regnet", "regnety_016")),
    ("torchvision", "mnasnet0_75", ("mnasnet", "mnasnet_075")),
    ("torchvision", "swin_v2_t", ("swinv2", "swinv2_t_w8")),
    ("timm", "vit_base_patch16_224", ("vit", "vit_b_16")),
    ("timm", "swinv2_tiny_window8_256", ("swinv2", "swinv2_t_w8")),
    ("timm", "legacy_seresnext26_32x4d", ("seresnext", "seresnext26_32x4d")),
    ("timm", "tf_efficientnet_b3", ("efficientnet", "efficientnet_b3")),
    ("pretrainedmodels", "se_resnext50_32x4d", ("seresnext", "seresnext50_32x4d")),
    ("efficientnet_pytorch", "efficientnet-b0", ("efficientnet", "efficientnet_b0")),
])
def test_mapping_rules(library: str, name: str, expected: tuple[str, str] | None) -> None:
    from nar_plugin.corpus.crosslib.families import map_name

    assert map_name(library, name) == expected


def test_install_command_is_no_deps_outside_the_venv(tmp_path: Path) -> None:
    from nar_plugin.corpus.crosslib.install import PINNED, install

    cmd = install(tmp_path / "tp", dry_run=True)
    assert "--no-deps" in cmd and cmd[cmd.index("--target") + 1] == str(tmp_path / "tp")
    assert not any(a.split("==")[0] in ("torch", "torchvision") for a in cmd)  # never the pinned torch
    assert all(f"{n}=={v}" in cmd for n, v in PINNED.items())
    assert not (tmp_path / "tp").exists()


# ------------------------------------------------------------------ the committed benchmark
def test_committed_manifest_is_consistent() -> None:
    from nar_plugin.corpus.crosslib.build import graphs_dir
    from nar_plugin.corpus.crosslib.libraries import LIBRARIES
    from nar_plugin.corpus.crosslib.manifest import MIN_LIBRARIES, load_manifest
    from nar_plugin.corpus.store import load_records

    rows = load_manifest(BENCH / "manifest.json")
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    libs_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        assert r.library in LIBRARIES
        libs_of[r.family].add(r.library)
    assert all(len(v) >= MIN_LIBRARIES for v in libs_of.values()), {f: v for f, v in libs_of.items() if len(v) < 2}
    assert len({r.library for r in rows}) >= 5
    recs = {r["key"]: r for r in load_records(graphs_dir(BENCH))}
    missing = [k for k in keys if k not in recs]
    assert not missing, f"manifest rows with neither a graph nor a failure record: {missing[:10]}"
    for k in keys:
        rec = recs[k]
        assert rec["status"] == "ok" or rec.get("reason"), k
        assert rec["family"] == next(r.family for r in rows if r.key == k)


def test_labels_name_networks_not_training_recipes() -> None:
    """A fine label names a network: HuBERT, DeiT, XLS-R and BEiT v2 models carry the label of the
    network their paper reuses, in the mapping rules and in the committed manifest alike."""
    from nar_plugin.corpus.crosslib.families import SAME_NETWORK, map_name, same_network
    from nar_plugin.corpus.crosslib.libraries import TORCHAUDIO, TRANSFORMERS
    from nar_plugin.corpus.crosslib.manifest import load_manifest

    rows = {r.key: r for r in load_manifest(BENCH / "manifest.json")}
    assert all(same_network(r.family, r.fine) == (r.family, r.fine) for r in rows.values())
    assert not {r.fine for r in rows.values()} & set(SAME_NETWORK)
    for a, b in (("torchaudio:hubert_base", "torchaudio:wav2vec2_base"), ("transformers:hubert/large",
                 "transformers:wav2vec2/large-lv60"), ("timm:deit_small_patch16_224", "timm:vit_small_patch16_224"),
                 ("timm:beitv2_base_patch16_224", "timm:beit_base_patch16_224")):
        assert (rows[a].family, rows[a].fine) == (rows[b].family, rows[b].fine), (a, b)
    # the distilled DeiTs are another network (a second token and head): their own label
    assert rows["timm:deit_base_distilled_patch16_224"].fine == "deit_b_16_distilled"
    assert map_name("timm", "deit_tiny_patch16_224") == ("vit", "vit_ti_16")
    assert same_network(*TORCHAUDIO["hubert_xlarge"]) == ("wav2vec2", "hubert_xlarge")
    assert same_network(*TRANSFORMERS["hubert/default"][:2]) == ("wav2vec2", "wav2vec2_base")


def test_nar_eval_cross_library_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`nar eval --benchmark cross-library` runs the committed benchmark and writes its report."""
    import json

    from nar_plugin.cli import main

    out = tmp_path / "xl.md"
    assert main(["eval", "--benchmark", "cross-library", "--methods", "histogram", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    libs = {r["library"] for r in rows if "library" in r}
    assert {"pytorchcv", "timm", "torchvision"} <= libs, libs
    text = out.read_text()
    assert "`pytorchcv:densenet121` vs `timm:densenet121`" in text and "mean over libraries" in text


def test_crosslib_coverage_command(capsys: pytest.CaptureFixture[str]) -> None:
    from nar_plugin.cli import main

    assert main(["corpus", "crosslib", "coverage", "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| timm |" in text and "| **all** |" in text
    assert main(["corpus", "crosslib", "install", "--dry-run", "--target", "/nonexistent-nar-test"]) == 0
    assert "--no-deps" in capsys.readouterr().out
