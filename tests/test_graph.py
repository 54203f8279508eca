"""ArchGraph IR: hashing, serialisation, canonical passes, PyG view."""

from __future__ import annotations

import pytest

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.graph import OPS, ArchGraph, GraphBuilder, NodeAttrs, width_bucket


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
