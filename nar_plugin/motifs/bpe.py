"""BPE over the topological sequence: merge the most frequent connected pair of segments.

The graph is written as the sequence of its node labels in topological order, each node a
one-node *segment*. The most frequent adjacent pair of segment tokens is merged, at every
occurrence, repeatedly. An occurrence counts only when

* the two segments are joined by at least one edge of the graph (motifs stay connected),
* the merged segment has at most ``max_size`` nodes, and
* the two tokens differ: ``X X`` is a *repetition* of motif ``X``, not a new motif. Merging it
  would turn twelve one-layer motifs into six two-layer motifs (plus an odd leftover), the same
  architecture described with a coarser vocabulary that other graphs share less; repetition is
  what the macro graph is for. (It also makes the occurrences of a pair pairwise disjoint, so
  counts are counts of non-overlapping occurrences by construction.)

Merging stops when no eligible pair occurs at least ``min_count`` times. It then resumes with
every segment re-tokenised one WL round coarser, down to round 0 (see :func:`bpe`).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left

from nar_plugin.motifs.patterns import Signature

__all__ = ["bpe", "connected"]

Pair = tuple[int, int]


def connected(preds: list[list[int]], a: int, b: int, b_end: int) -> bool:
    """Whether segment ``[a, b)`` has an edge into the adjacent segment ``[b, b_end)``.

    Edges only go forward in topological order, so it suffices to look for a predecessor of a
    node of the right segment inside the left one. ``preds`` lists must be sorted.
    ``O((b_end - b) * log deg)``.
    """
    for v in range(b, b_end):
        ps = preds[v]
        if ps and ps[-1] >= a:
            k = bisect_left(ps, a)
            if ps[k] < b:
                return True
    return False


class _Merger:
    """The BPE state: segments as a doubly linked list keyed by their first position.

    ``nxt``/``prv`` link segment starts (``-1``: none), ``end[s]`` is the end of the segment
    starting at ``s``, ``tok[s]`` its token and ``tok_size[t]`` a token's node count.
    ``occ[(ta, tb)]`` holds the left positions of every eligible occurrence of a pair.
    """

    def __init__(self, n: int, preds: list[list[int]], min_count: int, max_size: int) -> None:
        self.preds = preds
        self.min_count = min_count
        self.max_size = max_size
        self.nxt = list(range(1, n + 1))
        self.nxt[-1] = -1
        self.prv = list(range(-1, n - 1))
        self.end = list(range(1, n + 1))
        self.tok = [0] * n
        self.tok_size: list[int] = []
        self.occ: dict[Pair, set[int]] = {}
        self.grow_only = False  # coarse rounds only extend motifs found at a finer round

    def eligible(self, a: int, b: int) -> bool:
        """Whether the adjacent segments starting at ``a`` and ``b`` may merge."""
        ta, tb = self.tok[a], self.tok[b]
        sa, sb = self.tok_size[ta], self.tok_size[tb]
        if ta == tb or sa + sb > self.max_size or (self.grow_only and sa == 1 and sb == 1):
            return False
        return connected(self.preds, a, b, self.end[b])

    def discard(self, key: Pair, at: int) -> None:
        pos = self.occ.get(key)
        if pos is not None:
            pos.discard(at)
            if not pos:
                del self.occ[key]

    def retokenise(self, labels: list[int]) -> None:
        """Give every segment the token of its pattern at this resolution (label ids of one
        WL round plus internal edges); tokens are numbered in order of first appearance."""
        preds, end, nxt = self.preds, self.end, self.nxt
        self.tok_size = []
        ids: dict[Signature, int] = {}
        s = 0
        while s != -1:
            e = end[s]
            sig = (tuple(labels[s:e]), tuple((u - s, v - s) for v in range(s + 1, e) for u in preds[v] if u >= s))
            t = ids.get(sig)
            if t is None:
                t = ids[sig] = len(self.tok_size)
                self.tok_size.append(e - s)
            self.tok[s] = t
            s = nxt[s]

    def count_pairs(self) -> list[tuple[int, int, int]]:
        """Rebuild ``occ`` from scratch; returns the heap of pairs with ``>= min_count``."""
        self.occ = {}
        nxt, tok = self.nxt, self.tok
        s = 0
        while nxt[s] != -1:
            if self.eligible(s, nxt[s]):
                self.occ.setdefault((tok[s], tok[nxt[s]]), set()).add(s)
            s = nxt[s]
        heap = [(-len(pos), ta, tb) for (ta, tb), pos in self.occ.items() if len(pos) >= self.min_count]
        heapq.heapify(heap)
        return heap

    def merge(self, ta: int, tb: int, at: set[int]) -> dict[Pair, None]:
        """Merge every occurrence (left positions ``at``) of ``(ta, tb)`` into a new token.

        Returns the pairs whose counts grew (in a deterministic order).
        """
        nxt, prv, end, tok, occ = self.nxt, self.prv, self.end, self.tok, self.occ
        t = len(self.tok_size)
        self.tok_size.append(self.tok_size[ta] + self.tok_size[tb])
        grown: dict[Pair, None] = {}
        # Left to right; occurrences of a pair of distinct tokens never overlap.
        for s in sorted(at):
            r = nxt[s]
            p, q = prv[s], nxt[r]
            if p != -1:
                self.discard((tok[p], ta), p)
            if q != -1:
                self.discard((tb, tok[q]), r)
            end[s] = end[r]
            tok[s] = t
            nxt[s] = q
            if q != -1:
                prv[q] = s
            if p != -1 and self.eligible(p, s):
                key = (tok[p], t)
                occ.setdefault(key, set()).add(p)
                grown[key] = None
            if q != -1 and self.eligible(s, q):
                key = (t, tok[q])
                occ.setdefault(key, set()).add(s)
                grown[key] = None
        return grown

    def run(self, heap: list[tuple[int, int, int]]) -> None:
        """Merge the most frequent pair until none occurs ``min_count`` times.

        A lazy max-heap orders pairs by ``(-count, ta, tb)``: token ids are deterministic, so
        ties break the same way on every run. An entry is pushed whenever a pair's count grows;
        a popped entry whose count went down is re-pushed with the current count, so every
        pair always has an entry at least its count.
        """
        min_count = self.min_count
        while heap:
            negc, ta, tb = heapq.heappop(heap)
            cur = self.occ.get((ta, tb))
            count = len(cur) if cur else 0
            if count != -negc:
                if min_count <= count < -negc:
                    heapq.heappush(heap, (-count, ta, tb))
                continue
            assert cur is not None  # count == -negc >= min_count >= 1
            del self.occ[(ta, tb)]
            for key in self.merge(ta, tb, cur):
                c = len(self.occ.get(key, ()))
                if c >= min_count:
                    heapq.heappush(heap, (-c, key[0], key[1]))

    def segments(self) -> list[tuple[int, int]]:
        """The current segments as ``(start, end)`` ranges in order."""
        out = []
        s = 0
        while s != -1:
            out.append((s, self.end[s]))
            s = self.nxt[s]
        return out


def bpe(rounds: list[list[int]], preds: list[list[int]], min_count: int, max_size: int) -> list[tuple[int, int]]:
    """Fine-to-coarse BPE with the graph-connectivity, size and repetition rules.

    ``rounds[r]`` holds an id per node for WL round ``r`` (``rounds[0]``: op + attributes).
    BPE first runs on the finest labels; when no pair is left to merge, every current segment
    is re-tokenised by its pattern one round coarser (labels of round ``r - 1`` plus its
    internal edges) and merging resumes, down to round 0. At the coarser rounds a merge must
    extend a multi-node segment (two singletons never merge): coarse rounds complete motifs
    found with full context, e.g. the copies of a block whose labels were unique only because
    of what lies within ``s`` hops (the block before a stage change), instead of starting new
    context-free ones such as ``batch_norm relu`` all over a one-off region.

    Args:
        rounds: label ids per WL round (:func:`~nar_plugin.motifs.labels.label_rounds`).
        preds: sorted predecessors per node.
        min_count: fewest occurrences of a pair that is merged.
        max_size: largest segment.

    Returns:
        The segments as ``(start, end)`` ranges in order.

    Complexity: ``O(rounds * N * max_size * log deg + M log M)`` for ``M = O(N)`` heap entries.
    """
    n = len(rounds[0]) if rounds else 0
    if n == 0:
        return []
    merger = _Merger(n, preds, min_count, max_size)
    for level in range(len(rounds) - 1, -1, -1):
        merger.grow_only = level < len(rounds) - 1
        merger.retokenise(rounds[level])
        merger.run(merger.count_pairs())
    return merger.segments()
