"""Corpus source ``nas``: DARTS-space and NAS-Bench-201-space networks, written as graphs directly.

Each network is emitted into a :class:`~nar_plugin.graph.GraphBuilder` in exactly the order and
with exactly the attributes that extracting the reference PyTorch implementation
(:mod:`nar_plugin.corpus.nas_reference`, which follows the DARTS and NAS-Bench-201 code) with
``extract_graph`` gives -- the tests compare graph hashes -- so a user's real DARTS/NB201 model
lands next to its corpus family. Generating directly is ~100x faster than building and tracing.

Spaces:

* **DARTS** (Liu et al. 2019, CIFAR network): 2 input states, 4 intermediate nodes each summing
  two ops on distinct earlier states, output = concat of the 4 nodes. Ops: ``max_pool_3x3``,
  ``avg_pool_3x3``, ``skip_connect``, ``sep_conv_3x3/5x5``, ``dil_conv_3x3/5x5``. Network: 3x3
  stem (``3C`` channels), ``layers`` cells with reduction cells at 1/3 and 2/3 depth, global pool,
  linear.
* **NAS-Bench-201** (Dong & Yang 2020): a 4-node cell, one op per edge ``i -> j`` from ``none``,
  ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``; network = stem, three
  stages of ``N`` cells at ``C``, ``2C``, ``4C`` joined by residual reduction blocks, BN-ReLU,
  global pool, linear. ``none`` edges are absent from the graph (they contribute zero).

Family rule: a family is one *normal cell* (up to graph isomorphism: the family id is the graph
hash of the cell alone). Its members vary what a designer varies around a cell -- depth (layers /
cells per stage), width (``C``) and, for DARTS, the reduction cell (the family's own in about half
of the members, a freshly sampled one otherwise). So retrieval must recognise a cell across
scales and surroundings, as with timm's ``resnet18 ... resnet152``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nar_plugin.corpus.options import CorpusOptions
from nar_plugin.corpus.pool import Task
from nar_plugin.extract.ops import conv_attrs, dense_attrs, pool_attrs
from nar_plugin.graph import ArchGraph, GraphBuilder

__all__ = [
    "DARTS_OPS", "NB201_OPS", "DartsGenotype", "Nb201Cell", "sample_darts_cell", "sample_nb201_cell",
    "darts_graph", "nb201_graph", "darts_family", "nb201_family", "nas_tasks", "plan", "build_task",
    "warm_up",
]

NAME = "nas"
DARTS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: NB201 edges in genotype-string order: (to, from)
NB201_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

DARTS_LAYERS = (5, 8, 11, 14, 20)
DARTS_WIDTHS = (16, 24, 36)
NB201_CELLS = (1, 2, 3, 4, 5)
NB201_WIDTHS = (8, 16, 32)

Cell = tuple[tuple[str, int], ...]
Ref = frozenset


def warm_up() -> None:
    return None


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


# ===================================================================== genotypes
@dataclass(frozen=True)
class DartsGenotype:
    """A DARTS genotype: 8 ``(op, input state)`` pairs per cell, two per intermediate node.

    States 0 and 1 are the cell inputs (outputs of the cells two back and one back); node ``i``
    (0..3) is state ``i + 2`` and reads pairs ``2i`` and ``2i + 1``. Concat = states 2..5.
    """

    normal: Cell
    reduce: Cell

    def __post_init__(self) -> None:
        for cell in (self.normal, self.reduce):
            _check_darts_cell(cell)

    def __str__(self) -> str:
        return f"Genotype(normal={list(self.normal)}, reduce={list(self.reduce)})"


def _check_darts_cell(cell: Cell) -> None:
    if len(cell) != 8:
        raise ValueError(f"a DARTS cell has 8 (op, input) pairs, found {len(cell)}")
    for k, (op, idx) in enumerate(cell):
        if op not in DARTS_OPS:
            raise ValueError(f"unknown DARTS op {op!r}; expected one of {DARTS_OPS}")
        if not 0 <= idx < k // 2 + 2:
            raise ValueError(f"pair {k} reads state {idx}, but node {k // 2} sees states 0..{k // 2 + 1}")


def canonical_darts_cell(cell: Sequence[Sequence[Any]]) -> Cell:
    """The two pairs of every node sorted by (input, op): summation order does not matter."""
    pairs = [(str(op), int(i)) for op, i in cell]
    out: list[tuple[str, int]] = []
    for n in range(4):
        out.extend(sorted(pairs[2 * n: 2 * n + 2], key=lambda p: (p[1], p[0])))
    return tuple(out)


def sample_darts_cell(rng: random.Random) -> Cell:
    """Uniform DARTS cell: each node picks two distinct earlier states and an op for each."""
    pairs: list[tuple[str, int]] = []
    for n in range(4):
        for idx in sorted(rng.sample(range(n + 2), 2)):
            pairs.append((rng.choice(DARTS_OPS), idx))
    return canonical_darts_cell(pairs)


@dataclass(frozen=True)
class Nb201Cell:
    """A NAS-Bench-201 cell: one op per edge in :data:`NB201_EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != 6 or any(o not in NB201_OPS for o in self.ops):
            raise ValueError(f"an NB201 cell has 6 ops from {NB201_OPS}, found {self.ops}")

    def op(self, to: int, frm: int) -> str:
        return self.ops[NB201_EDGES.index((to, frm))]

    def __str__(self) -> str:
        """The benchmark's string form, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
        parts = []
        for to in (1, 2, 3):
            parts.append("|" + "|".join(f"{self.op(to, f)}~{f}" for f in range(to)) + "|")
        return "+".join(parts)

    @classmethod
    def from_string(cls, text: str) -> Nb201Cell:
        nodes = text.strip().split("+")
        ops = {}
        for to, node in enumerate(nodes, start=1):
            for item in filter(None, node.strip("|").split("|")):
                op, frm = item.split("~")
                ops[(to, int(frm))] = op
        return cls(tuple(ops[e] for e in NB201_EDGES))

    def canonical(self) -> Nb201Cell:
        """``none`` on every edge that is not on an input -> output path (it computes nothing)."""
        live = [e for e in NB201_EDGES if self.op(*e) != "none"]
        fwd = {0}
        for to, frm in sorted(live, key=lambda e: e[0]):
            if frm in fwd:
                fwd.add(to)
        bwd = {3}
        for to, frm in sorted(live, key=lambda e: -e[0]):
            if to in bwd:
                bwd.add(frm)
        return Nb201Cell(tuple(op if (to, frm) in live and frm in fwd and to in bwd else "none"
                               for (to, frm), op in zip(NB201_EDGES, self.ops)))

    @property
    def connected(self) -> bool:
        return any(op != "none" for op in self.canonical().ops)


def sample_nb201_cell(rng: random.Random) -> Nb201Cell:
    """Uniform NB201 cell, canonicalised, connected and not the bare identity."""
    while True:
        cell = Nb201Cell(tuple(rng.choice(NB201_OPS) for _ in NB201_EDGES)).canonical()
        if cell.connected and set(cell.ops) - {"none", "skip_connect"}:
            return cell


# ===================================================================== graph emission
class _Emit:
    """Layer helpers mirroring the attributes the fx leaf lowering gives torch.nn layers."""

    def __init__(self) -> None:
        self.b = GraphBuilder()

    def conv(self, x: Ref, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> Ref:
        return self.b.add("conv", [x], conv_attrs((1, cin), (1, cout), k, stride, groups))

    def bn(self, x: Ref, c: int) -> Ref:
        return self.b.add("batch_norm", [x], dense_attrs(c, c))

    def relu(self, x: Ref) -> Ref:
        return self.b.add("relu", [x])

    def pool(self, op: str, x: Ref, k: int, stride: int) -> Ref:
        return self.b.add(op, [x], pool_attrs(k, stride))

    def add(self, a: Ref, c: Ref) -> Ref:
        return self.b.add("add", [a, c])

    # DARTS operations (operations.py of the DARTS repository)
    def relu_conv_bn(self, x: Ref, cin: int, cout: int, k: int, stride: int) -> Ref:
        return self.bn(self.conv(self.relu(x), cin, cout, k, stride), cout)

    def factorized_reduce(self, x: Ref, cin: int, cout: int) -> Ref:
        x = self.relu(x)
        a = self.conv(x, cin, cout // 2, 1, 2)
        c = self.conv(x, cin, cout // 2, 1, 2)
        return self.bn(self.b.add("cat", [a, c]), cout)

    def sep_conv(self, x: Ref, c: int, k: int, stride: int) -> Ref:
        x = self.relu(x)
        x = self.conv(x, c, c, k, stride, groups=c)
        x = self.bn(self.conv(x, c, c, 1), c)
        x = self.relu(x)
        x = self.conv(x, c, c, k, 1, groups=c)
        return self.bn(self.conv(x, c, c, 1), c)

    def dil_conv(self, x: Ref, c: int, k: int, stride: int) -> Ref:
        x = self.conv(self.relu(x), c, c, k, stride, groups=c)
        return self.bn(self.conv(x, c, c, 1), c)

    def darts_op(self, name: str, x: Ref, c: int, stride: int) -> Ref:
        if name == "max_pool_3x3":
            return self.pool("max_pool", x, 3, stride)
        if name == "avg_pool_3x3":
            return self.pool("avg_pool", x, 3, stride)
        if name == "skip_connect":
            return x if stride == 1 else self.factorized_reduce(x, c, c)
        k = 3 if name.endswith("3x3") else 5
        if name.startswith("sep_conv"):
            return self.sep_conv(x, c, k, stride)
        return self.dil_conv(x, c, k, stride)

    def darts_cell(self, cell: Cell, s0: Ref, s1: Ref, c_pp: int, c_p: int, c: int,
                   reduction: bool, reduction_prev: bool) -> Ref:
        s0 = self.factorized_reduce(s0, c_pp, c) if reduction_prev else self.relu_conv_bn(s0, c_pp, c, 1, 1)
        s1 = self.relu_conv_bn(s1, c_p, c, 1, 1)
        states = [s0, s1]
        for n in range(4):
            (op1, i1), (op2, i2) = cell[2 * n], cell[2 * n + 1]
            h1 = self.darts_op(op1, states[i1], c, 2 if reduction and i1 < 2 else 1)
            h2 = self.darts_op(op2, states[i2], c, 2 if reduction and i2 < 2 else 1)
            states.append(self.add(h1, h2))
        return self.b.add("cat", states[2:])

    # NAS-Bench-201 operations (xautodl cell_operations.py / cell_infers)
    def nb201_cell(self, cell: Nb201Cell, x: Ref, c: int) -> Ref:
        nodes: list[Ref | None] = [x]
        for to in (1, 2, 3):
            out: Ref | None = None
            for frm in range(to):
                op, inp = cell.op(to, frm), nodes[frm]
                if op == "none" or inp is None:
                    continue
                if op == "skip_connect":
                    h = inp
                elif op == "avg_pool_3x3":
                    h = self.pool("avg_pool", inp, 3, 1)
                else:
                    h = self.relu_conv_bn(inp, c, c, 1 if op == "nor_conv_1x1" else 3, 1)
                out = h if out is None else self.add(out, h)
            nodes.append(out)
        if nodes[3] is None:
            raise ValueError(f"NB201 cell {cell} does not connect its input to its output")
        return nodes[3]

    def resnet_basic_block(self, x: Ref, cin: int, cout: int) -> Ref:
        y = self.relu_conv_bn(x, cin, cout, 3, 2)
        y = self.relu_conv_bn(y, cout, cout, 3, 1)
        r = self.conv(self.pool("avg_pool", x, 2, 2), cin, cout, 1, 1)
        return self.add(r, y)


def darts_graph(genotype: DartsGenotype, C: int = 16, layers: int = 8, num_classes: int = 10,  # noqa: N803
                stem_multiplier: int = 3, metadata: Mapping[str, Any] | None = None) -> ArchGraph:
    """The DARTS CIFAR network (eval mode, no auxiliary head) of ``genotype`` as an ArchGraph.

    Example:
        >>> g = darts_graph(DartsGenotype(sample_darts_cell(rng), sample_darts_cell(rng)), C=36, layers=20)
    """
    if layers < 3:
        raise ValueError(f"a DARTS network needs >= 3 layers (two reduction cells), found {layers}")
    e = _Emit()
    x = e.b.add_input()
    c_curr = stem_multiplier * C
    stem = e.bn(e.conv(x, 3, c_curr, 3, 1), c_curr)
    c_pp, c_p, c_curr = c_curr, c_curr, C
    s0 = s1 = stem
    reduction_prev = False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
        cell = genotype.reduce if reduction else genotype.normal
        s0, s1 = s1, e.darts_cell(cell, s0, s1, c_pp, c_p, c_curr, reduction, reduction_prev)
        reduction_prev = reduction
        c_pp, c_p = c_p, 4 * c_curr
    pooled = e.b.add("adaptive_avg_pool", [s1])
    logits = e.b.add("linear", [pooled], dense_attrs(c_p, num_classes))
    e.b.add_output([logits])
    return e.b.build({"source_kind": "nas", "space": "darts", **(metadata or {})})


def nb201_graph(cell: Nb201Cell, C: int = 16, N: int = 5, num_classes: int = 10,  # noqa: N803
                metadata: Mapping[str, Any] | None = None) -> ArchGraph:
    """The NAS-Bench-201 network (``TinyNetwork`` with inference cells) of ``cell``."""
    if N < 1:
        raise ValueError(f"N (cells per stage) must be >= 1, found {N}")
    e = _Emit()
    x = e.b.add_input()
    h = e.bn(e.conv(x, 3, C, 3, 1), C)
    c_prev = C
    for stage, width in enumerate((C, 2 * C, 4 * C)):
        if stage:
            h = e.resnet_basic_block(h, c_prev, width)
            c_prev = width
        for _ in range(N):
            h = e.nb201_cell(cell, h, width)
    h = e.relu(e.bn(h, c_prev))
    pooled = e.b.add("adaptive_avg_pool", [h])
    logits = e.b.add("linear", [pooled], dense_attrs(c_prev, num_classes))
    e.b.add_output([pooled, logits])  # TinyNetwork returns (features, logits)
    return e.b.build({"source_kind": "nas", "space": "nb201", **(metadata or {})})


# ===================================================================== families
def darts_family(normal: Cell) -> str:
    """``darts-<hash>``: graph hash of the normal cell alone (C=16, stride 1), so isomorphic
    cells (the same computation written with nodes in another order) share a family."""
    e = _Emit()
    s0, s1 = e.b.add_input(), e.b.add_input()
    out = e.darts_cell(canonical_darts_cell(normal), s0, s1, 16, 16, 16, False, False)
    e.b.add_output([out])
    return "darts-" + e.b.build().graph_hash[:10]


def nb201_family(cell: Nb201Cell) -> str:
    """``nb201-<hash>``: graph hash of the canonical cell alone."""
    e = _Emit()
    x = e.b.add_input()
    e.b.add_output([e.nb201_cell(cell.canonical(), x, 16)])
    return "nb201-" + e.b.build().graph_hash[:10]


def _cell_str(cell: Cell) -> str:
    return ",".join(f"{op}~{i}" for op, i in cell)


def nas_tasks(seed: int, darts_families: int, nb201_families: int, members: int) -> list[Task]:
    """Deterministic tasks for a seed: families in sampling order, ``members`` networks each.

    Each space has its own random stream, so the tasks for ``n`` families are a prefix of the
    tasks for ``n + k`` (a ``--limit`` build is part of the full corpus).

    Keys are content-addressed (``nas:darts:<family>/L14-C36-r<reduce hash>``,
    ``nas:nb201:<family>/N5-C16``), so one key always means one architecture.
    """
    # one stream per space, so that asking for more families of one space extends its list
    # (a limited build is a prefix of the full one) and never changes the other space's
    rng = random.Random(f"darts/{seed}")
    tasks: list[Task] = []
    grid = [(L, C) for L in DARTS_LAYERS for C in DARTS_WIDTHS]
    seen: set[str] = set()
    while len(seen) < darts_families:
        normal = sample_darts_cell(rng)
        fam = darts_family(normal)
        if fam in seen:
            continue
        seen.add(fam)
        base_reduce = sample_darts_cell(rng)
        for m, (L, C) in enumerate(rng.sample(grid, min(members, len(grid)))):
            reduce = base_reduce if m == 0 or rng.random() < 0.5 else sample_darts_cell(rng)
            rkey = _short(_cell_str(reduce))
            spec = {"space": "darts", "normal": [list(p) for p in normal], "reduce": [list(p) for p in reduce],
                    "layers": L, "C": C}
            tasks.append(Task(f"nas:darts:{fam}/L{L}-C{C}-r{rkey}", NAME, f"darts-L{L}-C{C}", fam, spec))
    # the same shape as the DARTS loop above, kept apart on purpose: each loop's random draws are
    # interleaved in its own order, and merging them would change the committed corpus
    rng = random.Random(f"nb201/{seed}")
    grid201 = [(N, C) for N in NB201_CELLS for C in NB201_WIDTHS]
    seen = set()
    while len(seen) < nb201_families:
        cell = sample_nb201_cell(rng)
        fam = nb201_family(cell)
        if fam in seen:
            continue
        seen.add(fam)
        rest = [g for g in grid201 if g != (5, 16)]
        chosen = [(5, 16)] + rng.sample(rest, min(members, len(grid201)) - 1)  # (5, 16): the benchmark's size
        for N, C in chosen:
            spec = {"space": "nb201", "cell": str(cell), "N": N, "C": C}
            tasks.append(Task(f"nas:nb201:{fam}/N{N}-C{C}", NAME, f"nb201-N{N}-C{C}", fam, spec))
    return tasks


def plan(records: Mapping[str, Mapping[str, Any]], options: CorpusOptions) -> list[Task]:
    n_d, n_n = options.nas_darts_families, options.nas_nb201_families
    if options.limit is not None:
        n_d, n_n = min(n_d, options.limit), min(n_n, options.limit)
    tasks = nas_tasks(options.seed, n_d, n_n, options.nas_members)
    if NAME in options.names:  # explicit family ids
        wanted = set(options.names[NAME])
        tasks = [t for t in tasks if t.family in wanted]
    return tasks


def build_task(task: Task) -> tuple[ArchGraph, dict[str, Any]]:
    spec = task.spec
    meta = {"name": task.name, "family": task.family}
    if spec["space"] == "darts":
        geno = DartsGenotype(tuple((str(o), int(i)) for o, i in spec["normal"]),
                             tuple((str(o), int(i)) for o, i in spec["reduce"]))
        g = darts_graph(geno, C=int(spec["C"]), layers=int(spec["layers"]), metadata=meta)
        return g, {"space": "darts", "genotype": str(geno), "layers": spec["layers"], "C": spec["C"]}
    if spec["space"] == "nb201":
        cell = Nb201Cell.from_string(spec["cell"])
        g = nb201_graph(cell, C=int(spec["C"]), N=int(spec["N"]), metadata=meta)
        return g, {"space": "nb201", "genotype": spec["cell"], "N": spec["N"], "C": spec["C"]}
    raise ValueError(f"unknown NAS space {spec['space']!r}; expected darts or nb201")
