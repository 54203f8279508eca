"""Tests for nar_plugin.model.encoder, nar_plugin.training.losses and nar_plugin.training.loop (tiny hand-built graphs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nar_plugin.model.encoder import EncoderConfig, NAREncoder, collate, config_hash, prepare
from nar_plugin.graph import ArchGraph, GraphBuilder, NodeAttrs
from nar_plugin.graph import width_bucket as wb
from nar_plugin.training.losses import augment_graph, motif_info_nce, supcon_loss
from nar_plugin.training.loop import CorpusEntry, TrainConfig, train

Ref = frozenset[int]


# ===================================================================== builders
def _conv(b: GraphBuilder, x: Ref, i: int, o: int, k: int = 3, s: int = 1) -> Ref:
    return b.add("conv", [x], NodeAttrs(kernel=k, stride=s, width_in=wb(i), width_out=wb(o)))


def resnet_like(blocks: int, width: int = 64, act: str = "relu") -> ArchGraph:
    b = GraphBuilder()
    x = _conv(b, b.add_input(), 3, width, 7, 2)
    x = b.add(act, [b.add("batch_norm", [x])])
    for _ in range(blocks):
        y = b.add(act, [b.add("batch_norm", [_conv(b, x, width, width)])])
        y = b.add("batch_norm", [_conv(b, y, width, width)])
        x = b.add(act, [b.add("add", [x, y])])
    x = b.add("adaptive_avg_pool", [x])
    b.add_output([b.add("linear", [x], NodeAttrs(width_in=wb(width), width_out=wb(1000)))])
    return b.build({"name": f"resnet_like{blocks}"})


def transformer_like(layers: int, d: int = 256) -> ArchGraph:
    b = GraphBuilder()
    x = b.add("embedding", [b.add_input()], NodeAttrs(width_in=wb(30000), width_out=wb(d)))
    for _ in range(layers):
        q, k, v = (b.add("linear", [x], NodeAttrs(width_in=wb(d), width_out=wb(d))) for _ in range(3))
        a = b.add("linear", [b.add("attention", [q, k, v])], NodeAttrs(width_in=wb(d), width_out=wb(d)))
        x = b.add("layer_norm", [b.add("add", [x, a])])
        h = b.add("gelu", [b.add("linear", [x], NodeAttrs(width_in=wb(d), width_out=wb(4 * d)))])
        h = b.add("linear", [h], NodeAttrs(width_in=wb(4 * d), width_out=wb(d)))
        x = b.add("layer_norm", [b.add("add", [x, h])])
    b.add_output([x])
    return b.build({"name": f"transformer_like{layers}"})


def branchy(blocks: int = 3) -> ArchGraph:
    """Inception-like: three different parallel branches per block, concatenated."""
    b = GraphBuilder()
    x = _conv(b, b.add_input(), 3, 32)
    for _ in range(blocks):
        p1 = b.add("relu", [_conv(b, x, 32, 16, k=1)])
        p2 = b.add("relu", [b.add("batch_norm", [_conv(b, x, 32, 8, k=5)])])
        p3 = b.add("max_pool", [x], NodeAttrs(kernel=3))
        x = b.add("cat", [p1, p2, p3])
    b.add_output([x])
    return b.build({"name": f"branchy{blocks}"})


def single_node() -> ArchGraph:
    return ArchGraph(["input"], [NodeAttrs()], [])


# ===================================================================== encoder
def test_prepare_partitions_nodes_and_edges() -> None:
    g = resnet_like(4)
    p = prepare(g, contexts=8, seed=0)
    assert p.x.shape == (g.num_nodes, 6) and p.x.dtype == torch.long
    assert p.node_to_instance.shape == (g.num_nodes,)
    assert int(p.node_to_instance.max()) + 1 == p.num_instances
    # intra-instance edges + edges crossing instances == all edges
    owner = p.node_to_instance
    crossing = sum(1 for s, d in g.edges if owner[s] != owner[d])
    assert p.edge_index.shape[1] + crossing == g.num_edges
    assert bool((owner[p.edge_index[0]] == owner[p.edge_index[1]]).all())
    assert p.num_contexts > 0 and p.ctx_ring.any()
    assert p.ctx_edge_index.max() < p.ctx_nodes.numel()


def test_forward_shapes_unit_norm_and_batch_equivalence() -> None:
    graphs = [resnet_like(2), resnet_like(5), transformer_like(3), single_node()]
    torch.manual_seed(0)
    enc = NAREncoder(EncoderConfig(hidden=16, num_classes=3)).eval()
    prepared = [prepare(g) for g in graphs]
    with torch.no_grad():
        emb = enc(collate(prepared))
        singles = torch.cat([enc(collate([p])) for p in prepared])
    assert emb.shape == (4, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(emb, singles, atol=1e-5)  # batching does not change embeddings


def test_training_outputs_shapes() -> None:
    graphs = [resnet_like(3), transformer_like(4)]
    enc = NAREncoder(hidden=16, num_classes=2)
    batch = collate([prepare(g, contexts=4, seed=1) for g in graphs])
    out = enc.training_outputs(batch)
    assert out["proj"].shape == (2, 128)
    assert out["logits"].shape == (2, 2)
    assert out["motif"].shape == out["context"].shape == (batch.num_contexts, 16)
    assert out["motif_type"].shape == (batch.num_contexts,)
    loss = motif_info_nce(out["motif"], out["context"], type_ids=out["motif_type"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in enc.fs.parameters())
    assert all(p.grad is not None for p in enc.fn.parameters())


@pytest.mark.parametrize("conv", ["gcn", "gin", "gat"])
@pytest.mark.parametrize("node_layers", [0, 2])
def test_every_layer_type_is_batch_and_node_order_invariant(conv: str, node_layers: int) -> None:
    graphs = [resnet_like(3), branchy(), resnet_like(4, act="gelu")]
    torch.manual_seed(0)
    enc = NAREncoder(hidden=16, conv=conv, node_layers=node_layers, node_readout=node_layers > 0).eval()
    # same graph, nodes in another topological order (what another tracer would give)
    shuffled = [augment_graph(g, np.random.default_rng(i), p_drop=0, p_dup=0, jitter=6.0)
                for i, g in enumerate(graphs)]
    assert any(s.ops != g.ops for s, g in zip(shuffled, graphs))
    with torch.no_grad():
        emb = enc(collate([prepare(g) for g in graphs]))
        singles = torch.cat([enc(collate([prepare(g)])) for g in graphs])
        again = enc(collate([prepare(g) for g in shuffled]))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb, singles, atol=1e-5)
    assert torch.allclose(emb, again, atol=1e-4)
    assert not torch.allclose(emb[0], emb[2], atol=1e-3)  # relu vs gelu blocks differ


def test_node_stage_sees_wiring_across_motifs() -> None:
    """Two graphs with the same motifs and op counts but another wiring between them get
    different embeddings only when messages cross motif boundaries or the macro graph differs."""
    def chain(skip_from_start: bool) -> ArchGraph:
        b = GraphBuilder()
        x0 = _conv(b, b.add_input(), 3, 64)
        x = x0
        outs = []
        for _ in range(4):
            x = b.add("relu", [b.add("batch_norm", [_conv(b, x, 64, 64)])])
            outs.append(x)
        y = b.add("add", [x0 if skip_from_start else outs[1], x])
        b.add_output([y])
        return b.build()

    a, c = chain(True), chain(False)
    assert a.op_histogram() == c.op_histogram() and a.graph_hash != c.graph_hash
    torch.manual_seed(0)
    enc = NAREncoder(hidden=16, conv="gin", node_layers=2, node_readout=True).eval()
    with torch.no_grad():
        ea, ec = enc(collate([prepare(a)])), enc(collate([prepare(c)]))
    assert not torch.allclose(ea, ec, atol=1e-4)


def test_repr_reset_and_config() -> None:
    enc = NAREncoder(hidden=16)
    assert "hidden=16" in repr(enc) and "Fs=2" in repr(enc)
    before = enc.op_emb.weight.detach().clone()
    enc.reset_parameters()
    assert not torch.equal(before, enc.op_emb.weight)
    cfg = EncoderConfig(hidden=16)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert config_hash(cfg) == config_hash(EncoderConfig(hidden=16, num_classes=7))  # head ignored
    assert config_hash(cfg) != config_hash(EncoderConfig(hidden=16, steps=3))
    with pytest.raises(ValueError):
        EncoderConfig(conv="transformer")
    with pytest.raises(ValueError):
        EncoderConfig.from_dict({"hidden": 8, "bogus": 1})


# ===================================================================== losses
def test_supcon_and_motif_loss_behave() -> None:
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    good = torch.repeat_interleave(torch.eye(16)[:4], 2, dim=0)
    assert supcon_loss(good, labels, 0.1) < supcon_loss(z, labels, 0.1)
    assert motif_info_nce(good, good) < motif_info_nce(z, z.flip(0))
    # masked same-type negatives: duplicates do not count as negatives
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert motif_info_nce(good, good, type_ids=ids) < motif_info_nce(good, good)
    assert float(motif_info_nce(z[:1], z[:1])) == 0.0


def test_augment_graph_is_a_valid_style_variant() -> None:
    g = resnet_like(4)
    rng = np.random.default_rng(0)
    a = augment_graph(g, rng, p_drop=0.5, p_dup=0.2)
    assert a.num_nodes != g.num_nodes or a.edges != g.edges
    assert all(s < d for s, d in a.edges)  # still a topological order
    assert augment_graph(g, np.random.default_rng(1), p_drop=0, p_dup=0, jitter=0).graph_hash == g.graph_hash
    non_act = [o for o in g.ops if o != "relu"]
    assert [o for o in a.ops if o != "relu"].count("conv") == non_act.count("conv")


# ===================================================================== training
def _tiny_corpus() -> list[CorpusEntry]:
    out = []
    for n in range(2, 8):
        out.append(CorpusEntry(f"r{n}", "resnet", resnet_like(n, 32 * (1 + n % 2)), "synthetic"))
        out.append(CorpusEntry(f"t{n}", "transformer", transformer_like(n // 2 + 1, 64 * (1 + n % 2)), "synthetic"))
        out.append(CorpusEntry(f"s{n}", "silu_net", resnet_like(n, 48, act="silu"), "synthetic"))
    return out


def test_train_one_epoch_tiny_corpus(tmp_path) -> None:
    res = train(None, tmp_path, epochs=2, seed=0, device="cpu", entries=_tiny_corpus(),
                progress=False, hidden=16, batch_size=8, per_family=3, eval_every=1, test_frac=0.4,
                keep_checkpoint=True)
    assert res.weights_path.is_file() and res.card_path.is_file()
    assert res.weights_path.stat().st_size < 5_000_000
    losses = [h["loss"] for h in res.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] * 1.5
    meta = json.loads(res.card_path.read_text())
    assert meta["config"]["num_classes"] == 0 and meta["seed"] == 0
    assert meta["encoder_version"] == res.encoder_version
    assert "by_model" in res.metrics and res.num_test > 0
    assert (tmp_path / "checkpoint.pt").is_file()
    again = train(None, tmp_path / "b", epochs=1, seed=0, device="cpu", entries=_tiny_corpus(),
                  progress=False, hidden=16, batch_size=8, eval_every=1, test_frac=0.4)
    assert not (again.weights_path.parent / "checkpoint.pt").exists()


def test_train_is_deterministic_and_keeps_global_rng(tmp_path) -> None:
    kw = dict(epochs=1, seed=3, device="cpu", entries=_tiny_corpus(), progress=False, hidden=16,
              batch_size=8, eval_every=0, save_checkpoints=False)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train(None, tmp_path / "a", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = train(None, tmp_path / "b", **kw)
    assert a.encoder_version == b.encoder_version  # identical weights (hash in the version)
    assert a.weights_path.read_bytes() == b.weights_path.read_bytes()


@pytest.mark.parametrize("switches", [dict(motif_loss=False), dict(graph_loss=False, ce_loss=False), dict(steps=1)])
def test_ablation_switches_train(tmp_path, switches) -> None:
    res = train(None, tmp_path, epochs=1, seed=0, device="cpu", entries=_tiny_corpus()[:9],
                progress=False, hidden=8, batch_size=6, eval_every=0, save_checkpoints=False,
                split="none", **switches)
    assert np.isfinite(res.history[0]["loss"])
    with pytest.raises(ValueError):
        TrainConfig(motif_loss=False, graph_loss=False, ce_loss=False)
