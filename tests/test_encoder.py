"""Tests for nar_plugin.model.features, .layers and .encoder (tiny hand-built graphs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# tests/ is on sys.path (rootdir conftest)
from fixtures.synthetic_graphs import (
    branchy,
    resnet_like,
    single_node,
    skip_chain,
    transformer_like,
)

from nar_plugin.graph import ATTR_BINS, ArchGraph, NodeAttrs
from nar_plugin.model.encoder import EncoderConfig, NAREncoder, config_hash
from nar_plugin.model.features import (
    collate,
    direction_adjacency,
    node_feature_matrix,
    prepare,
)
from nar_plugin.model.layers import DirLayer
from nar_plugin.training.augment import augment_graph
from nar_plugin.training.losses import motif_info_nce


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


def test_node_features_are_clipped_to_the_embedding_tables() -> None:
    g = ArchGraph(["input", "conv"], [NodeAttrs(), NodeAttrs(kernel=99, stride=99, groups=2, width_in=40,
                                                             width_out=3)], [(0, 1)])
    x = node_feature_matrix(g)
    assert x.dtype == np.int64 and x.shape == (2, 6)
    assert x[1, 1:].tolist() == [ATTR_BINS[0] - 1, ATTR_BINS[1] - 1, 2, ATTR_BINS[3] - 1, 3]
    assert torch.equal(prepare(g).x, torch.from_numpy(x))


def test_direction_adjacency_gcn_and_gin() -> None:
    edges = torch.tensor([[0, 1], [1, 2]])  # 0 -> 1 -> 2
    fwd, bwd = direction_adjacency(edges, 3, normalise=False)
    assert fwd.to_dense().tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]  # [dst, src]
    assert torch.equal(bwd.to_dense(), fwd.to_dense().T)
    fwd, _ = direction_adjacency(edges, 3, normalise=True)
    # self loops; in-degree + 1 = (1, 2, 2): w(src -> dst) = d(dst)^-1/2 d(src)^-1/2
    expected = torch.tensor([[1.0, 0, 0], [2**-0.5, 0.5, 0], [0, 0.5, 0.5]])
    assert torch.allclose(fwd.to_dense(), expected)
    batch = collate([prepare(resnet_like(2))])
    assert batch.adjacency("macro", "gin") is batch.adjacency("macro", "gin")  # cached
    with pytest.raises(ValueError, match="unknown adjacency"):
        batch.adjacency("bogus")
    with pytest.raises(ValueError, match="conv"):
        DirLayer(8, conv="transformer")


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
    a, c = skip_chain(True), skip_chain(False)
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
