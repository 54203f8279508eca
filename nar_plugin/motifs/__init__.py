"""Motif sampling: partition an :class:`~nar_plugin.graph.ArchGraph` into repeated motifs.

The project's precise version of the paper's motif sampling (``docs/motifs.md`` gives the
reasoning and the measurements):

1. **Neighbour encoding.** ``steps`` rounds of Weisfeiler-Lehman relabelling over in- and
   out-neighbours (:meth:`ArchGraph.wl_labels`); ``label_s(v)`` encodes the radius-``s``
   receptive field of ``v``.
2. **BPE over the topological sequence.** The graph is written as the sequence of ``label_s`` in
   topological order, each node a one-node *segment*. The most frequent adjacent pair of segment
   tokens is merged, at every occurrence, repeatedly. An occurrence counts only when

   * the two segments are joined by at least one edge of the graph (motifs stay connected),
   * the merged segment has at most ``max_size`` nodes, and
   * the two tokens differ: ``X X`` is a *repetition* of motif ``X``, not a new motif. Merging
     it would turn twelve one-layer motifs into six two-layer motifs (plus an odd leftover),
     the same architecture described with a coarser vocabulary that other graphs share less;
     repetition is what the macro graph is for. (It also makes the occurrences of a pair
     pairwise disjoint, so counts are counts of non-overlapping occurrences by construction.)

   Merging stops when no eligible pair occurs at least ``min_count`` times. It then resumes
   with every segment re-tokenised one WL round coarser, down to round 0, where a merge must
   extend a multi-node segment (``grow_only``): context-aware merges come first, and the copies
   of a block whose labels differ only because of what lies within ``s`` hops (the block
   before a stage change) still complete.
3. **Re-tiling** (:func:`_retile`). Repeated patterns (multi-node, ``>= min_count`` copies) claim,
   largest first, every window of the sequence that is exactly their pattern, cutting through
   the fragments BPE left where ``label_s`` differs (the first and last transformer layers).
   Runs of back-to-back copies then get a canonical phase (:func:`_rephase`: most copies,
   narrowest cut, earliest start). This is what makes all twelve layers of a BERT one type.
4. **Glue.** Non-repeated leftovers are merged into contiguous, connected glue segments of at
   most ``max_size`` nodes (:func:`_glue`), so a stem or a downsampling block is one macro node.
5. **Types.** An instance's type is its *pattern*: the induced subgraph with its node labels
   (op type + attributes). ``type_keys`` is a WL hash of that subgraph, invariant to node
   order, so the same pattern in another graph has the same key (:func:`motif_key`).

Every instance is a contiguous run of the topological order, hence the macro graph is a DAG in
topological order, and every instance is weakly connected.

Complexity: ``O((N + E) * steps)`` for the labels, ``O(steps * N * max_size * log deg)`` for BPE
(pair counts maintained incrementally in a lazy max-heap over a linked list of segments; a merge
touches only its two neighbours), ``O(N * max_size * deg)`` for re-tiling and glue. A 100k-node
graph takes a few seconds (docs/motifs.md).

Example:
    >>> mg = sample_motifs(graph, steps=2)
    >>> mg.num_instances, mg.reduction_ratio
    >>> print(format_motif_summary(mg))
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nar_plugin.graph import ArchGraph, NodeAttrs

__all__ = [
    "MOTIF_VERSION",
    "MacroGraph",
    "MotifGraph",
    "sample_motifs",
    "motif_key",
    "format_motif_summary",
]

#: Bump when the sampling rules or the pattern key change: motif types, macro graphs and every
#: embedding computed from them change with it.
MOTIF_VERSION = 1

_HASH_MOD = (1 << 61) - 1  # Mersenne prime for the polynomial rolling hash of label windows
_HASH_BASE = 1_000_003


# ===================================================================== result types
@dataclass(frozen=True)
class MacroGraph:
    """The macro graph: one node per motif instance, edges where original edges cross instances.

    Attributes:
        num_nodes: number of motif instances.
        edges: directed ``(src, dst)`` instance pairs, ``src < dst``, sorted, de-duplicated.
        types: motif type id per macro node.
        type_keys: cross-graph pattern key per macro node.
        sizes: number of graph nodes per macro node.
    """

    num_nodes: int
    edges: list[tuple[int, int]]
    types: list[int]
    type_keys: list[str]
    sizes: list[int]

    @property
    def num_edges(self) -> int:
        return len(self.edges)


@dataclass(frozen=True)
class MotifGraph:
    """A graph partitioned into motif instances, with the motif vocabulary and the macro graph.

    Build it with :func:`sample_motifs`. The lists are not copied; treat them as read-only.

    Attributes:
        graph: the partitioned :class:`ArchGraph`.
        instances: node indices of each instance, each list sorted; instances ordered by their
            first node (which is also a topological order of the macro graph).
        types: motif type id per instance. Equal ids mean equal patterns: induced subgraphs
            with equal node labels (op + attributes) and equal WL hash, which for the small
            DAGs motifs are means isomorphic. Ids are numbered in order of first appearance.
        type_keys: per instance, a hex key of its pattern (:func:`motif_key`), stable across
            graphs, processes and releases with the same :data:`MOTIF_VERSION` and
            vocabulary version; compare motif types of two graphs with these, not ``types``.
        vocabulary: type id -> readable pattern string: the nodes in a canonical order (by
            depth in the motif, label, WL colour) rendered as ``op(k3,s2,dw,w7>8)``
            (kernel, stride, depthwise/grouped, log2 width buckets), then ``|`` and the
            internal edges ``i>j`` between those positions.
        macro_edges: directed ``(src, dst)`` instance pairs where an original edge crosses two
            instances; sorted, de-duplicated, always ``src < dst``.
        node_to_instance: instance index of each graph node.
        steps: WL rounds used for the BPE tokens.
        min_count: minimum number of occurrences for a merge.
        max_size: maximum number of nodes in an instance.
        glue: whether non-repeated leftovers were merged into glue segments.
        version: :data:`MOTIF_VERSION` of the algorithm that made it.
    """

    graph: ArchGraph
    instances: list[list[int]]
    types: list[int]
    type_keys: list[str]
    vocabulary: dict[int, str]
    macro_edges: list[tuple[int, int]]
    node_to_instance: list[int]
    steps: int
    min_count: int
    max_size: int
    glue: bool = True
    version: int = MOTIF_VERSION
    _previews: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------- sizes
    @property
    def num_instances(self) -> int:
        return len(self.instances)

    @property
    def num_types(self) -> int:
        return len(self.vocabulary)

    @property
    def reduction_ratio(self) -> float:
        """Graph nodes per macro node (``>= 1``; ``1.0`` for an empty graph)."""
        if not self.instances:
            return 1.0
        return self.graph.num_nodes / len(self.instances)

    def type_counts(self) -> Counter[int]:
        """Number of instances of each type id."""
        return Counter(self.types)

    # ----------------------------------------------------------------- views
    def instance_subgraph(self, i: int) -> ArchGraph:
        """The induced subgraph of instance ``i`` (the input of the motif encoder Fs).

        Equivalent to ``graph.subgraph(instances[i])`` but ``O(size * deg)`` instead of
        ``O(E)`` per call, so that encoding every motif of a graph stays linear.
        """
        return induced_subgraph(self.graph, self.instances[i])

    def context_nodes(self, i: int, hops: int = 1) -> tuple[list[int], list[bool]]:
        """Instance ``i``'s nodes plus every node within ``hops`` undirected hops of them.

        Args:
            i: instance index.
            hops: neighbourhood radius (``0`` gives the instance itself).

        Returns:
            ``(nodes, center_mask)``: the sorted node indices, and per node whether it belongs
            to the instance itself. ``nodes`` is also the node order of :meth:`context`.

        Complexity: ``O(size of the neighbourhood * deg)``.
        """
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops}")
        g = self.graph
        center = self.instances[i]
        seen = set(center)
        frontier = list(center)
        for _ in range(hops):
            nxt: list[int] = []
            for v in frontier:
                for u in g.predecessors(v):
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
                for u in g.successors(v):
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
            frontier = nxt
        nodes = sorted(seen)
        own = set(center)
        return nodes, [v in own for v in nodes]

    def context(self, i: int, hops: int = 1) -> ArchGraph:
        """The context graph of instance ``i``: the subgraph induced by :meth:`context_nodes`.

        Its nodes are in the order of ``context_nodes(i, hops)[0]``; use the mask from that call
        to tell the instance's own nodes from the neighbourhood.
        """
        nodes, _ = self.context_nodes(i, hops)
        return induced_subgraph(self.graph, nodes)

    def macro_graph(self) -> MacroGraph:
        """The macro graph (one node per instance); node features come from Fs later."""
        return MacroGraph(
            num_nodes=len(self.instances),
            edges=list(self.macro_edges),
            types=list(self.types),
            type_keys=list(self.type_keys),
            sizes=[len(nodes) for nodes in self.instances],
        )

    def preview(self, type_id: int) -> str:
        """Short human-readable op sequence of a motif type (for CLI tables)."""
        return self._previews.get(type_id, self.vocabulary[type_id])

    def summary(self) -> dict[str, Any]:
        """Plain-data summary: sizes, reduction ratio, and per-type counts (most frequent first).

        ``repeated_coverage`` is the fraction of graph nodes inside instances of a type that
        occurs at least twice.
        """
        counts = self.type_counts()
        size_of: dict[int, int] = {}
        key_of: dict[int, str] = {}
        for nodes, t, k in zip(self.instances, self.types, self.type_keys):
            size_of.setdefault(t, len(nodes))
            key_of.setdefault(t, k)
        per_type = [
            {
                "type": t,
                "key": key_of[t],
                "count": counts[t],
                "size": size_of[t],
                "nodes": counts[t] * size_of[t],
                "pattern": self.vocabulary[t],
            }
            for t in sorted(counts, key=lambda t: (-counts[t], -size_of[t], t))
        ]
        n = self.graph.num_nodes
        repeated = sum(row["nodes"] for row in per_type if row["count"] >= 2)
        return {
            "nodes": n,
            "edges": self.graph.num_edges,
            "instances": self.num_instances,
            "types": self.num_types,
            "repeated_types": sum(1 for c in counts.values() if c >= 2),
            "macro_nodes": self.num_instances,
            "macro_edges": len(self.macro_edges),
            "reduction_ratio": self.reduction_ratio,
            "repeated_coverage": repeated / n if n else 0.0,
            "params": {"steps": self.steps, "min_count": self.min_count, "max_size": self.max_size,
                       "glue": self.glue, "version": self.version},
            "per_type": per_type,
        }

    def __repr__(self) -> str:
        return (
            f"MotifGraph(nodes={self.graph.num_nodes}, instances={self.num_instances}, "
            f"types={self.num_types}, macro_edges={len(self.macro_edges)}, "
            f"reduction={self.reduction_ratio:.1f}x, steps={self.steps}, "
            f"min_count={self.min_count}, max_size={self.max_size})"
        )


# ===================================================================== helpers
def induced_subgraph(graph: ArchGraph, nodes: Sequence[int]) -> ArchGraph:
    """The induced subgraph on ``nodes``, identical to ``graph.subgraph(nodes)``.

    ``ArchGraph.subgraph`` scans every edge of the graph; this scans only the predecessors of
    the kept nodes, ``O(len(nodes) * deg)``, which matters when every motif of a large graph is
    extracted.
    """
    keep = sorted(set(nodes))
    pos = {v: i for i, v in enumerate(keep)}
    edges = sorted({(pos[p], i) for i, v in enumerate(keep) for p in graph.predecessors(v) if p in pos})
    return ArchGraph([graph.ops[v] for v in keep], [graph.attrs[v] for v in keep], edges)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _render(op: str, a: NodeAttrs) -> str:
    """Compact, readable node label: ``conv(k3,s2,dw,w7>8)``; widths are log2 buckets."""
    parts = []
    if a.kernel:
        parts.append(f"k{a.kernel}")
    if a.stride:
        parts.append(f"s{a.stride}")
    if a.groups:
        parts.append({1: "dw", 2: "grp"}.get(a.groups, f"g{a.groups}"))
    if a.width_in or a.width_out:
        parts.append(f"w{a.width_in}>{a.width_out}")
    return f"{op}({','.join(parts)})" if parts else op


class _Patterns:
    """Pattern keys and strings of contiguous windows ``[s, e)`` of the topological order.

    A window's *signature* (its label ids and its internal edges, both relative to ``s``) is
    cheap to build and identifies the pattern exactly for windows of the same graph; the
    expensive part (WL hash, canonical string) is computed once per distinct signature.
    """

    def __init__(self, graph: ArchGraph, preds: list[list[int]], label_ids: list[int], labels: list[str]) -> None:
        self.graph = graph
        self.preds = preds
        self.label_ids = label_ids
        self.labels = labels
        self._cache: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], tuple[str, str, str]] = {}

    def signature(self, s: int, e: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        edges = tuple((p - s, v - s) for v in range(s, e) for p in self.preds[v] if p >= s)
        return tuple(self.label_ids[s:e]), edges

    def key(self, s: int, e: int) -> tuple[str, str, str]:
        """``(key, canonical pattern string, op preview)`` of the window ``[s, e)``."""
        sig = self.signature(s, e)
        hit = self._cache.get(sig)
        if hit is None:
            hit = self._describe(s, e, sig[1])
            self._cache[sig] = hit
        return hit

    def _describe(self, s: int, e: int, edges: tuple[tuple[int, int], ...]) -> tuple[str, str, str]:
        m = e - s
        ins: list[list[int]] = [[] for _ in range(m)]
        outs: list[list[int]] = [[] for _ in range(m)]
        for a, b in edges:
            outs[a].append(b)
            ins[b].append(a)
        base = [self.labels[v] for v in range(s, e)]
        # WL refinement on the motif alone, until the colour partition is stable: node-order
        # invariant, so the same pattern in any graph (or any position) gets the same key.
        colours = [_digest(x) for x in base]
        classes = len(set(colours))
        for _ in range(m):
            nxt = [
                _digest(f"{colours[i]}({','.join(sorted(colours[j] for j in ins[i]))})"
                        f"[{','.join(sorted(colours[j] for j in outs[i]))}]")
                for i in range(m)
            ]
            n_classes = len(set(nxt))
            colours = nxt
            if n_classes == classes:
                break
            classes = n_classes
        key = _digest(f"motif-v{MOTIF_VERSION}|{m}|{len(edges)}|" + "|".join(sorted(colours)))
        # Canonical order: by depth (longest path from a motif source), then label, then WL
        # colour. Ties left are WL-equivalent nodes, interchangeable in every DAG a model gives.
        depth = [0] * m
        for i in range(m):  # relative order is topological
            for j in ins[i]:
                depth[i] = max(depth[i], depth[j] + 1)
        order = sorted(range(m), key=lambda i: (depth[i], base[i], colours[i], i))
        rank = {i: r for r, i in enumerate(order)}
        rendered = [_render(self.graph.ops[s + i], self.graph.attrs[s + i]) for i in order]
        edge_txt = " ".join(f"{x}>{y}" for x, y in sorted((rank[a], rank[b]) for a, b in edges))
        pattern = " ".join(rendered) + " | " + edge_txt
        preview = " ".join(self.graph.ops[s + i] for i in order)
        return key, pattern, preview


# ===================================================================== BPE
def _connected(preds: list[list[int]], a: int, b: int, b_end: int) -> bool:
    """Whether segment ``[a, b)`` has an edge into the adjacent segment ``[b, b_end)``.

    Edges only go forward in topological order, so it suffices to look for a predecessor of a
    node of the right segment inside the left one. ``O((b_end - b) * log deg)``.
    """
    for v in range(b, b_end):
        ps = preds[v]
        if ps and ps[-1] >= a:
            k = bisect_left(ps, a)
            if ps[k] < b:
                return True
    return False


def _bpe(rounds: list[list[int]], preds: list[list[int]], min_count: int, max_size: int) -> list[tuple[int, int]]:
    """Fine-to-coarse BPE with the graph-connectivity, size and repetition rules.

    ``rounds[r]`` holds an id per node for WL round ``r`` (``rounds[0]``: op + attributes).
    BPE first runs on the finest labels; when no pair is left to merge, every current segment
    is re-tokenised by its pattern one round coarser (labels of round ``r - 1`` plus its
    internal edges) and merging resumes, down to round 0. At the coarser rounds a merge must
    extend a multi-node segment (two singletons never merge): coarse rounds complete motifs
    found with full context, e.g. the copies of a block whose labels were unique only because
    of what lies within ``s`` hops (the block before a stage change), instead of starting new
    context-free ones such as ``batch_norm relu`` all over a one-off region.

    Segments are a doubly linked list keyed by their first position; ``occ[(ta, tb)]`` holds
    the left positions of every eligible occurrence of the pair. A lazy max-heap orders pairs by
    ``(-count, ta, tb)``: token ids are deterministic (segments in order of first appearance,
    merges in creation order), so ties break the same way on every run. An entry is pushed
    whenever a pair's count grows; a popped entry whose count went down is re-pushed with the
    current count, so every pair always has an entry at least its count.

    Returns:
        The segments as ``(start, end)`` ranges in order.

    Complexity: ``O(rounds * N * max_size * log deg + M log M)`` for ``M = O(N)`` heap entries.
    """
    n = len(rounds[0]) if rounds else 0
    if n == 0:
        return []
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    end = list(range(1, n + 1))
    tok = [0] * n
    tok_size: list[int] = []
    occ: dict[tuple[int, int], set[int]] = {}

    grow_only = False  # coarse rounds only extend motifs found at a finer round

    def eligible(a: int, b: int) -> bool:
        ta, tb = tok[a], tok[b]
        sa, sb = tok_size[ta], tok_size[tb]
        if ta == tb or sa + sb > max_size or (grow_only and sa == 1 and sb == 1):
            return False
        return _connected(preds, a, b, end[b])

    def discard(key: tuple[int, int], at: int) -> None:
        pos = occ.get(key)
        if pos is not None:
            pos.discard(at)
            if not pos:
                del occ[key]

    for level in range(len(rounds) - 1, -1, -1):
        labels = rounds[level]
        grow_only = level < len(rounds) - 1
        # (Re-)tokenise the current segments by their pattern at this resolution.
        tok_size = []
        ids: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], int] = {}
        s = 0
        while s != -1:
            e = end[s]
            sig = (tuple(labels[s:e]), tuple((u - s, v - s) for v in range(s + 1, e) for u in preds[v] if u >= s))
            t = ids.get(sig)
            if t is None:
                t = ids[sig] = len(tok_size)
                tok_size.append(e - s)
            tok[s] = t
            s = nxt[s]
        occ = {}
        s = 0
        while nxt[s] != -1:
            if eligible(s, nxt[s]):
                occ.setdefault((tok[s], tok[nxt[s]]), set()).add(s)
            s = nxt[s]
        heap = [(-len(pos), ta, tb) for (ta, tb), pos in occ.items() if len(pos) >= min_count]
        heapq.heapify(heap)

        while heap:
            negc, ta, tb = heapq.heappop(heap)
            cur = occ.get((ta, tb))
            count = len(cur) if cur else 0
            if count != -negc:
                if min_count <= count < -negc:
                    heapq.heappush(heap, (-count, ta, tb))
                continue
            assert cur is not None
            del occ[(ta, tb)]
            t = len(tok_size)
            tok_size.append(tok_size[ta] + tok_size[tb])
            grown: dict[tuple[int, int], None] = {}
            # Left to right; occurrences of a pair of distinct tokens never overlap.
            for s in sorted(cur):
                r = nxt[s]
                p, q = prv[s], nxt[r]
                if p != -1:
                    discard((tok[p], ta), p)
                if q != -1:
                    discard((tb, tok[q]), r)
                end[s] = end[r]
                tok[s] = t
                nxt[s] = q
                if q != -1:
                    prv[q] = s
                if p != -1 and eligible(p, s):
                    key = (tok[p], t)
                    occ.setdefault(key, set()).add(p)
                    grown[key] = None
                if q != -1 and eligible(s, q):
                    key = (t, tok[q])
                    occ.setdefault(key, set()).add(s)
                    grown[key] = None
            for key in grown:
                c = len(occ.get(key, ()))
                if c >= min_count:
                    heapq.heappush(heap, (-c, key[0], key[1]))

    out = []
    s = 0
    while s != -1:
        out.append((s, end[s]))
        s = nxt[s]
    return out


# ===================================================================== completion
def _split_connected(preds: list[list[int]], s: int, e: int) -> list[tuple[int, int]]:
    """Split ``[s, e)`` into maximal contiguous pieces, each grown only by connected nodes."""
    pieces: list[tuple[int, int]] = []
    start = s
    for v in range(s + 1, e):
        if not _connected(preds, start, v, v + 1):
            pieces.append((start, v))
            start = v
    if s < e:
        pieces.append((start, e))
    return pieces


def _window_hash(prefix: list[int], powers: dict[int, int], s: int, length: int) -> int:
    return (prefix[s + length] - prefix[s] * powers[length]) % _HASH_MOD


def _is_connected(length: int, edges: tuple[tuple[int, int], ...]) -> bool:
    """Whether a window of ``length`` nodes with these relative edges is weakly connected."""
    parent = list(range(length))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    return len({find(x) for x in range(length)}) == 1


def _glue(run: list[tuple[int, int]], preds: list[list[int]], max_size: int) -> list[tuple[int, int]]:
    """Merge a run of adjacent leftover pieces into contiguous, weakly connected glue segments.

    Greedy from the left: each glue segment is the longest prefix of the remaining pieces that
    has at most ``max_size`` nodes and is weakly connected as a whole (siblings such as three
    embeddings feeding one ``add`` join once the ``add`` is reached). Pieces are never cut.

    Complexity: ``O(len(run) nodes * max_size * deg)`` worst case (union-find per segment).
    """
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(run):
        gs = run[i][0]
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        comps = 0
        best = i + 1  # a single piece is connected
        j = i
        while j < len(run) and run[j][1] - gs <= max_size:
            for v in range(run[j][0], run[j][1]):
                parent[v] = v
                comps += 1
                for u in preds[v]:
                    if u >= gs:
                        ru, rv = find(u), find(v)
                        if ru != rv:
                            parent[ru] = rv
                            comps -= 1
            j += 1
            if comps == 1:
                best = j
        out.append((gs, run[best - 1][1]))
        i = best
    return out


def _rephase(
    claimed: list[tuple[int, int]],
    taken: bytearray,
    patterns: _Patterns,
    prefix: list[int],
    min_count: int,
    length: int,
) -> list[tuple[int, int]]:
    """Choose a canonical phase for runs of back-to-back instances of one pattern.

    In a stack of identical blocks BPE may cut the period anywhere, e.g. ``[second half of
    layer i, first half of layer i+1]``, which also leaves the first and last half-layers as
    glue (eleven instances for twelve layers), and the cut it picks depends on tie-breaks, so
    two sizes of one architecture could be cut differently. For each run of ``m`` adjacent
    instances of a pattern of size ``L = length`` (runs of other sizes in ``claimed`` are
    kept as they are), every shift ``d`` in ``(-L, L)`` is tried within the free space around
    the run (never into other claims); a shift's windows are back-to-back
    windows of ``L`` nodes that all have one connected pattern. The winner has, in order:

    1. the most windows (at least ``m``, at least ``min_count``);
    2. the fewest edges crossing a window's boundary (the narrowest cut: a motif that is as
       self-contained as possible, e.g. ``relu -> conv ... add`` in a ResNet stage);
    3. the earliest first window (so a transformer layer starts at its first op).

    Freed nodes return to the leftovers; ``taken`` is updated in place.

    Complexity: ``O(m * L)`` window hashes per run plus ``O(L^2 * deg)`` for the cuts and the
    exact checks of the winner: ``O(N * max_size * deg)`` overall.
    """
    n = len(taken)
    preds = patterns.preds
    succs: list[list[int]] = [[] for _ in range(n)]
    for v in range(n):
        for u in preds[v]:
            succs[u].append(v)

    def cut(s: int, e: int) -> int:
        return sum(1 for v in range(s, e) for u in preds[v] if u < s) + \
            sum(1 for v in range(s, e) for w in succs[v] if w >= e)

    out: list[tuple[int, int]] = []
    i = 0
    while i < len(claimed):
        a, e0 = claimed[i]
        if e0 - a != length:
            out.append(claimed[i])
            i += 1
            continue
        sig = patterns.signature(a, e0)
        j = i + 1
        while j < len(claimed) and claimed[j][0] == claimed[j - 1][1] \
                and claimed[j][1] - claimed[j][0] == length and patterns.signature(*claimed[j]) == sig:
            j += 1
        m = j - i
        lo = max(out[-1][1] if out else 0, a - (length - 1))
        hi = min(claimed[j][0] if j < len(claimed) else n, a + m * length + length - 1)
        power = pow(_HASH_BASE, length, _HASH_MOD)
        streaks: list[tuple[int, int]] = []  # (count, first window start) per shift
        for d in range(-(length - 1), length):
            start = a + d
            if start < lo:
                start += length
            # longest streak of back-to-back windows with equal label hashes
            best_run = run = 0
            best_start = run_start = start
            prev = None
            p = start
            while p + length <= hi:
                h = (prefix[p + length] - prefix[p] * power) % _HASH_MOD
                if h == prev:
                    run += 1
                else:
                    run, run_start, prev = 1, p, h
                if run > best_run:
                    best_run, best_start = run, run_start
                p += length
            if best_run >= max(m, min_count):
                streaks.append((best_run, best_start))
        ranked = sorted(
            (-count, cut(start + (count // 2) * length, start + (count // 2 + 1) * length), start)
            for count, start in streaks
        )
        windows = claimed[i:j]
        for neg_count, _, start in ranked:
            wins = [(start + k * length, start + (k + 1) * length) for k in range(-neg_count)]
            first = patterns.signature(*wins[0])
            if wins == windows or (
                _is_connected(length, first[1]) and all(patterns.signature(*w) == first for w in wins[1:])
            ):
                windows = wins
                break
        if windows != claimed[i:j]:
            taken[lo:hi] = bytes(hi - lo)
            for s, e in windows:
                taken[s:e] = b"\x01" * length
        out.extend(windows)
        i = j
    return out


def _retile(
    segments: list[tuple[int, int]],
    patterns: _Patterns,
    min_count: int,
    max_size: int,
    glue: bool,
) -> list[tuple[int, int]]:
    """Completion and glue: turn BPE segments into the final instances.

    *Repeated motifs* are the patterns of BPE segments with at least two nodes that occur at
    least ``min_count`` times. Patterns are processed from the largest size down; for each size
    the BPE instances of those patterns are kept (unless a larger pattern already claimed one of
    their nodes), then every still-unclaimed window whose label sequence and internal edges are
    exactly one of those patterns is claimed, greedily from the left. Larger patterns thus win
    over the partial segments BPE leaves where ``label_s`` differs (the first and last layers).
    Runs of back-to-back claims of each size get a canonical phase (:func:`_rephase`) before
    smaller patterns claim the space around them; at the end a pattern left with fewer than
    ``min_count`` copies is returned to the leftovers.

    Unclaimed nodes keep their BPE segment (cut into connected contiguous pieces where a claim
    cut through it). With ``glue``, each run of adjacent unclaimed pieces is then merged
    (:func:`_glue`) into connected contiguous *glue* segments of at most ``max_size`` nodes:
    one-off regions (a stem, a downsampling block, a head) become a few macro nodes instead of
    a trail of singletons.

    Windows are found with a polynomial rolling hash over node label ids and verified exactly.

    Complexity: ``O(N * L)`` for ``L <= max_size`` distinct repeated pattern sizes, plus
    :func:`_rephase` and :func:`_glue`.
    """
    n = segments[-1][1] if segments else 0
    keys = [patterns.key(s, e)[0] for s, e in segments]
    counts = Counter(keys)
    ids = patterns.label_ids
    prefix = [0] * (n + 1)
    for i, x in enumerate(ids):
        prefix[i + 1] = (prefix[i] * _HASH_BASE + x + 1) % _HASH_MOD
    lengths = sorted({e - s for (s, e), k in zip(segments, keys) if e - s >= 2 and counts[k] >= min_count})
    powers = {length: pow(_HASH_BASE, length, _HASH_MOD) for length in lengths}
    table: dict[int, dict[int, set[tuple[tuple[int, ...], tuple[tuple[int, int], ...]]]]] = {}
    for (s, e), k in zip(segments, keys):
        if e - s >= 2 and counts[k] >= min_count:
            h = _window_hash(prefix, powers, s, e - s)
            table.setdefault(e - s, {}).setdefault(h, set()).add(patterns.signature(s, e))

    taken = bytearray(n)
    claimed: list[tuple[int, int]] = []
    for length in reversed(lengths):
        sigs = table[length]
        for (s, e), k in zip(segments, keys):
            if e - s == length and counts[k] >= min_count and not any(taken[s:e]):
                taken[s:e] = b"\x01" * length
                claimed.append((s, e))
        nxt_taken = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            nxt_taken[i] = i if taken[i] else nxt_taken[i + 1]
        p = 0
        while p + length <= n:
            blocked = nxt_taken[p]
            if blocked < p + length:
                p = blocked + 1
                continue
            cands = sigs.get(_window_hash(prefix, powers, p, length))
            if cands and patterns.signature(p, p + length) in cands:
                taken[p:p + length] = b"\x01" * length
                claimed.append((p, p + length))
                p += length
            else:
                p += 1
        # Phase before smaller patterns claim the space around these runs.
        claimed = _rephase(sorted(claimed), taken, patterns, prefix, min_count, length)

    # A pattern repeated among BPE segments may have lost copies to larger claims: if it no
    # longer occurs min_count times it is a leftover like any other (and may become glue).
    final = Counter(patterns.key(s, e)[0] for s, e in claimed)
    kept = []
    for s, e in claimed:
        if final[patterns.key(s, e)[0]] >= min_count:
            kept.append((s, e))
        else:
            taken[s:e] = bytes(e - s)
    claimed = kept

    # Leftovers: the untaken part of each BPE segment, as connected contiguous pieces.
    pieces: list[tuple[int, int, bool]] = [(s, e, True) for s, e in claimed]
    for s, e in segments:
        v = s
        while v < e:
            if taken[v]:
                v += 1
                continue
            w = v
            while w < e and not taken[w]:
                w += 1
            pieces.extend((a, b, False) for a, b in _split_connected(patterns.preds, v, w))
            v = w
    pieces.sort()
    if not glue:
        return [(s, e) for s, e, _ in pieces]
    out: list[tuple[int, int]] = []
    run: list[tuple[int, int]] = []
    for s, e, repeated in pieces:
        if repeated:
            out.extend(_glue(run, patterns.preds, max_size))
            run = []
            out.append((s, e))
        else:
            run.append((s, e))
    out.extend(_glue(run, patterns.preds, max_size))
    return out


# ===================================================================== entry point
def sample_motifs(
    graph: ArchGraph,
    steps: int = 2,
    min_count: int = 2,
    max_size: int = 32,
    *,
    glue: bool = True,
) -> MotifGraph:
    """Partition ``graph`` into motif instances and build the macro graph.

    Args:
        graph: the architecture graph.
        steps: rounds of neighbour encoding before BPE (``0`` = op type + attributes only).
            Larger values make merges more context-aware; the fragments they leave near the
            graph's boundaries are completed by the coarser BPE rounds and the re-tiling, so
            on the benchmark models steps 0-3 give the same layer motifs.
        min_count: a pair of segments is merged only while it occurs at least this often,
            and a pattern counts as repeated (claims windows, escapes glue) only with at least
            this many copies; ``2`` mines every repetition.
        max_size: no instance has more than this many nodes.
        glue: merge adjacent non-repeated leftovers into connected glue segments (of at most
            ``max_size`` nodes); ``False`` leaves them as BPE left them (often singletons).

    Returns:
        A :class:`MotifGraph`: every node in exactly one instance, instances ordered by first
        node, types numbered by first appearance. Deterministic: the same graph gives the same
        result in every process.

    Raises:
        ValueError: ``steps < 0``, ``min_count < 1`` or ``max_size < 1``.

    Complexity: ``O((N + E) * steps + steps * N * max_size * deg)``; see the module docstring.
    """
    for name, value, lowest in (("steps", steps, 0), ("min_count", min_count, 1), ("max_size", max_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
    n = graph.num_nodes
    preds = [sorted(graph.predecessors(v)) for v in range(n)]

    # Label ids per WL round, in order of first appearance (deterministic, hash-order free).
    rounds: list[list[int]] = []
    for labels in (graph.wl_labels(steps) if n else []):
        seen: dict[str, int] = {}
        rounds.append([seen.setdefault(x, len(seen)) for x in labels])
    labels = [graph.label(v) for v in range(n)]
    lab_ids: dict[str, int] = {}
    label_ids = [lab_ids.setdefault(x, len(lab_ids)) for x in labels]
    patterns = _Patterns(graph, preds, label_ids, labels)

    segments = _retile(_bpe(rounds, preds, min_count, max_size), patterns, min_count, max_size, glue)

    instances: list[list[int]] = []
    types: list[int] = []
    type_keys: list[str] = []
    vocabulary: dict[int, str] = {}
    previews: dict[int, str] = {}
    type_of: dict[str, int] = {}
    node_to_instance = [0] * n
    for idx, (s, e) in enumerate(segments):
        key, pattern, preview = patterns.key(s, e)
        t = type_of.get(key)
        if t is None:
            t = type_of[key] = len(type_of)
            vocabulary[t] = pattern
            previews[t] = preview
        instances.append(list(range(s, e)))
        types.append(t)
        type_keys.append(key)
        for v in range(s, e):
            node_to_instance[v] = idx
    macro = sorted({
        (node_to_instance[p], node_to_instance[v])
        for v in range(n) for p in preds[v]
        if node_to_instance[p] != node_to_instance[v]
    })
    return MotifGraph(
        graph=graph,
        instances=instances,
        types=types,
        type_keys=type_keys,
        vocabulary=vocabulary,
        macro_edges=macro,
        node_to_instance=node_to_instance,
        steps=steps,
        min_count=min_count,
        max_size=max_size,
        glue=glue,
        _previews=previews,
    )


def motif_key(pattern: ArchGraph) -> str:
    """The cross-graph key of ``pattern`` taken as one motif.

    Equal to the ``type_keys`` entry of every instance whose induced subgraph is isomorphic to
    ``pattern`` (node labels included), in any graph and whatever the node order; use it to
    look a motif up across graphs, e.g. ``motif_key(mg.instance_subgraph(i)) == mg.type_keys[i]``.

    Complexity: ``O(n * E)`` worst case for the WL rounds; motifs are small.
    """
    n = pattern.num_nodes
    preds = [sorted(pattern.predecessors(v)) for v in range(n)]
    labels = [pattern.label(v) for v in range(n)]
    seen: dict[str, int] = {}
    ids = [seen.setdefault(x, len(seen)) for x in labels]
    return _Patterns(pattern, preds, ids, labels).key(0, n)[0]


# ===================================================================== CLI text
def format_motif_summary(mg: MotifGraph, top: int | None = 20, width: int = 100) -> str:
    """Plain-text report of a :class:`MotifGraph` for ``nar motifs SOURCE``.

    Args:
        mg: the sampled motifs.
        top: show at most this many types (most frequent first); ``None`` shows all.
        width: maximum line width of the pattern previews.

    Returns:
        A multi-line string: the macro graph size and reduction ratio, then one row per motif
        type (type id, count, size, op-sequence preview), sorted by count.
    """
    s = mg.summary()
    lines = [
        f"graph: {s['nodes']} nodes, {s['edges']} edges",
        f"macro graph: {s['macro_nodes']} nodes, {s['macro_edges']} edges "
        f"(reduction {s['reduction_ratio']:.1f}x)",
        f"motif types: {s['types']} ({s['repeated_types']} repeated, covering "
        f"{100 * s['repeated_coverage']:.0f}% of nodes); steps={mg.steps} "
        f"min_count={mg.min_count} max_size={mg.max_size}",
        "",
        f"{'type':>5} {'count':>6} {'size':>5}  pattern",
    ]
    rows = s["per_type"] if top is None else s["per_type"][:top]
    room = max(10, width - 20)
    for row in rows:
        text = mg.preview(row["type"])
        if len(text) > room:
            text = text[: room - 3] + "..."
        lines.append(f"{row['type']:>5} {row['count']:>6} {row['size']:>5}  {text}")
    hidden = len(s["per_type"]) - len(rows)
    if hidden > 0:
        lines.append(f"  ... {hidden} more types")
    return "\n".join(lines)
