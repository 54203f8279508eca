"""Tests for nar_plugin.training: losses, augmentation, data selection and batches, the loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

# tests/ is on sys.path (rootdir conftest)
from fixtures.synthetic_graphs import branchy, resnet_like, tiny_corpus

from nar_plugin.model.features import collate, prepare
from nar_plugin.model.weights import load_weights
from nar_plugin.training.augment import augment_graph
from nar_plugin.training.config import TrainConfig
from nar_plugin.training.data import (
    CorpusEntry,
    load_training_corpus,
    make_split,
    pk_batches,
    select_items,
)
from nar_plugin.training.loop import TrainResult, train
from nar_plugin.training.losses import motif_info_nce, supcon_loss


# ===================================================================== losses
def test_supcon_loss_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2])
    emb = torch.randn(5, 8, generator=gen, requires_grad=True)
    loss = supcon_loss(emb, labels, 0.1)
    loss.backward()
    assert emb.grad is not None and float(emb.grad.abs().sum()) > 0
    # well-separated clusters give a lower loss than mixed ones
    good = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0], [-1.0, -1.0]])
    bad = good[[0, 2, 1, 3, 4]]
    assert supcon_loss(good, labels, 0.1) < supcon_loss(bad, labels, 0.1)
    # no positives at all: zero, still differentiable
    lone = torch.randn(3, 4, generator=gen, requires_grad=True)
    zero = supcon_loss(lone, torch.tensor([0, 1, 2]))
    zero.backward()
    assert zero.item() == 0.0
    with pytest.raises(ValueError):
        supcon_loss(emb, labels[:3])
    with pytest.raises(ValueError):
        supcon_loss(emb, labels, temperature=0.0)


def test_supcon_loss_matches_direct_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(4, 3, generator=gen), dim=1)
    labels = torch.tensor([0, 0, 0, 1])
    t = 0.5
    sims = emb @ emb.T / t
    total, anchors = 0.0, 0
    for i in range(4):
        pos = [p for p in range(4) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = torch.logsumexp(torch.stack([sims[i, a] for a in range(4) if a != i]), 0)
        total += float(sum(-(sims[i, p] - denom) for p in pos) / len(pos))
        anchors += 1
    assert supcon_loss(emb, labels, t).item() == pytest.approx(total / anchors, rel=1e-5)


def test_motif_info_nce_matches_direct_formula_and_masks_same_type() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=gen)
    b = a + 0.01 * torch.randn(6, 8, generator=gen)
    assert motif_info_nce(a, b, 0.1) < motif_info_nce(a, b[torch.tensor([1, 2, 3, 4, 5, 0])], 0.1)
    logits = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T / 0.1
    row = -torch.log_softmax(logits, dim=1).diagonal().mean()
    col = -torch.log_softmax(logits.T, dim=1).diagonal().mean()
    assert motif_info_nce(a, b, 0.1).item() == pytest.approx(0.5 * (row + col).item(), rel=1e-5)
    # masked same-type negatives: duplicates do not count as negatives
    good = torch.repeat_interleave(torch.eye(16)[:4], 2, dim=0)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert motif_info_nce(good, good, type_ids=ids) < motif_info_nce(good, good)
    assert float(motif_info_nce(a[:1], b[:1])) == 0.0
    with pytest.raises(ValueError):
        motif_info_nce(a, a[:3])
    with pytest.raises(ValueError):
        motif_info_nce(a, b, temperature=0.0)


# ===================================================================== augmentation
def test_augment_graph_is_a_valid_style_variant() -> None:
    g = resnet_like(4)
    rng = np.random.default_rng(0)
    a = augment_graph(g, rng, p_drop=0.5, p_dup=0.2)
    assert a.num_nodes != g.num_nodes or a.edges != g.edges
    assert all(s < d for s, d in a.edges)  # still a topological order
    assert augment_graph(g, np.random.default_rng(1), p_drop=0, p_dup=0, jitter=0).graph_hash == g.graph_hash
    non_act = [o for o in g.ops if o != "relu"]
    assert [o for o in a.ops if o != "relu"].count("conv") == non_act.count("conv")
    # only the order changes without drops and duplicates: same architecture, same hash
    b = branchy()
    shuffled = augment_graph(b, np.random.default_rng(2), p_drop=0, p_dup=0, jitter=6.0)
    assert shuffled.ops != b.ops and shuffled.graph_hash == b.graph_hash


# ===================================================================== data
def test_pk_batches_cover_every_item_once_with_family_chunks() -> None:
    codes = np.repeat(np.arange(5), [7, 3, 1, 4, 5])
    batches = pk_batches(codes, per_family=3, batch_size=6, rng=np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(codes.size))
    assert all(b.size >= 6 for b in batches[:-1])
    # chunks of one family are never split: a family of n items forms at most ceil(n / 3) runs
    runs: dict[int, int] = {}
    for b in batches:
        fam = codes[b]
        for i in np.flatnonzero(np.r_[True, fam[1:] != fam[:-1]]):
            runs[int(fam[i])] = runs.get(int(fam[i]), 0) + 1
    assert all(runs[f] <= -(-n // 3) for f, n in enumerate(np.bincount(codes)))
    again = pk_batches(codes, 3, 6, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    other = pk_batches(codes, 3, 6, np.random.default_rng(1))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other))


def test_jsonl_corpus_selection_and_split(tmp_path: Path) -> None:
    corpus = tiny_corpus()
    lines = [json.dumps({"key": e.key, "family": e.family, "graph": e.graph.to_dict(), "source": "a"})
             for e in corpus]
    lines.append(json.dumps({"key": "bad", "family": "x", "graph": {}, "status": "error"}))
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n\n")
    entries = load_training_corpus(tmp_path)
    assert [e.key for e in entries] == sorted(e.key for e in corpus)
    assert entries[0].graph.graph_hash == next(e for e in corpus if e.key == entries[0].key).graph.graph_hash
    assert load_training_corpus(tmp_path, sources=["b"]) == []
    assert len(load_training_corpus([tmp_path, tmp_path])) == len(corpus)  # one copy per key
    with pytest.raises(FileNotFoundError):
        load_training_corpus(tmp_path / "nowhere")
    picked = select_items(entries, max_nodes=10_000, max_per_family=4, seed=0)
    assert len(picked) == 12 and picked == select_items(entries, 10_000, 4, 0)
    assert [e.key for e in picked] != [e.key for e in select_items(entries, 10_000, 4, 1)]
    small = select_items(entries, max_nodes=30, max_per_family=0, seed=0)
    assert small and all(2 <= e.graph.num_nodes <= 30 for e in small) and len(small) < len(entries)
    split = make_split(picked, "by_family", seed=0, test_frac=0.34)
    train_fams = {picked[int(i)].family for i in split.train}
    assert train_fams.isdisjoint({picked[int(i)].family for i in split.test})
    assert make_split(picked, "none", 0).train.size == len(picked)
    with pytest.raises(ValueError, match="unknown split"):
        make_split(picked, "by_colour", 0)


# ===================================================================== loop
_TINY = {"device": "cpu", "progress": False, "hidden": 16, "batch_size": 8, "per_family": 3}


def _full_batch_supcon(res: TrainResult, entries: list[CorpusEntry]) -> float:
    model, _, _ = load_weights(res.weights_path, res.card_path)
    fams = sorted({e.family for e in entries})
    y = torch.tensor([fams.index(e.family) for e in entries])
    with torch.no_grad():
        return float(supcon_loss(model(collate([prepare(e.graph) for e in entries])), y, 0.1))


def test_training_reaches_a_loss_an_untrained_encoder_cannot(tmp_path: Path) -> None:
    entries = tiny_corpus()  # 3 families x 6: the best SupCon loss is log(5), chance about log(17)
    kw = dict(seed=0, entries=entries, split="none", eval_every=0, save_checkpoints=False, **_TINY)
    untrained = _full_batch_supcon(train(None, tmp_path / "e0", epochs=0, **kw), entries)
    trained = _full_batch_supcon(train(None, tmp_path / "e8", epochs=8, **kw), entries)
    assert untrained > 2.5
    assert trained < 1.8 and trained >= math.log(5) - 1e-3


def test_train_writes_weights_card_and_checkpoint(tmp_path: Path) -> None:
    res = train(None, tmp_path, epochs=2, seed=0, entries=tiny_corpus(), eval_every=1, test_frac=0.4,
                keep_checkpoint=True, **_TINY)
    assert res.weights_path.is_file() and res.weights_path.stat().st_size < 5_000_000
    meta = json.loads(res.card_path.read_text())
    assert list(meta)[:8] == ["format", "format_version", "vocab_version", "motif_version", "config",
                              "weights_file", "weights_sha256", "encoder_version"]
    assert meta["config"]["num_classes"] == 0 and meta["seed"] == 0
    assert meta["encoder_version"] == res.encoder_version
    assert meta["corpus"]["split"]["test"] == res.num_test > 0
    assert [h["epoch"] for h in res.history] == [1, 2] and "test_MAP@20" in res.history[0]
    assert "by_model" in res.metrics and res.metrics["by_model"]["queries"] == res.num_test
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and set(ckpt["model"]) == set(torch.load(res.weights_path, weights_only=True))
    again = train(None, tmp_path / "b", epochs=1, seed=0, entries=tiny_corpus(), eval_every=1, test_frac=0.4,
                  **_TINY)
    assert not (again.weights_path.parent / "checkpoint.pt").exists()


def test_train_is_deterministic_and_keeps_global_rng(tmp_path: Path) -> None:
    kw = dict(epochs=1, seed=3, entries=tiny_corpus(), eval_every=0, save_checkpoints=False, **_TINY)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train(None, tmp_path / "a", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = train(None, tmp_path / "b", **kw)
    assert a.encoder_version == b.encoder_version  # identical weights (hash in the version)
    assert a.weights_path.read_bytes() == b.weights_path.read_bytes()
    c = train(None, tmp_path / "c", **{**kw, "seed": 4})
    assert c.weights_path.read_bytes() != a.weights_path.read_bytes()


_ABLATION = {"epochs": 1, "seed": 0, "entries": tiny_corpus()[:9], "device": "cpu", "progress": False, "hidden": 8,
                 "batch_size": 6, "eval_every": 0, "save_checkpoints": False, "split": "none"}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(None, tmp_path_factory.mktemp("default"), **_ABLATION)


@pytest.mark.parametrize("switches,losses", [
    ({"motif_loss": False}, {"loss", "graph"}),
    ({"graph_loss": False}, {"loss", "motif"}),
    ({"ce_loss": True}, {"loss", "graph", "motif", "ce"}),
    ({"steps": 1}, {"loss", "graph", "motif"}),
    ({"augment": False}, {"loss", "graph", "motif"}),
])
def test_ablation_switches_change_the_training(tmp_path: Path, default_run: TrainResult, switches: dict,
                                               losses: set[str]) -> None:
    assert set(default_run.history[0]) - {"epoch", "seconds"} == {"loss", "graph", "motif"}
    res = train(None, tmp_path, **{**_ABLATION, **switches})
    assert set(res.history[0]) - {"epoch", "seconds"} == losses
    assert res.weights_path.read_bytes() != default_run.weights_path.read_bytes()
    meta = json.loads(res.card_path.read_text())
    assert all(meta["train_config"][k] == v for k, v in switches.items())
    assert meta["config"]["num_classes"] == 0  # a classification head is never shipped
    if "steps" in switches:  # motif sampling is part of the encoder version
        assert res.encoder_version.split("-")[2] != default_run.encoder_version.split("-")[2]  # config hash


def test_architecture_switches_change_the_parameter_set(tmp_path: Path, default_run: TrainResult) -> None:
    res = train(None, tmp_path, **{**_ABLATION, "node_layers": 0, "node_readout": False, "conv": "gcn"})
    before = torch.load(default_run.weights_path, weights_only=True)
    after = torch.load(res.weights_path, weights_only=True)
    assert any(k.startswith("fn.") for k in before) and not any(k.startswith("fn.") for k in after)
    assert before["proj.0.weight"].shape == (8, 32) and after["proj.0.weight"].shape == (8, 16)
    assert "fs.layers.0.fwd.eps" in before and "fs.layers.0.fwd.lin.weight" in after  # GIN vs GCN


def test_train_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TrainConfig(motif_loss=False, graph_loss=False, ce_loss=False)
    with pytest.raises(ValueError, match="split"):
        TrainConfig(split="random")
    with pytest.raises(ValueError, match="training items"):
        train(None, "/nonexistent-never-written", entries=tiny_corpus()[:1], progress=False)
    with pytest.raises(ValueError, match="corpus_dir or entries"):
        train(None, "/nonexistent-never-written", progress=False)
