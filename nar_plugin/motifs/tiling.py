"""Re-tiling and glue: turn BPE segments into the final motif instances.

1. **Re-tiling** (:func:`retile`). Repeated patterns (multi-node, ``>= min_count`` copies) claim,
   largest first, every window of the sequence that is exactly their pattern, cutting through
   the fragments BPE left where ``label_s`` differs (the first and last transformer layers).
2. **Phase** (:func:`_rephase`). Runs of back-to-back copies get a canonical phase: most copies,
   narrowest cut, earliest start. This is what makes all twelve layers of a BERT one type.
3. **Glue** (:func:`_glue`). Non-repeated leftovers are merged into contiguous, connected glue
   segments of at most ``max_size`` nodes, so a stem or a downsampling block is one macro node.

Windows are found with a polynomial rolling hash over node label ids and verified exactly by
their :meth:`~nar_plugin.motifs.patterns.Patterns.signature`.
"""

from __future__ import annotations

from collections import Counter

from nar_plugin.graph import UnionFind
from nar_plugin.motifs.bpe import connected
from nar_plugin.motifs.patterns import Patterns, Signature

__all__ = ["retile"]

_HASH_MOD = (1 << 61) - 1  # Mersenne prime for the polynomial rolling hash of label windows
_HASH_BASE = 1_000_003

Span = tuple[int, int]


# ===================================================================== small helpers
def _prefix_hashes(ids: list[int]) -> list[int]:
    """Prefix hashes: the hash of window ``[s, s + L)`` is ``prefix[s + L] - prefix[s] * BASE**L``."""
    prefix = [0] * (len(ids) + 1)
    for i, x in enumerate(ids):
        prefix[i + 1] = (prefix[i] * _HASH_BASE + x + 1) % _HASH_MOD
    return prefix


def _window_hash(prefix: list[int], power: int, s: int, length: int) -> int:
    """Rolling hash of the window ``[s, s + length)``; ``power = BASE**length mod MOD``."""
    return (prefix[s + length] - prefix[s] * power) % _HASH_MOD


def _split_connected(preds: list[list[int]], s: int, e: int) -> list[Span]:
    """Split ``[s, e)`` into maximal contiguous pieces, each grown only by connected nodes."""
    pieces: list[Span] = []
    start = s
    for v in range(s + 1, e):
        if not connected(preds, start, v, v + 1):
            pieces.append((start, v))
            start = v
    if s < e:
        pieces.append((start, e))
    return pieces


def _is_connected(length: int, edges: tuple[tuple[int, int], ...]) -> bool:
    """Whether a window of ``length`` nodes with these relative edges is weakly connected."""
    uf = UnionFind(range(length))
    for a, b in edges:
        uf.union(a, b)
    return uf.components == 1


def _cut(preds: list[list[int]], succs: list[list[int]], s: int, e: int) -> int:
    """Number of edges crossing the boundary of the window ``[s, e)``."""
    return sum(1 for v in range(s, e) for u in preds[v] if u < s) + \
        sum(1 for v in range(s, e) for w in succs[v] if w >= e)


def _glue(run: list[Span], preds: list[list[int]], max_size: int) -> list[Span]:
    """Merge a run of adjacent leftover pieces into contiguous, weakly connected glue segments.

    Greedy from the left: each glue segment is the longest prefix of the remaining pieces that
    has at most ``max_size`` nodes and is weakly connected as a whole (siblings such as three
    embeddings feeding one ``add`` join once the ``add`` is reached). Pieces are never cut.

    Complexity: ``O(len(run) nodes * max_size * deg)`` worst case (union-find per segment).
    """
    out: list[Span] = []
    i = 0
    while i < len(run):
        gs = run[i][0]
        uf = UnionFind()
        best = i + 1  # a single piece is connected
        j = i
        while j < len(run) and run[j][1] - gs <= max_size:
            for v in range(run[j][0], run[j][1]):
                uf.add(v)
                for u in preds[v]:
                    if u >= gs:
                        uf.union(u, v)
            j += 1
            if uf.components == 1:
                best = j
        out.append((gs, run[best - 1][1]))
        i = best
    return out


# ===================================================================== phase
def _longest_streak(prefix: list[int], power: int, start: int, hi: int, length: int) -> Span:
    """``(count, first start)`` of the longest run of back-to-back windows ``[p, p + length)``,
    ``p = start, start + length, ...`` inside ``[start, hi)``, that have equal label hashes."""
    best_run = run = 0
    best_start = run_start = start
    prev = None
    p = start
    while p + length <= hi:
        h = _window_hash(prefix, power, p, length)
        if h == prev:
            run += 1
        else:
            run, run_start, prev = 1, p, h
        if run > best_run:
            best_run, best_start = run, run_start
        p += length
    return best_run, best_start


def _run_end(claimed: list[Span], i: int, patterns: Patterns, length: int) -> int:
    """End ``j`` of the run ``claimed[i:j]`` of back-to-back windows with one signature."""
    sig = patterns.signature(*claimed[i])
    j = i + 1
    while j < len(claimed) and claimed[j][0] == claimed[j - 1][1] \
            and claimed[j][1] - claimed[j][0] == length and patterns.signature(*claimed[j]) == sig:
        j += 1
    return j


def _best_phase(
    windows: list[Span], lo: int, hi: int, patterns: Patterns, succs: list[list[int]],
    prefix: list[int], min_count: int,
) -> list[Span]:
    """The canonically phased windows replacing the run ``windows`` inside ``[lo, hi)``.

    Every shift ``d`` in ``(-L, L)`` of the run is tried; a shift's candidate is its longest
    streak of equal-hash windows. Candidates rank by most windows (at least ``len(windows)``
    and ``min_count``), then narrowest cut (of the middle window), then earliest start; the
    first whose windows all have one connected pattern wins, else ``windows`` stay.
    """
    a, length, m = windows[0][0], windows[0][1] - windows[0][0], len(windows)
    power = pow(_HASH_BASE, length, _HASH_MOD)
    streaks: list[Span] = []  # (count, first window start) per shift
    for d in range(-(length - 1), length):
        start = a + d
        if start < lo:
            start += length
        best_run, best_start = _longest_streak(prefix, power, start, hi, length)
        if best_run >= max(m, min_count):
            streaks.append((best_run, best_start))
    ranked = sorted(
        (-count, _cut(patterns.preds, succs, start + (count // 2) * length, start + (count // 2 + 1) * length), start)
        for count, start in streaks
    )
    for neg_count, _, start in ranked:
        wins = [(start + k * length, start + (k + 1) * length) for k in range(-neg_count)]
        first = patterns.signature(*wins[0])
        if wins == windows or (
            _is_connected(length, first[1]) and all(patterns.signature(*w) == first for w in wins[1:])
        ):
            return wins
    return windows


def _rephase(
    claimed: list[Span],
    taken: bytearray,
    patterns: Patterns,
    prefix: list[int],
    min_count: int,
    length: int,
) -> list[Span]:
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
    succs: list[list[int]] = [[] for _ in range(n)]
    for v in range(n):
        for u in patterns.preds[v]:
            succs[u].append(v)
    out: list[Span] = []
    i = 0
    while i < len(claimed):
        a, e0 = claimed[i]
        if e0 - a != length:
            out.append(claimed[i])
            i += 1
            continue
        j = _run_end(claimed, i, patterns, length)
        lo = max(out[-1][1] if out else 0, a - (length - 1))
        hi = min(claimed[j][0] if j < len(claimed) else n, a + (j - i) * length + length - 1)
        windows = _best_phase(claimed[i:j], lo, hi, patterns, succs, prefix, min_count)
        if windows != claimed[i:j]:
            taken[lo:hi] = bytes(hi - lo)
            for s, e in windows:
                taken[s:e] = b"\x01" * length
        out.extend(windows)
        i = j
    return out


# ===================================================================== claims
def _claim_length(
    claimed: list[Span], taken: bytearray, length: int, bpe_copies: list[Span],
    sigs: dict[int, set[Signature]], patterns: Patterns, prefix: list[int],
) -> None:
    """Claim, for one pattern size, the repeated BPE copies and then every free window that is
    exactly one of those patterns, greedily from the left; ``claimed``/``taken`` grow in place."""
    n = len(taken)
    for s, e in bpe_copies:
        if not any(taken[s:e]):
            taken[s:e] = b"\x01" * length
            claimed.append((s, e))
    nxt_taken = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        nxt_taken[i] = i if taken[i] else nxt_taken[i + 1]
    power = pow(_HASH_BASE, length, _HASH_MOD)
    p = 0
    while p + length <= n:
        blocked = nxt_taken[p]
        if blocked < p + length:
            p = blocked + 1
            continue
        cands = sigs.get(_window_hash(prefix, power, p, length))
        if cands and patterns.signature(p, p + length) in cands:
            taken[p:p + length] = b"\x01" * length
            claimed.append((p, p + length))
            p += length
        else:
            p += 1


def _claim(segments: list[Span], patterns: Patterns, prefix: list[int], min_count: int) -> tuple[list[Span], bytearray]:
    """Claims of every repeated pattern, largest size first, phased; then the patterns left
    with fewer than ``min_count`` copies are released. Returns ``(claimed, taken)``."""
    n = len(prefix) - 1
    keys = [patterns.key(s, e)[0] for s, e in segments]
    counts = Counter(keys)
    repeated = [(s, e) for (s, e), k in zip(segments, keys) if e - s >= 2 and counts[k] >= min_count]
    table: dict[int, dict[int, set[Signature]]] = {}
    for s, e in repeated:
        h = _window_hash(prefix, pow(_HASH_BASE, e - s, _HASH_MOD), s, e - s)
        table.setdefault(e - s, {}).setdefault(h, set()).add(patterns.signature(s, e))
    taken = bytearray(n)
    claimed: list[Span] = []
    for length in sorted(table, reverse=True):
        copies = [(s, e) for s, e in repeated if e - s == length]
        _claim_length(claimed, taken, length, copies, table[length], patterns, prefix)
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
    return kept, taken


def retile(
    segments: list[Span],
    patterns: Patterns,
    min_count: int,
    max_size: int,
    glue: bool,
) -> list[Span]:
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

    Complexity: ``O(N * L)`` for ``L <= max_size`` distinct repeated pattern sizes, plus
    :func:`_rephase` and :func:`_glue`.
    """
    prefix = _prefix_hashes(patterns.label_ids)
    claimed, taken = _claim(segments, patterns, prefix, min_count)
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
    out: list[Span] = []
    run: list[Span] = []
    for s, e, repeated in pieces:
        if repeated:
            out.extend(_glue(run, patterns.preds, max_size))
            run = []
            out.append((s, e))
        else:
            run.append((s, e))
    out.extend(_glue(run, patterns.preds, max_size))
    return out
