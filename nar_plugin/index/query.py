"""How a search is answered: which strategy, and the over-fetching that makes filters exact.

* An SQL filter that matches few rows (<= :data:`EXACT_SUBSET_MAX`): score those rows exactly.
* Otherwise ask FAISS for candidates, drop those the filter or ``exclude_keys`` reject, and widen
  (4x more candidates, 2x more IVF lists) until ``k`` pass; past :data:`WIDEN_LIMIT` candidates,
  fall back to an exact scan. So ``k`` hits come back whenever ``k`` entries match.

Scores are inner products of unit vectors: **larger is closer**.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from nar_plugin.index.ann import AnnParams, ann_search
from nar_plugin.index.database import Database
from nar_plugin.index.entries import IndexEntry, SearchHit
from nar_plugin.index.filters import CompiledFilter
from nar_plugin.index.rows import READ_BLOCK, SELECT, entry_from_row, vectors_from_blobs

__all__ = ["EXACT_SUBSET_MAX", "WIDEN_LIMIT", "Query", "run_query"]

#: Filtered searches whose SQL filter matches at most this many rows are scored exactly.
EXACT_SUBSET_MAX = 20_000
#: Over-fetching stops widening at this many candidates and switches to an exact scan.
WIDEN_LIMIT = 16_384
#: Ids per ``IN (...)`` lookup: below SQLite's bound-parameter limit.
_FETCH_CHUNK = 900


@dataclass(frozen=True)
class Query:
    """A validated search: unit ``vector``, ``k`` >= 1, compiled filter, excluded keys."""

    vector: np.ndarray
    k: int
    flt: CompiledFilter
    exclude: frozenset[str]

    def accepts(self, entry: IndexEntry) -> bool:
        """True if ``entry`` passes ``exclude`` and the predicate (the SQL part is done by SQLite)."""
        return entry.key not in self.exclude and (self.flt.pred is None or bool(self.flt.pred(entry)))


def run_query(db: Database, index: faiss.Index, params: AnnParams, q: Query, *, exact: bool = False) -> list[SearchHit]:
    """Answer ``q`` over the FAISS ``index`` (current) and the database (caller holds ``db.mutex``)."""
    n = int(index.ntotal)
    if n == 0:
        return []
    if q.flt.where is not None:
        matching = int(db.query(f"SELECT COUNT(*) FROM entries WHERE {q.flt.where}", q.flt.params)[0][0])
        if matching == 0:
            return []
        if matching <= max(EXACT_SUBSET_MAX, 4 * q.k):
            return exact_scan(db, q)
    return _ann_widening(db, index, params, n, q, exact=exact)


def _fetch(db: Database, ids: list[int], flt: CompiledFilter) -> dict[int, IndexEntry]:
    """The entries of ``ids`` that pass the SQL part of ``flt``."""
    out: dict[int, IndexEntry] = {}
    for start in range(0, len(ids), _FETCH_CHUNK):
        chunk = ids[start : start + _FETCH_CHUNK]
        sql = f"SELECT {SELECT} FROM entries WHERE id IN ({', '.join('?' for _ in chunk)})"
        if flt.where:
            sql += f" AND ({flt.where})"
        for row in db.query(sql, [*chunk, *flt.params]):
            out[int(row[0])] = entry_from_row(row)
    return out


def _ann_widening(
    db: Database, index: faiss.Index, params: AnnParams, n: int, q: Query, *, exact: bool
) -> list[SearchHit]:
    k = q.k
    fetch = min(n, max(4 * (k + len(q.exclude)), 32)) if q.flt.active else min(n, k + len(q.exclude))
    ivf = params.kind == "ivf"
    nlist = int(index.nlist) if ivf else 0
    nprobe = (nlist if exact else int(index.nprobe)) if ivf else 0
    verdict: dict[int, IndexEntry | None] = {}  # id -> entry (passes) or None (rejected)
    while True:
        scores, ids = ann_search(index, q.vector[None, :], fetch, nprobe=nprobe or None)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        new = [i for i, _ in found if i not in verdict]
        entries = _fetch(db, new, q.flt)
        for i in new:
            entry = entries.get(i)
            verdict[i] = entry if entry is not None and q.accepts(entry) else None
        hits = [SearchHit(e.key, i, s, e) for i, s in found if (e := verdict[i]) is not None][:k]
        all_lists = not ivf or nprobe >= nlist
        if len(hits) == k or (len(found) < fetch or fetch >= n) and all_lists:
            return hits  # enough, or everything was looked at
        if fetch >= WIDEN_LIMIT:
            return exact_scan(db, q)
        if len(found) >= fetch:
            fetch = min(n, fetch * 4)
        if ivf:
            nprobe = min(nlist, nprobe * 2)


def exact_scan(db: Database, q: Query) -> list[SearchHit]:
    """Exact scan over the (SQL-filtered) rows, block by block, keeping the best ``k``."""
    k = q.k
    best: list[SearchHit] = []
    sql = f"SELECT {SELECT} FROM entries" + (f" WHERE {q.flt.where}" if q.flt.where else "")
    with db.snapshot() as conn:
        cur = conn.execute(sql, q.flt.params)
        while rows := cur.fetchmany(READ_BLOCK):
            scores = vectors_from_blobs([r[2] for r in rows], db.dim) @ q.vector
            floor = best[-1].score if len(best) >= k else -np.inf
            for j in np.argsort(-scores, kind="stable"):
                s = float(scores[j])
                if s < floor:
                    break
                if rows[j][1] in q.exclude:
                    continue
                entry = entry_from_row(rows[j])
                if q.flt.pred is not None and not q.flt.pred(entry):
                    continue
                best.append(SearchHit(entry.key, entry.id, s, entry))
                if len(best) >= k:
                    best.sort(key=lambda h: (-h.score, h.id))
                    del best[k:]
                    floor = best[-1].score
    best.sort(key=lambda h: (-h.score, h.id))
    return best[:k]
