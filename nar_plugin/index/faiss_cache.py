"""The FAISS cache of an index: kept in memory, caught up with SQLite, persisted as a file.

Files: ``vectors.faiss`` (the serialised FAISS index) and ``vectors.faiss.json`` (sidecar: the
database uid, generation, row count, size and CRC32 the file reflects). The files are never
trusted: a missing, truncated, corrupt, foreign or stale cache is rebuilt (or caught up) from
SQLite, logged, and never raised. They are replaced atomically and durably
(:func:`nar_plugin.utils.io.atomic_writer`) under ``.cache.lock``, only when they lag enough.

**Freshness across processes.** Each handle remembers the generation its in-memory FAISS index
reflects. Before a search it reads the current generation (one indexed lookup) and, if another
process wrote since, applies exactly the rows and tombstones with a newer generation (or
rebuilds after a bulk load). So a search sees every write committed before it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import zlib
from typing import Any

import faiss
import numpy as np

from nar_plugin.errors import NarError
from nar_plugin.index import ann
from nar_plugin.index.ann import AnnParams, ann_params_of, build_ann_index, choose_ann_params, remove_ids
from nar_plugin.index.database import Database
from nar_plugin.index.entries import now
from nar_plugin.index.locks import CACHE_LOCK_NAME, IndexLock
from nar_plugin.index.rows import READ_BLOCK, vectors_from_blobs
from nar_plugin.index.schema import FORMAT_VERSION, corruption_mapped, generation
from nar_plugin.utils.io import atomic_writer

__all__ = ["FAISS_NAME", "SIDECAR_NAME", "FaissCache"]

logger = logging.getLogger(__name__)

FAISS_NAME = "vectors.faiss"
SIDECAR_NAME = "vectors.faiss.json"
#: ``close()`` saves the cache file only up to this size (it is re-derivable anyway).
_SAVE_ON_CLOSE_MAX = 64 * 2**20


class FaissCache:
    """The in-memory FAISS index of one handle and its file on disk.

    Args:
        db: The handle's database (the source of the vectors).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = IndexLock(db.path, CACHE_LOCK_NAME, f"the FAISS cache of {db.path}", " (raise NAR_LOCK_TIMEOUT)")
        self.reset()

    def reset(self) -> None:
        """Forget the in-memory index (e.g. after the database was replaced)."""
        self.index: faiss.Index | None = None
        self.params = AnnParams("flat")
        self.generation = -1  # generation the in-memory FAISS index reflects
        self.disk_generation = -1  # generation of the cache file on disk, as far as we know
        self._disk_bad = False  # the cache file on disk failed to load: overwrite it
        self._pending = 0  # rows/tombstones applied since the cache file was written
        self._max_id = 0  # largest id the in-memory FAISS index has seen
        self._trained_n = 0
        self._epoch = self._db.epoch

    # ------------------------------------------------------------------ keeping up with SQLite

    def current(self) -> faiss.Index:
        """The in-memory FAISS index, brought up to the latest committed generation."""
        conn = self._db.refresh()
        if self._epoch != self._db.epoch:  # reconnected to a replaced database
            self.reset()
        with corruption_mapped(self._db.db_path):
            gen = generation(conn)
            if self.index is not None and gen == self.generation:
                return self.index
            if self.index is None:
                self._load_or_build(conn)
            elif _lag(conn, self.generation) > max(10_000, self.index.ntotal):
                self.build()  # a bulk load elsewhere: one build beats a huge catch-up
            else:
                self._catch_up()
            self._maybe_retype()
        self.maybe_save()
        assert self.index is not None
        return self.index

    def _catch_up(self, *, count: bool = False) -> int:
        """Apply rows and tombstones newer than the cache's generation (one snapshot).

        Returns:
            The number of entries in that snapshot if ``count``, else -1.
        """
        assert self.index is not None
        with self._db.snapshot() as conn:
            gen = generation(conn)
            rows = conn.execute("SELECT id, vector FROM entries WHERE rev > ? ORDER BY id", (self.generation,)).fetchall()
            dead = [r[0] for r in conn.execute("SELECT id FROM tombstones WHERE rev > ?", (self.generation,))]
            total = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]) if count else -1
        changed = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        remove_ids(self.index, np.concatenate([np.asarray(dead, dtype=np.int64), changed[changed <= self._max_id]]))
        if len(rows):
            vecs = vectors_from_blobs([r[1] for r in rows], self._db.dim)
            self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), changed)
            self._max_id = max(self._max_id, int(changed.max()))
        self.generation = gen
        self._pending += len(rows) + len(dead)
        if rows or dead:
            logger.debug("index %s: applied %d rows, %d removals up to generation %d", self._db.path, len(rows), len(dead), gen)
        return total

    def _snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        """Read (generation, ids, vectors) of all entries from one snapshot."""
        dim = self._db.dim
        with self._db.snapshot() as conn:
            gen = generation(conn)
            n = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            ids = np.empty(n, dtype=np.int64)
            vecs = np.empty((n, dim), dtype=np.float32)
            cur = conn.execute("SELECT id, vector FROM entries ORDER BY id")
            pos = 0
            while rows := cur.fetchmany(READ_BLOCK):
                m = len(rows)
                ids[pos : pos + m] = [r[0] for r in rows]
                vecs[pos : pos + m] = vectors_from_blobs([r[1] for r in rows], dim)
                pos += m
        return gen, ids, vecs

    def build(self, params: AnnParams | None = None) -> None:
        """Build the in-memory index from SQLite (``params`` default: :func:`choose_ann_params`)."""
        t0 = time.perf_counter()
        gen, ids, vecs = self._snapshot()
        params = params or choose_ann_params(len(ids))
        self.index = build_ann_index(vecs, ids, params)
        self.params = params
        self.generation = gen
        self._max_id = int(ids.max()) if len(ids) else 0
        self._trained_n = len(ids)
        self._pending = len(ids) + 1  # force a save
        self.disk_generation = -1
        logger.info(
            "index %s: built %s cache over %d entries in %.2f s",
            self._db.path, params.describe(), len(ids), time.perf_counter() - t0,
        )

    def _stale_reason(self, conn: sqlite3.Connection, index: faiss.Index, meta: dict[str, Any]) -> str | None:
        """Why a loaded cache file cannot be caught up (None: it can)."""
        db_gen = generation(conn)
        cache_gen = int(meta.get("generation", -1))
        if meta.get("uid") != self._db.uid:
            return "it belongs to another database"
        if int(meta.get("dim", -1)) != self._db.dim or index.d != self._db.dim:
            return "its dimension differs"
        if cache_gen > db_gen:
            return f"it is from generation {cache_gen}, newer than the database ({db_gen})"
        if index.ntotal != int(meta.get("count", -1)):
            return "its row count does not match its sidecar"
        lag = _lag(conn, cache_gen)
        if lag > max(10_000, index.ntotal):
            return f"it lags {lag} rows behind"
        return None

    def _load_or_build(self, conn: sqlite3.Connection) -> None:
        loaded = self._read_files()
        if loaded is not None:
            index, meta = loaded
            reason = self._stale_reason(conn, index, meta)
            if reason is None:
                self.index = index
                self.params = ann_params_of(index)
                self.generation = self.disk_generation = int(meta.get("generation", -1))
                self._max_id = int(meta.get("max_id", 0))
                self._trained_n = int(meta.get("trained_n", index.ntotal))
                self._pending = 0
                total = self._catch_up(count=True)
                if index.ntotal == total:
                    return
                reason = f"after catching up it holds {index.ntotal} vectors, the database {total}"
            logger.warning("index %s: FAISS cache is stale (%s); rebuilding it from SQLite", self._db.path, reason)
        self.build()
        self._disk_bad = True

    def _maybe_retype(self) -> None:
        """Switch between exact and IVF (or retrain IVF) when the size calls for it."""
        assert self.index is not None
        n = self.index.ntotal
        p = self.params
        threshold = ann.APPROX_THRESHOLD  # read at call time
        target: AnnParams | None = None
        if p.kind == "flat" and n >= threshold:
            target = choose_ann_params(n)
        elif p.kind == "ivf" and n < threshold // 2:  # hysteresis: no flapping at the threshold
            target = AnnParams("flat")
        elif p.kind == "ivf" and n > ann.RETRAIN_GROWTH * max(self._trained_n, 1):
            target = choose_ann_params(n)
        if target is not None:
            logger.info(
                "index %s: %d entries; switching cache from %s to %s", self._db.path, n, p.describe(), target.describe()
            )
            self.build(target if target.kind == "flat" else None)

    # ------------------------------------------------------------------ the files

    def _read_files(self) -> tuple[faiss.Index, dict[str, Any]] | None:
        path = self._db.path
        fpath, spath = path / FAISS_NAME, path / SIDECAR_NAME
        for attempt in range(3):
            try:
                meta = json.loads(spath.read_text())
                data = np.fromfile(fpath, dtype=np.uint8)
            except FileNotFoundError:
                logger.info("index %s: no FAISS cache yet; building it", path)
                return None
            except (OSError, ValueError) as exc:
                logger.warning("index %s: unreadable FAISS cache (%s); rebuilding it", path, exc)
                return None
            if not isinstance(meta, dict):
                logger.warning("index %s: malformed FAISS sidecar; rebuilding the cache", path)
                return None
            if len(data) != meta.get("size") or zlib.crc32(memoryview(data)) != meta.get("crc32"):
                # a concurrent save may be replacing the two files (the data file first): retry
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(spath.read_text()) != meta:
                        continue
                if attempt < 2:
                    time.sleep(0.02)
                    continue
                logger.warning("index %s: FAISS cache is truncated or corrupt (size/CRC32 mismatch); rebuilding it", path)
                return None
            try:
                return faiss.deserialize_index(data), meta
            except RuntimeError as exc:
                logger.warning("index %s: FAISS cache does not load (%s); rebuilding it", path, str(exc)[:200])
                return None
        logger.warning("index %s: FAISS cache kept changing while being read; rebuilding it", path)
        return None

    def maybe_save(self, force: bool = False) -> bool:
        """Write the cache file if it lags enough (never blocks: skips if another process saves).
        Never in a folder this process may not write (the cache then lives in memory only)."""
        if self.index is None or self.generation <= self.disk_generation or not self._db.writable:
            return False
        n = self.index.ntotal
        if not force and self._pending < max(256, n // 50) and self.disk_generation >= 0:
            return False
        with self._lock.if_free() as held:
            if not held:
                return False
            if self._disk_is_current():
                self.disk_generation = self.generation
                self._pending = 0
                return False
            self._save()
            return True

    def save(self) -> None:
        """Write the cache file now, waiting for the cache lock (``NAR_LOCK_TIMEOUT``).

        Raises:
            IndexLockedError: The lock timed out.
        """
        with self._lock.held():
            self._save()

    def _disk_is_current(self) -> bool:
        """True if another handle already saved this generation (or a newer one) intact."""
        try:
            meta = json.loads((self._db.path / SIDECAR_NAME).read_text())
            fresh = meta.get("uid") == self._db.uid and int(meta.get("generation", -1)) >= self.generation
            return fresh and not self._disk_bad and (self._db.path / FAISS_NAME).stat().st_size == meta.get("size")
        except (OSError, ValueError, TypeError, AttributeError):
            return False

    def _save(self) -> None:
        """Write ``vectors.faiss`` then its sidecar, each atomically (caller holds the cache lock)."""
        assert self.index is not None
        path = self._db.path
        for pattern in (f".{FAISS_NAME}*.tmp", f"{FAISS_NAME}*.tmp-*"):  # left by a killed saver
            for stale in path.glob(pattern):
                with contextlib.suppress(OSError):
                    stale.unlink()
        data = faiss.serialize_index(self.index)
        meta = self._sidecar(len(data), zlib.crc32(memoryview(data)))
        # both temp files are complete before either is swapped in: readers retry in between
        with atomic_writer(path / SIDECAR_NAME, "w") as sidecar:
            sidecar.write(json.dumps(meta))
            with atomic_writer(path / FAISS_NAME) as fh:
                fh.write(memoryview(data))
        del data
        self.disk_generation = self.generation
        self._disk_bad = False
        self._pending = 0
        logger.debug("index %s: saved FAISS cache at generation %d", path, self.generation)

    def _sidecar(self, size: int, crc32: int) -> dict[str, Any]:
        assert self.index is not None
        return {
            "format_version": FORMAT_VERSION,
            "uid": self._db.uid,
            "generation": self.generation,
            "count": int(self.index.ntotal),
            "dim": self._db.dim,
            "kind": self.params.kind,
            "nlist": self.params.nlist,
            "nprobe": self.params.nprobe,
            "trained_n": self._trained_n,
            "max_id": self._max_id,
            "encoder_version": self._db.encoder_version,
            "size": int(size),
            "crc32": crc32,
            "saved_at": now(),
        }

    def close(self) -> None:
        """Save the cache file if that is cheap (best effort: errors are logged), then drop it."""
        if self.index is not None and self.index.ntotal * self._db.dim * 4 <= _SAVE_ON_CLOSE_MAX:
            try:
                self.current()
                self.maybe_save(force=True)
            except (NarError, sqlite3.Error, OSError, RuntimeError) as exc:
                logger.warning("index %s: could not save the FAISS cache on close: %s", self._db.path, exc)
        self.index = None


def _lag(conn: sqlite3.Connection, since: int) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM entries WHERE rev > ?", (since,)).fetchone()[0])
