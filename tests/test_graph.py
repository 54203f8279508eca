"""ArchGraph IR: hashing, serialisation, canonical passes, PyG view."""

from __future__ import annotations

import random

import pytest

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.graph import (
    ATTR_BINS,
    OPS,
    ArchGraph,
    GraphBuilder,
    NodeAttrs,
    UnionFind,
    induced_edges,
    topological_order,
    width_bucket,
    wl_refine,
)


def _mlp(widths: list[int]) -> ArchGraph:
    b = GraphBuilder()
    x = b.add_input()
    for i in range(len(widths) - 1):
        x = b.add("linear", [x], NodeAttrs(0, 0, 0, width_bucket(widths[i]), width_bucket(widths[i + 1])))
        x = b.add("relu", [x])
    b.add_output([x])
    return b.build({"name": "mlp"})


def test_hash_equal_for_equal_structure_and_sensitive_to_width() -> None:
    assert _mlp([8, 16, 4]).graph_hash == _mlp([8, 16, 4]).graph_hash
    assert _mlp([8, 16, 4]).graph_hash != _mlp([8, 32, 4]).graph_hash
    assert _mlp([8, 16, 4]).graph_hash != _mlp([8, 16, 16, 4]).graph_hash


def test_hash_ignores_metadata_and_node_order() -> None:
    # a diamond built in two trace orders
    def diamond(first: str, second: str) -> ArchGraph:
        b = GraphBuilder()
        x = b.add_input()
        l = b.add(first, [x])
        r = b.add(second, [x])
        b.add_output([b.add("add", [l, r])])
        return b.build({"name": first})

    assert diamond("relu", "gelu").graph_hash == diamond("gelu", "relu").graph_hash


def test_json_round_trip_and_version_check() -> None:
    g = _mlp([8, 16, 4])
    g2 = ArchGraph.from_json(g.to_json())
    assert g2.ops == g.ops and g2.attrs == g.attrs and g2.edges == g.edges
    assert g2.graph_hash == g.graph_hash
    bad = g.to_dict() | {"vocab_version": 999}
    with pytest.raises(CorruptArtifactError, match="vocabulary"):
        ArchGraph.from_dict(bad)
    with pytest.raises(CorruptArtifactError):
        ArchGraph.from_json("{not json")


def test_edges_must_be_forward() -> None:
    with pytest.raises(ValueError, match="topological"):
        ArchGraph(["input", "relu"], [NodeAttrs(), NodeAttrs()], [(1, 0)])
    with pytest.raises(ValueError, match="vocabulary"):
        ArchGraph(["input", "frobnicate"], [NodeAttrs(), NodeAttrs()], [(0, 1)])


def test_dead_code_is_removed_and_topological_order_kept() -> None:
    b = GraphBuilder()
    x = b.add_input()
    b.add("relu", [x])  # result unused: dead
    y = b.add("gelu", [x])
    b.add_output([y])
    g = b.build()
    assert g.ops == ["input", "gelu", "output"]
    assert all(s < d for s, d in g.edges)


def test_hand_written_attention_is_fused() -> None:
    b = GraphBuilder()
    x = b.add_input()
    q, k, v = (b.add("linear", [x]) for _ in range(3))
    s = b.add("matmul", [q, k])
    s = b.add("mul", [s])  # * scale
    p = b.add("softmax", [s])
    o = b.add("matmul", [p, v])
    b.add_output([b.add("linear", [o])])
    g = b.build()
    assert g.op_histogram()["attention"] == 1
    assert "softmax" not in g.ops and "matmul" not in g.ops
    att = g.ops.index("attention")
    assert sorted(g.ops[p] for p in g.predecessors(att)) == ["linear", "linear", "linear"]


def test_hand_written_rms_norm_is_fused() -> None:
    b = GraphBuilder()
    x = b.add_input()
    p = b.add("pow", [x])
    m = b.add("mean", [p])
    a = b.add("add", [m])
    r = b.add("rsqrt", [a])
    y = b.add("mul", [x, r])
    y = b.add("mul", [y])  # * weight
    b.add_output([b.add("linear", [y])])
    g = b.build()
    assert g.ops == ["input", "rms_norm", "linear", "output"]


def test_to_pyg_shapes() -> None:
    g = _mlp([8, 16, 4])
    data = g.to_pyg()
    assert tuple(data.x.shape) == (g.num_nodes, 6)
    assert tuple(data.edge_index.shape) == (2, g.num_edges)
    assert int(data.x[:, 0].max()) < len(OPS)


def test_width_bucket() -> None:
    assert width_bucket(None) == 0 and width_bucket(0) == 0
    assert width_bucket(1) == 1 and width_bucket(64) == 7 and width_bucket(768) == 11


def test_hash_is_pinned() -> None:
    # Persisted graphs, the index and the shipped encoder's training data carry these hashes:
    # any change to labels, WL rounds or the digest must be deliberate (and bump VOCAB_VERSION).
    assert _mlp([8, 16, 4]).graph_hash == "b9cfc048405e35362ec6bc2cb91fbe8d"


def test_attr_bins_cover_every_attribute_column() -> None:
    assert len(ATTR_BINS) == len(NodeAttrs._fields)
    assert len(_mlp([8, 16]).feature_matrix()[0]) == 1 + len(ATTR_BINS)
    # widths up to 2**30 fit the width tables without clipping
    assert width_bucket(1 << 30) < ATTR_BINS[NodeAttrs._fields.index("width_in")]


def _random_dag(n: int, seed: int) -> ArchGraph:
    rng = random.Random(seed)
    edges = sorted({(rng.randrange(d), d) for d in range(1, n) for _ in range(rng.randint(1, 3))})
    ops = [rng.choice(OPS[2:6]) for _ in range(n)]
    return ArchGraph(ops, [NodeAttrs()] * n, edges)


def test_subgraph_is_the_induced_subgraph() -> None:
    g = _random_dag(60, seed=1)
    rng = random.Random(2)
    for _ in range(20):
        nodes = [rng.randrange(60) for _ in range(rng.randint(0, 30))]  # any order, duplicates
        keep = sorted(set(nodes))
        sub = g.subgraph(nodes)
        assert sub.ops == [g.ops[v] for v in keep]
        # reference: scan every edge of the graph
        ref = sorted({(keep.index(s), keep.index(d)) for s, d in g.edges if s in keep and d in keep})
        assert sub.edges == ref
    assert induced_edges([3, 1, 3], [[], [], [], [1]]) == ([1, 3], [(0, 1)])


def test_topological_order_takes_smallest_priority_then_index() -> None:
    # 0 -> 2, 1 -> 2, 1 -> 3: ready at first {0, 1}
    succs = [[2], [2, 3], [], []]
    assert topological_order(succs, [0, 0, 0, 0]) == [0, 1, 2, 3]
    order = topological_order(succs, [5, 1, 0, 9])
    assert order == [1, 0, 2, 3]  # 1 first (priority 1), then 0 (5 < 9), then 2 (0), then 3
    assert topological_order([[1], [0]], [0, 0]) == []  # a cycle: nothing is ever ready
    g = _random_dag(80, seed=3)
    order = topological_order([g.successors(v) for v in range(80)], [random.Random(v).random() for v in range(80)])
    pos = {v: i for i, v in enumerate(order)}
    assert sorted(order) == list(range(80)) and all(pos[s] < pos[d] for s, d in g.edges)


def test_canonical_order_is_independent_of_trace_order() -> None:
    def two_branches(long_first: bool) -> ArchGraph:
        # x -> gelu -> relu -> add, x -> silu -> add; the branches traced in either order
        b = GraphBuilder()
        x = b.add_input()
        if long_first:
            left = b.add("relu", [b.add("gelu", [x])])
            right = b.add("silu", [x])
        else:
            right = b.add("silu", [x])
            left = b.add("relu", [b.add("gelu", [x])])
        b.add_output([b.add("add", [left, right])])
        return b.build({"name": "branches"})

    a, b = two_branches(True), two_branches(False)
    assert a.ops != b.ops and a.graph_hash == b.graph_hash
    ca, cb = a.canonical_order(), b.canonical_order()
    assert (ca.ops, ca.edges) == (cb.ops, cb.edges)
    assert ca.graph_hash == a.graph_hash and ca.metadata == a.metadata
    assert ca.canonical_order() is ca  # already canonical: no copy


def test_wl_refine_rounds_and_early_stop() -> None:
    preds, succs = [[], [0], [1]], [[1], [2], []]
    rounds = wl_refine(["a", "a", "a"], preds, succs, 4)
    assert len(rounds) == 5 and len(set(rounds[0])) == 1 and len(set(rounds[1])) == 3
    stable = wl_refine(["a", "a", "a"], preds, succs, 4, until_stable=True)
    assert len(stable) == 3 and stable == rounds[:3]  # round 2 splits nothing more: stop
    g = _mlp([8, 16, 4])
    assert g.wl_labels(2) == wl_refine([g.label(v) for v in range(g.num_nodes)],
                                       [g.predecessors(v) for v in range(g.num_nodes)],
                                       [g.successors(v) for v in range(g.num_nodes)], 2)


def test_union_find() -> None:
    uf = UnionFind(range(5))
    assert uf.components == 5
    assert uf.union(0, 1) and uf.union(3, 4) and uf.union(1, 4)
    assert not uf.union(0, 3)
    assert uf.components == 2
    assert uf.find(0) == uf.find(3) == uf.find(4) != uf.find(2)
    uf.add("x")
    uf.add("x")
    assert uf.components == 3 and uf.find("x") == "x"
    with pytest.raises(KeyError):
        uf.find("missing")
