"""Graph algorithms shared by the whole package, one implementation each.

They work on plain adjacency lists (``preds[v]`` / ``succs[v]``: lists of node indices), not on
:class:`~nar_plugin.graph.ArchGraph`, so that the IR, motif sampling, training augmentation and
registry clustering can all use them without importing each other.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

__all__ = [
    "UnionFind",
    "digest",
    "induced_edges",
    "topological_order",
    "wl_refine",
]


def digest(text: str) -> str:
    """Short, process-independent hash of ``text``: 16 hex chars of BLAKE2b-64.

    Used for WL colours and pattern keys; unlike ``hash()`` it does not depend on
    ``PYTHONHASHSEED``, so persisted hashes are stable.
    """
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def wl_refine(
    labels: Sequence[str],
    preds: Sequence[Sequence[int]],
    succs: Sequence[Sequence[int]],
    rounds: int,
    *,
    until_stable: bool = False,
) -> list[list[str]]:
    """Weisfeiler-Lehman colour refinement over in- and out-neighbours of a directed graph.

    Round 0 is ``digest(label)``; round ``t`` is ``digest(f"{c}({ins})[{outs}]")`` of the node's
    round ``t - 1`` colour ``c`` and the sorted, comma-joined colours of its predecessors and
    successors. The exact string is part of every persisted graph hash and motif key: do not
    change it without bumping the vocabulary and motif versions.

    Args:
        labels: initial label per node.
        preds: predecessors per node.
        succs: successors per node.
        rounds: maximum number of refinement rounds.
        until_stable: stop after the first round that does not split a colour class.

    Returns:
        The colour lists of round 0 and of every round run (``rounds + 1`` lists unless it
        stopped early).

    Complexity: ``O(rounds * (N + E) log deg)``.
    """
    cur = [digest(x) for x in labels]
    out = [cur]
    classes = len(set(cur)) if until_stable else 0
    for _ in range(rounds):
        nxt = [
            digest(f"{cur[i]}({','.join(sorted(cur[p] for p in preds[i]))})"
                   f"[{','.join(sorted(cur[s] for s in succs[i]))}]")
            for i in range(len(cur))
        ]
        out.append(nxt)
        cur = nxt
        if until_stable:
            n_classes = len(set(nxt))
            if n_classes == classes:
                break
            classes = n_classes
    return out


def topological_order(succs: Sequence[Iterable[int]], priority: Sequence[Any]) -> list[int]:
    """Kahn's algorithm that always takes the ready node with the smallest ``(priority[v], v)``.

    Args:
        succs: successors per node (a DAG; a node listed twice counts as two edges).
        priority: per node, any comparable value; ties are broken by node index.

    Returns:
        The nodes in topological order (shorter than ``len(succs)`` only if there is a cycle).

    Complexity: ``O((N + E) log N)``.
    """
    n = len(succs)
    indeg = [0] * n
    for ws in succs:
        for w in ws:
            indeg[w] += 1
    heap = [(priority[v], v) for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        order.append(v)
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (priority[w], w))
    return order


def induced_edges(nodes: Iterable[int], preds: Sequence[Sequence[int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """The induced subgraph on ``nodes``, renumbered in index order.

    Args:
        nodes: node indices (any order, duplicates allowed).
        preds: predecessors per node of the whole graph.

    Returns:
        ``(keep, edges)``: the sorted distinct nodes, and the sorted, de-duplicated edges
        between them as ``(i, j)`` positions in ``keep``.

    Complexity: ``O(len(nodes) * deg)``: only the kept nodes' predecessors are scanned, which
    keeps extracting every motif of a large graph linear.
    """
    keep = sorted(set(nodes))
    pos = {v: i for i, v in enumerate(keep)}
    edges = sorted({(pos[p], i) for i, v in enumerate(keep) for p in preds[v] if p in pos})
    return keep, edges


class UnionFind:
    """Disjoint sets of hashable items (path halving), with a running count of components.

    Args:
        items: initial items, each in its own set; more can be added with :meth:`add`.

    Example:
        >>> uf = UnionFind(range(3))
        >>> uf.union(0, 2), uf.union(2, 0), uf.components
        (True, False, 2)
    """

    def __init__(self, items: Iterable[Hashable] = ()) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        #: Number of disjoint sets.
        self.components = 0
        for x in items:
            self.add(x)

    def add(self, x: Hashable) -> None:
        """Add ``x`` as a singleton set (no-op if it is already present)."""
        if x not in self._parent:
            self._parent[x] = x
            self.components += 1

    def find(self, x: Hashable) -> Hashable:
        """The representative of ``x``'s set (``KeyError`` if ``x`` was never added)."""
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: Hashable, b: Hashable) -> bool:
        """Join the sets of ``a`` and ``b``; ``True`` if they were disjoint."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self._parent[ra] = rb
        self.components -= 1
        return True
