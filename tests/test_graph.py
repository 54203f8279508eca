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
    # canonical v3: separate q/k/v projections of one tensor are one projection
    assert sorted(g.ops[p] for p in g.predecessors(att)) == ["linear"]


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


# ------------------------------------------------------------------ canonical passes (v2)
def _chain(spec: list[tuple[str, list[int]]]) -> ArchGraph:
    """A graph from ``(op, input positions)`` rows through the builder (canonical passes run).
    Row 0 is the input; the last row feeds the output."""
    b = GraphBuilder()
    refs = [b.add_input()]
    for op, ins in spec:
        refs.append(b.add(op, [refs[i] for i in ins], NodeAttrs(3, 1, 0, 7, 7) if op == "conv" else NodeAttrs()))
    b.add_output([refs[-1]])
    return b.build()


def _raw(spec: list[tuple[str, list[int]]]) -> ArchGraph:
    """The same graph as :func:`_chain`, built without the passes (as an older version stored it)."""
    ops = ["input"] + [op for op, _ in spec] + ["output"]
    attrs = [NodeAttrs(3, 1, 0, 7, 7) if op == "conv" else NodeAttrs() for op in ops]
    edges = sorted({(i, r + 1) for r, (_, ins) in enumerate(spec) for i in ins} | {(len(spec), len(spec) + 1)})
    return ArchGraph(ops, attrs, edges)


def test_batch_norm_after_a_layer_is_folded_into_it() -> None:
    # conv -> bn -> relu: exporters fold the bn into the conv, so the IR does too
    assert _chain([("conv", [0]), ("batch_norm", [1]), ("relu", [2])]).ops == ["input", "conv", "relu", "output"]
    assert "batch_norm" not in _chain([("linear", [0]), ("batch_norm", [1])]).ops
    # so is a constant scale (LayerScale): onnxruntime folds it into the conv's weights
    assert _chain([("conv", [0]), ("mul", [1]), ("relu", [2])]).ops == ["input", "conv", "relu", "output"]
    # a bn after an add (pre-activation, DenseNet) is not foldable and stays
    kept = _chain([("conv", [0]), ("add", [1, 0]), ("batch_norm", [2])])
    assert kept.ops.count("batch_norm") == 1
    # a conv whose output is also read elsewhere cannot absorb the bn
    shared = _chain([("conv", [0]), ("batch_norm", [1]), ("relu", [1]), ("add", [2, 3])])
    assert shared.ops.count("batch_norm") == 1
    # pad -> conv is the conv's padding; pad -> max_pool stays
    assert _chain([("pad", [0]), ("conv", [1])]).ops == ["input", "conv", "output"]
    assert "pad" in _chain([("pad", [0]), ("max_pool", [1])]).ops


def test_written_out_activations_are_the_activation() -> None:
    def fused(spec: list[tuple[str, list[int]]]) -> list[str]:
        return _chain([("conv", [0]), *[(op, [i + 1 for i in ins]) for op, ins in spec]]).ops[2:-1]

    # x = conv(...) is node 0 of each spec below
    assert fused([("sigmoid", [0]), ("mul", [0, 1])]) == ["silu"]
    assert fused([("hardsigmoid", [0]), ("mul", [1, 0])]) == ["hardswish"]
    assert fused([("softplus", [0]), ("tanh", [1]), ("mul", [0, 2])]) == ["mish"]
    # erf GELU as torch.onnx writes it: x / sqrt2 -> erf -> + 1 -> * x -> * 0.5
    assert fused([("div", [0]), ("erf", [1]), ("add", [2]), ("mul", [0, 3]), ("mul", [4])]) == ["gelu"]
    # as transformers writes it: x * 0.5 * (1 + erf(x / sqrt2))
    assert fused([("mul", [0]), ("div", [0]), ("erf", [2]), ("add", [3]), ("mul", [1, 4])]) == ["gelu"]
    # tanh GELU (GPT-2's NewGELU): 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
    assert fused([("mul", [0]), ("pow", [0]), ("mul", [2]), ("add", [0, 3]), ("mul", [4]), ("tanh", [5]),
                  ("add", [6]), ("mul", [1, 7])]) == ["gelu"]
    assert fused([("mul", [0]), ("sigmoid", [1]), ("mul", [0, 2])]) == ["gelu"]  # quick GELU
    # squeeze-excite gates x by a function of *another* tensor: not an activation
    se = fused([("adaptive_avg_pool", [0]), ("conv", [1]), ("sigmoid", [2]), ("mul", [0, 3])])
    assert se == ["adaptive_avg_pool", "conv", "sigmoid", "mul"]


def test_rms_norm_spellings_are_fused() -> None:
    head = [("pow", [0]), ("mean", [1]), ("add", [2])]
    rsqrt = _chain([*head, ("rsqrt", [3]), ("mul", [0, 4]), ("mul", [5])])
    recip = _chain([*head, ("sqrt", [3]), ("div", [4]), ("mul", [0, 5]), ("mul", [6])])  # ONNX: 1 / sqrt
    divide = _chain([*head, ("sqrt", [3]), ("div", [0, 4]), ("mul", [5])])  # x / sqrt(...)
    assert rsqrt.ops == recip.ops == divide.ops == ["input", "rms_norm", "output"]


def test_attention_with_an_additive_mask_and_safe_softmax() -> None:
    # ONNX's SDPA: q*s, k*s, matmul, + where(mask), softmax, where(isnan), matmul
    b = GraphBuilder()
    x = b.add_input()
    mask = b.add_input()
    q, k, v = (b.add("linear", [x]) for _ in range(3))
    s = b.add("matmul", [b.add("mul", [q]), b.add("mul", [k])])
    s = b.add("add", [s, b.add("where", [mask])])
    p = b.add("where", [b.add("softmax", [s])])
    b.add_output([b.add("linear", [b.add("matmul", [p, v])])])
    g = b.build()
    assert g.op_histogram() == {"input": 2, "linear": 2, "attention": 1, "output": 1}  # q/k/v merged (v3)
    att = g.ops.index("attention")
    assert sorted(g.ops[p] for p in g.predecessors(att)) == ["input", "linear"]


def test_canonicalize_upgrades_old_graphs_and_is_idempotent() -> None:
    from nar_plugin.graph import CANON_VERSION, canonicalize

    spec = [("conv", [0]), ("batch_norm", [1]), ("relu", [2]), ("sigmoid", [3]), ("mul", [3, 4])]
    fresh, old = _chain(spec), _raw(spec)
    assert old.ops.count("batch_norm") == 1 and old.graph_hash != fresh.graph_hash
    assert canonicalize(old).graph_hash == fresh.graph_hash
    assert canonicalize(fresh).graph_hash == fresh.graph_hash  # idempotent
    # stored by an older version (no "canonical" field): upgraded when read
    stored = old.to_dict()
    del stored["canonical"]
    assert ArchGraph.from_dict(stored).graph_hash == fresh.graph_hash
    # stored by this version: read back exactly as written, even a hand-built graph
    assert old.to_dict()["canonical"] == CANON_VERSION
    assert ArchGraph.from_dict(old.to_dict()).graph_hash == old.graph_hash
