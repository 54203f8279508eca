"""Tests for nar_plugin.motifs: motif sampling, macro graph, context graphs, summaries.

Hand-built graphs (GraphBuilder) keep most tests fast and independent of the extractors; the
real-model tests at the end use ``extract_graph`` on meta-device models.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from nar_plugin.cli.render import format_motif_summary
from nar_plugin.graph import OPS, ArchGraph, GraphBuilder, NodeAttrs
from nar_plugin.graph import width_bucket as wb
from nar_plugin.motifs import (
    MOTIF_VERSION,
    MotifConfig,
    MotifGraph,
    motif_key,
    sample_motifs,
)
from nar_plugin.motifs.patterns import Patterns
from nar_plugin.motifs.tiling import retile

Ref = frozenset[int]


# ===================================================================== builders
def _linear(b: GraphBuilder, x: Ref, i: int, o: int) -> Ref:
    return b.add("linear", [x], NodeAttrs(width_in=wb(i), width_out=wb(o)))


def _conv(b: GraphBuilder, x: Ref, i: int, o: int, k: int, s: int = 1) -> Ref:
    return b.add("conv", [x], NodeAttrs(kernel=k, stride=s, width_in=wb(i), width_out=wb(o)))


def bert_graph(layers: int = 12, d: int = 768, ff: int = 3072) -> ArchGraph:
    """Post-LN BERT encoder: embeddings, ``layers`` x (q/k/v, attention, out, add+LN, MLP,
    add+LN), pooler."""
    b = GraphBuilder()
    ids, mask = b.add_input(), b.add_input()
    emb = [b.add("embedding", [ids], NodeAttrs(width_out=wb(d))) for _ in range(3)]
    x = b.add("layer_norm", [b.add("add", [b.add("add", emb[:2]), emb[2]])])
    for _ in range(layers):
        q, k, v = (_linear(b, x, d, d) for _ in range(3))
        a = _linear(b, b.add("attention", [q, k, v, mask]), d, d)
        x = b.add("layer_norm", [b.add("add", [a, x])])
        h = _linear(b, b.add("gelu", [_linear(b, x, d, ff)]), ff, d)
        x = b.add("layer_norm", [b.add("add", [h, x])])
    b.add_output([x, b.add("tanh", [_linear(b, x, d, d)])])
    return b.build({"name": f"bert-{layers}"})


RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


def resnet50_graph() -> tuple[ArchGraph, list[list[int]]]:
    """ResNet-50: stem + 3, 4, 6, 3 bottlenecks (downsample on each stage's first block).

    Returns the graph and, per stage, the node index of each block's 3x3 conv.
    """
    b = GraphBuilder()
    x = b.add_input()
    x = b.add("relu", [b.add("batch_norm", [_conv(b, x, 3, 64, 7, 2)])])
    x = b.add("max_pool", [x], NodeAttrs(kernel=3, stride=2))
    cin = 64
    marks: list[list[int]] = []
    for stage, (blocks, w) in enumerate(RESNET50_STAGES):
        marks.append([])
        for i in range(blocks):
            s = 2 if i == 0 and stage > 0 else 1
            h = b.add("relu", [b.add("batch_norm", [_conv(b, x, cin, w, 1)])])
            c3 = _conv(b, h, w, w, 3, s)
            marks[-1].append(next(iter(c3)))
            h = b.add("relu", [b.add("batch_norm", [c3])])
            h = b.add("batch_norm", [_conv(b, h, w, 4 * w, 1)])
            sc = b.add("batch_norm", [_conv(b, x, cin, 4 * w, 1, s)]) if i == 0 else x
            x = b.add("relu", [b.add("add", [h, sc])])
            cin = 4 * w
    b.add_output([_linear(b, b.add("adaptive_avg_pool", [x]), 2048, 1000)])
    # as written, BatchNorms included (the canonical passes would fold them into the convs):
    # every node reaches the output, so graph indices are builder ids, in trace order
    g = b.build({"name": "resnet50"}, canonical=False)
    return g, marks


def vit_graph(layers: int = 12, d: int = 768) -> ArchGraph:
    """Pre-LN ViT: patch conv, cls cat, pos add, ``layers`` x (LN, qkv, attention, proj, add,
    LN, fc1, gelu, fc2, add), final LN, head."""
    b = GraphBuilder()
    x = b.add("conv", [b.add_input()], NodeAttrs(kernel=16, stride=16, width_in=wb(3), width_out=wb(d)))
    x = b.add("add", [b.add("cat", [x])])
    for _ in range(layers):
        a = _linear(b, b.add("attention", [_linear(b, b.add("layer_norm", [x]), d, 3 * d)]), d, d)
        x = b.add("add", [x, a])
        h = _linear(b, b.add("gelu", [_linear(b, b.add("layer_norm", [x]), d, 4 * d)]), 4 * d, d)
        x = b.add("add", [x, h])
    b.add_output([_linear(b, b.add("layer_norm", [x]), d, 1000)])
    return b.build({"name": "vit"})


def mlp_graph(layers: int = 16, width: int = 256) -> ArchGraph:
    b = GraphBuilder()
    x = b.add_input()
    for _ in range(layers):
        x = b.add("relu", [_linear(b, x, width, width)])
    b.add_output([x])
    return b.build({"name": "mlp"})


def unique_graph(n: int = 300, seed: int = 0) -> ArchGraph:
    """A random DAG whose node labels are all distinct: nothing can repeat."""
    rng = random.Random(seed)
    ops, attrs, edges = [], [], set()
    for v in range(n):
        ops.append(rng.choice(OPS[2:]))
        attrs.append(NodeAttrs(kernel=v + 1))
        for _ in range(rng.randint(0 if v == 0 else 1, 3)):
            if v:
                edges.add((max(0, v - rng.randint(1, 10)), v))
    return ArchGraph(ops, attrs, sorted(edges))


# ===================================================================== invariants
def _weakly_connected(g: ArchGraph, nodes: list[int]) -> bool:
    inside = set(nodes)
    seen, stack = {nodes[0]}, [nodes[0]]
    while stack:
        v = stack.pop()
        for u in (*g.predecessors(v), *g.successors(v)):
            if u in inside and u not in seen:
                seen.add(u)
                stack.append(u)
    return seen == inside


def check_partition(mg: MotifGraph) -> None:
    """Every node in exactly one instance; macro edges exactly the crossing edges; limits."""
    g = mg.graph
    flat = [v for inst in mg.instances for v in inst]
    assert sorted(flat) == list(range(g.num_nodes))
    assert all(inst == sorted(inst) and inst for inst in mg.instances)
    assert [inst[0] for inst in mg.instances] == sorted(inst[0] for inst in mg.instances)
    assert all(len(inst) <= mg.max_size for inst in mg.instances)
    for i, inst in enumerate(mg.instances):
        assert all(mg.node_to_instance[v] == i for v in inst)
        assert _weakly_connected(g, inst), f"instance {i} is not connected"
    crossing = {(mg.node_to_instance[s], mg.node_to_instance[d]) for s, d in g.edges
                if mg.node_to_instance[s] != mg.node_to_instance[d]}
    assert mg.macro_edges == sorted(crossing)
    assert all(a < b for a, b in mg.macro_edges)  # instances are contiguous: macro graph is a DAG
    assert len(mg.types) == len(mg.type_keys) == mg.num_instances
    # type ids: numbered by first appearance, one key and one pattern string per type
    first_seen = list(dict.fromkeys(mg.types))
    assert first_seen == list(range(len(first_seen))) == sorted(mg.vocabulary)
    key_of: dict[int, str] = {}
    for t, k in zip(mg.types, mg.type_keys):
        assert key_of.setdefault(t, k) == k
    assert len(set(key_of.values())) == len(key_of)


def _type_of_node(mg: MotifGraph, v: int) -> int:
    return mg.types[mg.node_to_instance[v]]


# ===================================================================== BERT / transformers
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_bert_layers_share_one_motif_type(steps: int) -> None:
    g = bert_graph(12)
    mg = sample_motifs(g, steps=steps)
    check_partition(mg)
    attention = [v for v, op in enumerate(g.ops) if op == "attention"]
    assert len(attention) == 12
    # each layer's attention sits in its own instance, all of one type
    insts = {mg.node_to_instance[v] for v in attention}
    assert len(insts) == 12
    assert len({_type_of_node(mg, v) for v in attention}) == 1
    layer_type = _type_of_node(mg, attention[0])
    assert mg.type_counts()[layer_type] == 12
    # the instances cover whole layers (10 nodes each: one layer's worth of the period; IR v3
    # makes q/k/v one projection, so a layer is linear, attention, linear, add, LN, 2 x linear, gelu, add, LN)
    assert all(len(mg.instances[i]) == 10 for i in insts)
    assert mg.reduction_ratio >= 5


@pytest.mark.parametrize("steps", [0, 2, 3])
def test_pre_ln_transformer_gets_one_instance_per_layer(steps: int) -> None:
    # BPE may cut a pre-LN stack mid-layer; the canonical phase recovers 12 copies of 12 blocks
    g = vit_graph(12)
    mg = sample_motifs(g, steps=steps)
    check_partition(mg)
    attention = [v for v, op in enumerate(g.ops) if op == "attention"]
    assert len({mg.node_to_instance[v] for v in attention}) == 12
    assert len({_type_of_node(mg, v) for v in attention}) == 1
    assert mg.type_counts()[_type_of_node(mg, attention[0])] == 12
    assert mg.num_instances <= 15


def test_bert_layer_type_is_stable_across_depths_and_graphs() -> None:
    a, b = sample_motifs(bert_graph(12)), sample_motifs(bert_graph(6))
    va = next(v for v, op in enumerate(a.graph.ops) if op == "attention")
    vb = next(v for v, op in enumerate(b.graph.ops) if op == "attention")
    ia, ib = a.node_to_instance[va], b.node_to_instance[vb]
    assert a.type_keys[ia] == b.type_keys[ib]
    assert a.vocabulary[a.types[ia]] == b.vocabulary[b.types[ib]]
    # a different width is a different pattern
    c = sample_motifs(bert_graph(12, d=512, ff=2048))
    vc = next(v for v, op in enumerate(c.graph.ops) if op == "attention")
    assert c.type_keys[c.node_to_instance[vc]] != a.type_keys[ia]


def test_layer_larger_than_max_size_gives_repeated_sub_layer_motifs() -> None:
    g = bert_graph(12)
    mg = sample_motifs(g, max_size=6)
    check_partition(mg)
    size = {t: len(inst) for inst, t in zip(mg.instances, mg.types)}
    assert max(size.values()) <= 6
    per_layer = [t for t, c in mg.type_counts().items() if c == 12 and size[t] >= 2]
    # the 10-node layer splits into a repeated pair of sub-layer motifs (or more), each <= 6
    assert len(per_layer) >= 2 and sum(size[t] for t in per_layer) == 10, mg.summary()
    # every attention node sits in an instance of one and the same repeated type
    assert len({_type_of_node(mg, v) for v, op in enumerate(g.ops) if op == "attention"}) == 1


# ===================================================================== ResNet / MLP
def test_resnet50_bottlenecks_repeat() -> None:
    g, marks = resnet50_graph()
    mg = sample_motifs(g)
    check_partition(mg)
    for stage, convs in enumerate(marks):
        # blocks after the first of a stage: identical bottlenecks -> one repeated type
        types = {_type_of_node(mg, v) for v in convs[1:]}
        assert len(types) == 1, f"stage {stage}: {types}"
        t = types.pop()
        assert mg.type_counts()[t] >= len(convs) - 1
        assert all(len(mg.instances[mg.node_to_instance[v]]) == 10 for v in convs[1:])
        assert len({mg.node_to_instance[v] for v in convs}) == len(convs)
    # stages have different widths, hence different patterns
    assert len({_type_of_node(mg, convs[1]) for convs in marks}) == 4
    assert mg.reduction_ratio >= 5


def test_mlp_of_identical_layers_collapses_to_repeated_motifs() -> None:
    mg = sample_motifs(mlp_graph(16))
    check_partition(mg)
    (t, count), = Counter(mg.types).most_common(1)
    assert count >= 15
    assert mg.preview(t) in ("linear relu", "relu linear")
    assert mg.num_instances <= 18


# ===================================================================== no repetition
def test_graph_without_repetition_partitions_cleanly() -> None:
    g = unique_graph(300)
    mg = sample_motifs(g)
    check_partition(mg)
    assert all(c == 1 for c in mg.type_counts().values())
    loose = sample_motifs(g, glue=False)
    check_partition(loose)
    assert loose.num_instances == g.num_nodes  # no pair repeats: BPE merges nothing


def test_one_off_regions_become_connected_glue() -> None:
    g = bert_graph(12)
    mg = sample_motifs(g)
    embeddings = [v for v, op in enumerate(g.ops) if op == "embedding"]
    assert len({mg.node_to_instance[v] for v in embeddings}) == 1  # siblings glued via their add
    loose = sample_motifs(g, glue=False)
    check_partition(loose)
    assert loose.num_instances > mg.num_instances
    assert loose.type_counts().most_common(1)[0][1] == 12  # the layers do not depend on glue


def test_empty_and_tiny_graphs() -> None:
    empty = sample_motifs(ArchGraph([], [], []))
    assert empty.num_instances == 0 and empty.macro_edges == [] and empty.reduction_ratio == 1.0
    one = sample_motifs(ArchGraph(["input"], [NodeAttrs()], []))
    check_partition(one)
    assert one.instances == [[0]]


# ===================================================================== parameters
@pytest.mark.parametrize("max_size", [1, 2, 5, 12, 32])
def test_max_size_is_respected(max_size: int) -> None:
    for g in (bert_graph(12), resnet50_graph()[0], unique_graph(200)):
        mg = sample_motifs(g, max_size=max_size)
        check_partition(mg)
        assert max(len(i) for i in mg.instances) <= max_size
    if max_size == 1:
        assert mg.num_instances == mg.graph.num_nodes


def test_min_count_is_respected() -> None:
    g = bert_graph(12)
    # more occurrences required than exist: BPE merges nothing; without glue all singletons
    mg = sample_motifs(g, min_count=13, glue=False)
    check_partition(mg)
    assert mg.num_instances == g.num_nodes
    # 12 layers: min_count=12 still finds the layer motif
    mg = sample_motifs(g, min_count=12)
    layer = {_type_of_node(mg, v) for v, op in enumerate(g.ops) if op == "attention"}
    assert len(layer) == 1 and mg.type_counts()[layer.pop()] == 12


def units_graph(copies: dict[int, int]) -> tuple[ArchGraph, dict[int, list[list[int]]]]:
    """A chain of 6-node units ``(conv, batch_norm, relu) x 2`` of width ``w``, ``copies[w]``
    of each, every unit behind a one-off ``tanh`` (distinct kernel attribute) so that nothing
    but the units repeats. Returns the graph and, per width, the node indices of each copy."""
    b = GraphBuilder()
    x = b.add_input()
    units: dict[int, list[list[int]]] = {}
    sep = 0
    for w, k in copies.items():
        for _ in range(k):
            sep += 1
            x = b.add("tanh", [x], NodeAttrs(kernel=sep))
            first = len(b)
            for _ in range(2):
                x = b.add("relu", [b.add("batch_norm", [_conv(b, x, w, w, 3)])])
            units.setdefault(w, []).append(list(range(first, len(b))))
    b.add_output([x])
    g = b.build({"name": "units"}, canonical=False)  # as written: BatchNorms not folded
    assert g.num_nodes == len(b)  # nothing folded: builder ids are graph node indices
    return g, units


def _repeated_motif_of(mg: MotifGraph, nodes: list[int]) -> tuple[int, int] | None:
    """``(copies, size)`` of the one multi-node repeated type that covers ``nodes`` exactly
    with one instance, else ``None``."""
    insts = {mg.node_to_instance[v] for v in nodes}
    if len(insts) != 1:
        return None
    i = insts.pop()
    copies = mg.type_counts()[mg.types[i]]
    if mg.instances[i] != nodes or copies < 2:
        return None
    return copies, len(nodes)


@pytest.mark.parametrize("glue", [True, False])
def test_min_count_is_the_merge_threshold(glue: bool) -> None:
    # unit A (width 64) occurs 3 times, unit B (width 128) twice
    g, units = units_graph({64: 3, 128: 2})
    expected = {  # min_count -> (A, B): (copies, size) of the motif type, None = not a motif
        1: None,  # everything merges with everything: not checked
        2: ((3, 6), (2, 6)),
        3: ((3, 6), None),  # B has fewer than min_count copies
        4: (None, None),
    }
    for min_count in (2, 3, 4):
        mg = sample_motifs(g, min_count=min_count, glue=glue)
        check_partition(mg)
        got = tuple(
            {_repeated_motif_of(mg, copy) for copy in units[w]} for w in (64, 128)
        )
        assert got == tuple({e} for e in expected[min_count]), (min_count, mg.summary())
        # a pattern below the threshold is not merged into any repeated multi-node type
        for w, copies in ((64, 3), (128, 2)):
            if copies < min_count:
                for v in (v for copy in units[w] for v in copy):
                    i = mg.node_to_instance[v]
                    assert len(mg.instances[i]) == 1 or mg.type_counts()[mg.types[i]] == 1


def test_min_count_threshold_on_resnet50_bottlenecks() -> None:
    # identical bottlenecks per stage: 2, 3, 5, 2 (the first block of a stage differs)
    g, marks = resnet50_graph()
    for min_count in (2, 3, 4, 5, 6):
        mg = sample_motifs(g, min_count=min_count)
        check_partition(mg)
        repeated = [c for t, c in mg.type_counts().items() if c >= 2]
        assert all(c >= min_count for c in repeated), (min_count, mg.summary())
        # per stage: copies of the bottleneck motif (10 nodes), None where it is not a motif
        got = []
        for convs in marks:
            blocks = [mg.node_to_instance[v] for v in convs[1:]]
            types = {mg.types[i] for i in blocks}
            t = types.pop()
            is_motif = not types and all(len(mg.instances[i]) == 10 for i in blocks) and mg.type_counts()[t] >= 2
            got.append(mg.type_counts()[t] if is_motif else None)
        assert got == [len(c) - 1 if len(c) - 1 >= min_count else None for c in marks], (min_count, got)


def test_pattern_that_loses_copies_below_min_count_is_released_to_glue() -> None:
    # A chain conv bn relu | conv bn relu | tanh | bn relu | conv | bn relu | output, as BPE
    # might leave it: "conv bn relu" (X) and "bn relu" (Y) each occur twice among the segments.
    ops = ["conv", "batch_norm", "relu"] * 2 + ["tanh", "batch_norm", "relu", "conv", "batch_norm", "relu", "output"]
    g = ArchGraph(ops, [NodeAttrs()] * len(ops), [(v, v + 1) for v in range(len(ops) - 1)])
    segments = [(0, 3), (3, 6), (6, 7), (7, 9), (9, 10), (10, 12), (12, 13)]
    # X claims its two copies and the window [9, 12), taking one copy of Y: Y is left with one
    # copy, below min_count=2, so it is not a motif and becomes glue with the tanh before it
    out = retile(segments, Patterns(g), min_count=2, max_size=32, glue=True)
    assert out == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 13)]
    # without glue the released copy stays a (non-repeated) leftover piece
    assert retile(segments, Patterns(g), min_count=2, max_size=32, glue=False) == \
        [(0, 3), (3, 6), (6, 7), (7, 9), (9, 12), (12, 13)]


def test_motif_config_holds_the_defaults() -> None:
    cfg = MotifConfig()
    assert (cfg.steps, cfg.min_count, cfg.max_size, cfg.glue) == (2, 2, 32, True)
    mg = sample_motifs(bert_graph(2))
    assert (mg.steps, mg.min_count, mg.max_size, mg.glue) == (cfg.steps, cfg.min_count, cfg.max_size, cfg.glue)
    with pytest.raises(AttributeError):
        cfg.steps = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_size"):
        MotifConfig(max_size=0)


def test_steps_and_parameters_are_recorded() -> None:
    mg = sample_motifs(bert_graph(4), steps=3, min_count=3, max_size=20)
    assert (mg.steps, mg.min_count, mg.max_size, mg.glue, mg.version) == (3, 3, 20, True, MOTIF_VERSION)
    assert mg.summary()["params"] == {"steps": 3, "min_count": 3, "max_size": 20, "glue": True,
                                      "version": MOTIF_VERSION}


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"min_count": 0}, {"max_size": 0}, {"steps": 1.5},
                                    {"max_size": True}])
def test_invalid_parameters_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sample_motifs(bert_graph(2), **kwargs)  # type: ignore[arg-type]


# ===================================================================== determinism
def _fingerprint(mg: MotifGraph) -> str:
    return json.dumps([mg.instances, mg.types, mg.type_keys, mg.macro_edges, mg.vocabulary])


def test_results_identical_across_runs() -> None:
    for g in (bert_graph(12), resnet50_graph()[0], unique_graph(200)):
        assert _fingerprint(sample_motifs(g)) == _fingerprint(sample_motifs(g))
        rebuilt = ArchGraph.from_json(g.to_json())
        assert _fingerprint(sample_motifs(rebuilt)) == _fingerprint(sample_motifs(g))


def test_results_are_pinned() -> None:
    # Motif types feed the shipped encoder: a change to labels, BPE, re-tiling or the pattern
    # key must be deliberate (and bump MOTIF_VERSION). Values recorded before the motifs/ split;
    # BERT and ViT re-recorded for IR v3 (their input graphs changed: one q/k/v projection).
    def digest(mg: MotifGraph) -> str:
        return hashlib.sha256(_fingerprint(mg).encode()).hexdigest()[:16]

    assert digest(sample_motifs(bert_graph(12))) == "1d1a5133af820a61"
    assert digest(sample_motifs(resnet50_graph()[0])) == "277dd93efef9fb69"
    assert digest(sample_motifs(vit_graph(12))) == "5a882031a01e7ecf"
    diamond = ArchGraph(["conv", "batch_norm", "relu", "add"], [NodeAttrs(kernel=3)] + [NodeAttrs()] * 3,
                        [(0, 1), (0, 2), (1, 3), (2, 3)])
    assert motif_key(diamond) == "873a0b048dbb121a"


def test_results_identical_across_processes() -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from test_motifs import bert_graph, resnet50_graph, _fingerprint;"
        "from nar_plugin.motifs import sample_motifs;"
        "print(_fingerprint(sample_motifs(bert_graph(6))) + _fingerprint(sample_motifs(resnet50_graph()[0])))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    outs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, env=env,
                             check=True, timeout=120)
        outs.add(res.stdout)
    outs.add(_fingerprint(sample_motifs(bert_graph(6))) + _fingerprint(sample_motifs(resnet50_graph()[0])) + "\n")
    assert len(outs) == 1


# ===================================================================== views
def test_instance_subgraph_and_keys() -> None:
    g, _ = resnet50_graph()
    mg = sample_motifs(g)
    for i, inst in enumerate(mg.instances):
        sub = mg.instance_subgraph(i)
        ref = g.subgraph(inst)
        assert (sub.ops, sub.attrs, sub.edges) == (ref.ops, ref.attrs, ref.edges)
        assert motif_key(sub) == mg.type_keys[i]


def test_motif_key_ignores_node_order() -> None:
    # the same diamond motif written in two topological orders
    ops1 = ["conv", "batch_norm", "relu", "add"]
    a = ArchGraph(ops1, [NodeAttrs()] * 4, [(0, 1), (0, 2), (1, 3), (2, 3)])
    b = ArchGraph(["conv", "relu", "batch_norm", "add"], [NodeAttrs()] * 4, [(0, 1), (0, 2), (1, 3), (2, 3)])
    c = ArchGraph(ops1, [NodeAttrs()] * 4, [(0, 1), (1, 2), (2, 3)])  # a chain: another pattern
    assert motif_key(a) == motif_key(b) != motif_key(c)


def test_context_nodes_and_context_graph() -> None:
    g = bert_graph(4)
    mg = sample_motifs(g)
    i = mg.node_to_instance[next(v for v, op in enumerate(g.ops) if op == "attention")]
    nodes0, mask0 = mg.context_nodes(i, hops=0)
    assert nodes0 == mg.instances[i] and all(mask0)
    nodes1, mask1 = mg.context_nodes(i, hops=1)
    inst = set(mg.instances[i])
    expected = set(inst)
    for v in inst:
        expected |= set(g.predecessors(v)) | set(g.successors(v))
    assert nodes1 == sorted(expected)
    assert [v in inst for v in nodes1] == mask1
    assert sum(mask1) == len(inst) < len(nodes1)
    nodes2, _ = mg.context_nodes(i, hops=2)
    assert set(nodes1) < set(nodes2)
    ctx = mg.context(i, hops=1)
    ref = g.subgraph(nodes1)
    assert (ctx.ops, ctx.edges) == (ref.ops, ref.edges)
    with pytest.raises(ValueError):
        mg.context_nodes(i, hops=-1)


def test_summary_and_format() -> None:
    mg = sample_motifs(bert_graph(12))
    s = mg.summary()
    assert s["macro_nodes"] == mg.num_instances and s["reduction_ratio"] == pytest.approx(mg.reduction_ratio)
    counts = [row["count"] for row in s["per_type"]]
    assert counts == sorted(counts, reverse=True) and counts[0] == 12
    assert sum(row["nodes"] for row in s["per_type"]) == mg.graph.num_nodes
    text = format_motif_summary(mg)
    assert f"{mg.num_instances} nodes" in text and f"{mg.reduction_ratio:.1f}x" in text
    rows = [line.split() for line in text.splitlines()[5:]]
    assert [int(r[1]) for r in rows] == counts
    assert format_motif_summary(mg, top=1).count("\n") < text.count("\n")
    assert "MotifGraph(" in repr(mg)


def test_large_graph_is_fast() -> None:
    import time

    g = bert_graph(800)  # ~9.6k nodes
    t = time.perf_counter()
    mg = sample_motifs(g)
    elapsed = time.perf_counter() - t
    assert mg.type_counts().most_common(1)[0][1] == 800
    assert elapsed < 5, elapsed


# ===================================================================== real models
def _extract():  # type: ignore[no-untyped-def]
    mod = pytest.importorskip("nar_plugin.extract", reason="nar_plugin.extract (extract_graph) is not importable")
    return mod.extract_graph


def test_real_bert_base_layers_share_one_type() -> None:
    extract_graph = _extract()
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    g = extract_graph(transformers.BertConfig())
    mg = sample_motifs(g)
    check_partition(mg)
    attention = [v for v, op in enumerate(g.ops) if op == "attention"]
    assert len(attention) == 12
    assert len({mg.node_to_instance[v] for v in attention}) == 12
    assert len({_type_of_node(mg, v) for v in attention}) == 1
    assert mg.reduction_ratio >= 5


def test_real_resnet50_bottlenecks_repeat() -> None:
    extract_graph = _extract()
    pytest.importorskip("timm", reason="timm is not installed")
    g = extract_graph("resnet50")
    mg = sample_motifs(g)
    check_partition(mg)
    size = {t: len(inst) for inst, t in zip(mg.instances, mg.types)}
    # a bottleneck of the inference graph (BatchNorms folded into the convs) has 7 nodes:
    # conv relu conv relu conv add relu
    blocks = sorted(c for t, c in mg.type_counts().items() if c >= 2 and size[t] >= 6)
    # one repeated bottleneck type per stage: 2 + 3 + 5 + 2 = 12 repeated blocks
    assert blocks == [2, 2, 3, 5]
    assert mg.reduction_ratio >= 5
