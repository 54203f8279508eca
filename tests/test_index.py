"""Tests of nar_plugin.index: real SQLite, real FAISS, real processes."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import filelock
import numpy as np
import pytest

import nar_plugin.index as index_mod
from nar_plugin.errors import (
    EncoderVersionMismatchError,
    IndexCorruptError,
    IndexLockedError,
    InvalidQueryError,
    InvalidVectorError,
    KeyExistsError,
    NarError,
)
from nar_plugin.index import EmbeddingIndex, IndexEntry, SearchHit, import_jsonl
from nar_plugin.index.codec import EMBEDDING_DIM

D = EMBEDDING_DIM


def units(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(base: np.ndarray, keys: list[str], q: np.ndarray, k: int) -> list[str]:
    scores = base @ (q / np.linalg.norm(q))
    order = np.argsort(-scores, kind="stable")[:k]
    return [keys[i] for i in order]


@pytest.fixture
def idx(tmp_path: Path) -> EmbeddingIndex:
    index = EmbeddingIndex(tmp_path / "index", encoder_version="enc-1")
    yield index
    index.close()


# --------------------------------------------------------------------------- basics


def test_default_path_is_under_nar_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_HOME", str(tmp_path / "home"))
    with EmbeddingIndex() as index:
        assert index.path == tmp_path / "home" / "index"
        assert (index.path / "meta.sqlite").exists()


def test_add_get_contains_len_keys(idx: EmbeddingIndex) -> None:
    v = units(2)
    raw = v[0] * 3.0  # not unit norm: stored normalised
    i1 = idx.add(
        "mlflow:model:m-1", raw, uri="models:/m-1", graph_hash="g1", params_count=1234, family_guess="resnet",
        metadata={"name": "r50", "tags": [1, 2]},
    )
    i2 = idx.add("hf:org/b@main", v[1].astype(np.float64))
    assert (i1, i2) == (1, 2)
    e = idx.get("mlflow:model:m-1")
    assert isinstance(e, IndexEntry)
    assert e.id == 1 and e.key == "mlflow:model:m-1"
    assert e.vector.dtype == np.float32 and e.vector.shape == (D,)
    np.testing.assert_allclose(e.vector, v[0], atol=1e-6)
    assert e.source_kind == "mlflow"  # derived from the key prefix
    assert e.uri == "models:/m-1" and e.graph_hash == "g1" and e.params_count == 1234
    assert e.family_guess == "resnet" and e.encoder_version == "enc-1"
    assert e.metadata == {"name": "r50", "tags": [1, 2]}
    assert e.created_at and e.created_at == e.updated_at
    with pytest.raises(AttributeError):
        e.key = "x"  # type: ignore[misc]  # frozen
    assert idx.get("nope") is None
    assert "hf:org/b@main" in idx and "nope" not in idx and 3 not in idx
    assert len(idx) == 2
    assert idx.keys() == ["mlflow:model:m-1", "hf:org/b@main"]
    assert idx.get("hf:org/b@main").source_kind == "hf"


def test_add_existing_key_raises(idx: EmbeddingIndex) -> None:
    v = units(2)
    idx.add("k", v[0])
    with pytest.raises(KeyExistsError, match="already in the index") as info:
        idx.add("k", v[1])
    assert isinstance(info.value, ValueError) and isinstance(info.value, NarError)
    assert info.value.existing_id == 1
    np.testing.assert_allclose(idx.get("k").vector, v[0], atol=1e-6)


def test_upsert_keeps_id_and_created_at(idx: EmbeddingIndex) -> None:
    v = units(3)
    assert idx.upsert("a", v[0], graph_hash="old") == 1
    idx.add("b", v[1])
    before = idx.get("a")
    assert idx.search(v[0], k=1)[0].key == "a"
    time.sleep(0.002)
    assert idx.upsert("a", v[2], graph_hash="new", metadata={"x": 1}) == 1
    after = idx.get("a")
    assert after.id == 1 and after.created_at == before.created_at and after.updated_at > before.updated_at
    assert after.graph_hash == "new" and after.metadata == {"x": 1}
    np.testing.assert_allclose(after.vector, v[2], atol=1e-6)
    hit = idx.search(v[2], k=1)[0]
    assert (hit.key, hit.id) == ("a", 1) and hit.score == pytest.approx(1.0, abs=1e-5)
    assert idx.search(v[0], k=1)[0].score < 0.5  # the old vector is gone from the FAISS cache
    assert len(idx) == 2


def test_remove_and_ids_are_never_reused(tmp_path: Path, idx: EmbeddingIndex) -> None:
    v = units(5)
    for i, key in enumerate("abc"):
        idx.add(key, v[i])
    assert idx.remove("b") is True
    assert idx.remove("b") is False
    assert idx.remove("never") is False
    assert idx.add("d", v[3]) == 4
    assert idx.get("c").id == 3
    assert "b" not in idx and len(idx) == 3
    assert [h.key for h in idx.search(v[1], k=10)] == brute_force(v[[0, 2, 3]], ["a", "c", "d"], v[1], 10)
    # remove the highest id, reopen: still not reused (AUTOINCREMENT)
    idx.remove("d")
    idx.close()
    with EmbeddingIndex(tmp_path / "index") as again:
        assert again.add("e", v[4]) == 5


def test_invalid_vectors_are_rejected(idx: EmbeddingIndex) -> None:
    bad = {
        "wrong dim": np.ones(64, dtype=np.float32),
        "matrix": np.ones((2, D), dtype=np.float32),
        "ints": np.ones(D, dtype=np.int64),
        "nan": np.full(D, np.nan, dtype=np.float32),
        "inf": np.full(D, np.inf, dtype=np.float32),
        "zeros": np.zeros(D, dtype=np.float32),
        "string": "not a vector",
    }
    for name, vec in bad.items():
        with pytest.raises(InvalidVectorError) as info:
            idx.add(f"k-{name}", vec)
        assert isinstance(info.value, ValueError), name
    with pytest.raises(InvalidVectorError, match=r"shape \(128,\)"):
        idx.search(np.ones(3, dtype=np.float32))
    with pytest.raises(InvalidQueryError):
        idx.add("", units(1)[0])
    with pytest.raises(InvalidQueryError, match="unknown metadata"):
        idx.add_many([{"key": "x", "vector": units(1)[0], "colour": "red"}])
    assert len(idx) == 0


def test_dim_mismatch_on_open(tmp_path: Path) -> None:
    EmbeddingIndex(tmp_path, dim=16).close()
    with pytest.raises(InvalidVectorError, match="dim=16"):
        EmbeddingIndex(tmp_path, dim=128)


# --------------------------------------------------------------------------- search


def test_search_matches_brute_force(idx: EmbeddingIndex) -> None:
    base = units(3000, seed=1)
    keys = [f"file:/m/{i}" for i in range(len(base))]
    ids = idx.add_many(zip(keys, base))
    assert ids == list(range(1, 3001))
    queries = units(25, seed=2)
    for q in queries:
        hits = idx.search(q, k=10)
        assert all(isinstance(h, SearchHit) for h in hits)
        assert [h.key for h in hits] == brute_force(base, keys, q, 10)
        expected = np.sort(base @ q)[::-1][:10]
        np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)  # larger = closer
        assert all(h.entry.key == h.key and h.entry.id == h.id for h in hits)
    assert idx.search(base[7], k=1)[0].key == keys[7]
    assert len(idx.search(queries[0], k=5000)) == 3000
    with pytest.raises(InvalidQueryError):
        idx.search(queries[0], k=0)


def test_search_empty_index(idx: EmbeddingIndex) -> None:
    assert idx.search(units(1)[0], k=5) == []


def test_filters(idx: EmbeddingIndex) -> None:
    base = units(2000, seed=3)
    keys, kinds = [], []
    for i in range(len(base)):
        kind = "mlflow" if i % 2 else "hf"
        keys.append(f"{kind}:{i}")
        kinds.append(kind)
    families = ["rare" if i % 97 == 0 else "common" for i in range(len(base))]  # 21 rare
    idx.add_many({"key": k, "vector": v, "family_guess": f} for k, v, f in zip(keys, base, families))
    q = units(1, seed=4)[0]
    sel = np.array(kinds) == "mlflow"
    mkeys = [k for k, s in zip(keys, sel) if s]

    # dict filter == brute force over the subset; key-prefix filter; callable filter
    expect = brute_force(base[sel], mkeys, q, 10)
    assert [h.key for h in idx.search(q, k=10, filter={"source_kind": "mlflow"})] == expect
    assert [h.key for h in idx.search(q, k=10, filter="mlflow:")] == expect
    assert [h.key for h in idx.search(q, k=10, filter=lambda e: e.source_kind == "mlflow")] == expect

    # rare matches still give k results (over-fetch and widen), in exact order
    rare = np.array(families) == "rare"
    rkeys = [k for k, r in zip(keys, rare) if r]
    for flt in ({"family_guess": "rare"}, lambda e: e.family_guess == "rare"):
        hits = idx.search(q, k=10, filter=flt)
        assert [h.key for h in hits] == brute_force(base[rare], rkeys, q, 10)
        assert len(idx.search(q, k=50, filter=flt)) == int(rare.sum())  # all that exist

    # "any of" values, NULL, combined constraints, exclude_keys
    both = idx.search(q, k=3000, filter={"family_guess": ["rare", "common"]})
    assert len(both) == 2000
    assert idx.search(q, k=5, filter={"uri": None}) and idx.search(q, k=5, filter={"uri": "x"}) == []
    combo = idx.search(q, k=100, filter={"source_kind": "hf", "family_guess": "rare"})
    assert {h.key for h in combo} == {k for k, r, s in zip(keys, rare, kinds) if r and s == "hf"}
    top = idx.search(q, k=3)
    excluded = idx.search(q, k=3, exclude_keys=[top[0].key])
    assert [h.key for h in excluded] == [h.key for h in idx.search(q, k=4)][1:]
    assert idx.search(q, k=3, exclude_keys=top[0].key)[0].key == top[1].key  # a single str key
    assert idx.search(q, k=5, filter="nomatch:") == []

    with pytest.raises(InvalidQueryError, match="cannot filter on 'colour'"):
        idx.search(q, filter={"colour": "red"})
    with pytest.raises(InvalidQueryError, match="filter must be"):
        idx.search(q, filter=42)  # type: ignore[arg-type]


def test_filter_needing_exact_fallback(idx: EmbeddingIndex) -> None:
    """A callable that accepts only entries far from the query forces the widening to the end."""
    base = units(3000, seed=5)
    keys = [f"k{i}" for i in range(len(base))]
    idx.add_many(zip(keys, base))
    q = units(1, seed=6)[0]
    worst = set(brute_force(-base, keys, q, 15))  # the 15 entries with the lowest scores
    hits = idx.search(q, k=10, filter=lambda e: e.key in worst)
    order = [keys[i] for i in np.argsort(-(base @ q)) if keys[i] in worst][:10]
    assert [h.key for h in hits] == order


# --------------------------------------------------------------------------- versions, freshness


def test_encoder_version_refusal(tmp_path: Path) -> None:
    v = units(2)
    with EmbeddingIndex(tmp_path, encoder_version="enc-1") as index:
        index.add("a", v[0])
        with pytest.raises(EncoderVersionMismatchError, match="nar index rebuild"):
            index.add("b", v[1], encoder_version="enc-2")
        assert len(index) == 1
    with pytest.raises(EncoderVersionMismatchError, match="nar index rebuild") as info:
        EmbeddingIndex(tmp_path, encoder_version="enc-2")
    assert info.value.found == "enc-1" and info.value.expected == "enc-2"
    with EmbeddingIndex(tmp_path) as index:  # no version given: adopts the recorded one
        assert index.encoder_version == "enc-1"
        assert index.stats()["encoder_version"] == "enc-1"


def test_encoder_version_recorded_from_first_entry(tmp_path: Path) -> None:
    v = units(3)
    with EmbeddingIndex(tmp_path) as index:
        assert index.encoder_version is None
        index.add("a", v[0], encoder_version="enc-7")
        assert index.encoder_version == "enc-7"
        index.add("b", v[1])  # inherits the index's version
        assert index.get("b").encoder_version == "enc-7"
        with pytest.raises(EncoderVersionMismatchError):
            index.add_many([("c", v[2], {"encoder_version": "enc-8"})])
    with pytest.raises(EncoderVersionMismatchError):
        EmbeddingIndex(tmp_path, encoder_version="enc-8")


def test_second_handle_sees_writes_of_the_first(tmp_path: Path) -> None:
    v = units(3, seed=7)
    with EmbeddingIndex(tmp_path) as reader, EmbeddingIndex(tmp_path) as writer:
        assert reader.search(v[0], k=1) == []
        writer.add("a", v[0])
        assert reader.search(v[0], k=1)[0].key == "a"
        writer.upsert("a", v[1])
        assert reader.search(v[1], k=1)[0].score == pytest.approx(1.0, abs=1e-5)
        writer.remove("a")
        writer.add("b", v[2])
        assert [h.key for h in reader.search(v[1], k=5)] == ["b"]


def test_persistence_and_cache_reuse(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = units(500, seed=8)
    with EmbeddingIndex(tmp_path) as index:
        index.add_many((f"k{i}", v) for i, v in enumerate(base))
        index.search(base[0], k=1)
    with caplog.at_level(logging.INFO, logger="nar_plugin.index"):
        with EmbeddingIndex(tmp_path) as index:
            assert index.search(base[3], k=1)[0].key == "k3"
            st = index.stats()
    assert not [r for r in caplog.records if "rebuild" in r.getMessage() or "built" in r.getMessage()]
    assert st["count"] == 500 and st["dim"] == D and st["index_type"] == "Flat (exact)"
    assert st["path"] == str(tmp_path) and st["size_bytes"] > 500 * D * 4
    assert st["generation"] == st["cache_generation"]


FIXTURE_V1 = Path(__file__).parent / "fixtures" / "index_v1"


def test_index_written_by_format_1_code_opens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An index written by the single-module implementation (format 1) opens as it is, cache too."""
    import shutil

    d = tmp_path / "index"
    shutil.copytree(FIXTURE_V1, d)
    x = np.random.default_rng(123).standard_normal((3, D)).astype(np.float32)  # how it was made
    with caplog.at_level(logging.INFO, logger="nar_plugin.index"), EmbeddingIndex(d, encoder_version="enc-fixture") as index:
        assert index.keys() == ["hf:org/a@main", "mlflow:model:m-2"] and "file:/c" not in index
        e = index.get("hf:org/a@main")
        assert (e.id, e.graph_hash, e.params_count, e.metadata, e.source_kind) == (1, "ga", 10, {"n": 1}, "hf")
        np.testing.assert_allclose(e.vector, x[0] / np.linalg.norm(x[0]), atol=1e-6)
        assert index.search(x[1], k=1)[0].key == "mlflow:model:m-2"
        st = index.stats()
        assert st["format_version"] == 1 and st["generation"] == st["cache_generation"] == 4
        assert index.add("file:/d", x[2]) == 4  # the removed id 3 is not reused
    assert not [r for r in caplog.records if "rebuild" in r.getMessage() or "built" in r.getMessage()]


# --------------------------------------------------------------------------- approximate path


def test_ivf_path_with_small_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise the approximate index (normally >= 100k entries) with a lowered threshold."""
    monkeypatch.setattr(index_mod.ann, "APPROX_THRESHOLD", 2000)
    rng = np.random.default_rng(9)
    centres = units(60, seed=10)
    labels = rng.integers(0, 60, 4000)
    base = centres[labels] + 0.3 * rng.standard_normal((4000, D)).astype(np.float32) / np.sqrt(D)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    keys = [f"k{i}" for i in range(len(base))]
    with EmbeddingIndex(tmp_path) as index:
        index.add_many(zip(keys[:1000], base[:1000]))
        assert index.stats()["index_type"] == "Flat (exact)"
        index.add_many(zip(keys[1000:], base[1000:]))
        assert index.stats()["index_type"].startswith("IVF")
        queries = base[:50] + 0.05 * rng.standard_normal((50, D)).astype(np.float32) / np.sqrt(D)
        found = 0
        for q in queries:
            truth = set(brute_force(base, keys, q, 10))
            found += len(truth & {h.key for h in index.search(q, k=10)})
        assert found / 500 >= 0.9
        for q in queries[:10]:  # exact=True visits every list: identical to brute force
            assert [h.key for h in index.search(q, k=10, exact=True)] == brute_force(base, keys, q, 10)
        # removal, upsert and filters work on the IVF cache too
        index.remove("k0")
        assert all(h.key != "k0" for h in index.search(base[0], k=10))
        index.upsert("k1", base[2])
        assert {h.key for h in index.search(base[2], k=2)} == {"k1", "k2"}
        few = index.search(base[5], k=5, filter=lambda e: e.key.endswith("7"))
        assert len(few) == 5 and all(h.key.endswith("7") for h in few)
    with EmbeddingIndex(tmp_path) as index:  # the IVF cache file loads back
        assert index.stats()["index_type"].startswith("IVF")
        assert index.search(base[9], k=1)[0].key == "k9"


def test_choose_ann_params() -> None:
    assert index_mod.choose_ann_params(99_999).kind == "flat"
    p = index_mod.choose_ann_params(1_000_000)
    assert p.kind == "ivf" and p.nlist == 4096 and 0 < p.nprobe <= p.nlist
    assert index_mod.choose_ann_params(100_000).kind == "ivf"


# --------------------------------------------------------------------------- corruption


def _corrupt_faiss_delete(d: Path) -> None:
    (d / "vectors.faiss").unlink()


def _corrupt_faiss_truncate(d: Path) -> None:
    f = d / "vectors.faiss"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _corrupt_faiss_garbage(d: Path) -> None:
    f = d / "vectors.faiss"
    data = bytearray(f.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    f.write_bytes(bytes(data))


def _corrupt_faiss_sidecar(d: Path) -> None:
    (d / "vectors.faiss.json").write_text("{not json")


def _corrupt_faiss_swap(d: Path) -> None:
    """A valid FAISS file of another index with a matching sidecar: stale, not corrupt."""
    other = d.parent / "other"
    with EmbeddingIndex(other) as o:
        o.add("zzz", units(1, seed=99)[0])
    for name in ("vectors.faiss", "vectors.faiss.json"):
        (d / name).write_bytes((other / name).read_bytes())


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_faiss_delete, _corrupt_faiss_truncate, _corrupt_faiss_garbage, _corrupt_faiss_sidecar, _corrupt_faiss_swap],
    ids=["deleted", "truncated", "garbage", "bad-sidecar", "other-index"],
)
def test_faiss_cache_is_rebuilt_silently(tmp_path: Path, corrupt) -> None:
    d = tmp_path / "index"
    base = units(300, seed=11)
    with EmbeddingIndex(d) as index:
        index.add_many((f"k{i}", v) for i, v in enumerate(base))
        index.search(base[0], k=1)
    corrupt(d)
    with EmbeddingIndex(d) as index:
        for i in (0, 150, 299):
            assert index.search(base[i], k=1)[0].key == f"k{i}"
        assert "zzz" not in {h.key for h in index.search(base[0], k=300)}
        assert index.stats()["cache_generation"] == index.stats()["generation"]  # rewritten
    meta = json.loads((d / "vectors.faiss.json").read_text())
    assert meta["count"] == 300 and meta["size"] == (d / "vectors.faiss").stat().st_size


def test_stale_faiss_cache_catches_up(tmp_path: Path) -> None:
    d = tmp_path / "index"
    base = units(50, seed=12)
    with EmbeddingIndex(d) as index:
        index.add_many((f"k{i}", v) for i, v in enumerate(base[:40]))
    saved = {n: (d / n).read_bytes() for n in ("vectors.faiss", "vectors.faiss.json")}
    with EmbeddingIndex(d) as index:
        index.remove("k0")
        index.add_many((f"k{i}", v) for i, v in enumerate(base[40:], start=40))
    for n, data in saved.items():  # put the old cache back
        (d / n).write_bytes(data)
    with EmbeddingIndex(d) as index:
        assert index.search(base[45], k=1)[0].key == "k45"
        assert all(h.key != "k0" for h in index.search(base[0], k=50))
        assert len(index.search(base[0], k=100)) == 49


def _sqlite_truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def _sqlite_zero(db: Path) -> None:
    db.write_bytes(b"")


def _sqlite_header_garbage(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:100] = os.urandom(100)
    db.write_bytes(bytes(data))


def _sqlite_page_garbage(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    npages = len(data) // page
    for p in (npages // 3, npages // 2, npages - 2):  # overwrite whole b-tree pages
        data[p * page : (p + 1) * page] = np.random.default_rng(p).integers(0, 256, page, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def _sqlite_drop_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE tombstones")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "corrupt",
    [_sqlite_truncate, _sqlite_zero, _sqlite_header_garbage, _sqlite_page_garbage, _sqlite_drop_schema],
    ids=["truncated", "zero-bytes", "garbage-header", "garbage-pages", "schema-missing"],
)
def test_corrupt_sqlite_raises_then_restore_from_export(tmp_path: Path, corrupt) -> None:
    d = tmp_path / "index"
    base = units(400, seed=13)
    with EmbeddingIndex(d, encoder_version="enc-1") as index:
        index.add_many(
            {"key": f"hf:m{i}", "vector": v, "graph_hash": f"g{i % 7}", "metadata": {"i": i}} for i, v in enumerate(base)
        )
        for i in range(0, 400, 40):
            index.remove(f"hf:m{i}")
        assert index.export(tmp_path / "export.jsonl") == 390
        expected_ids = {k: index.get(k).id for k in index.keys()}
    corrupt(d / "meta.sqlite")
    with pytest.raises(IndexCorruptError, match="nar index rebuild") as info:
        EmbeddingIndex(d)
    assert isinstance(info.value, OSError)

    restored = EmbeddingIndex.restore(import_jsonl(tmp_path / "export.jsonl"), d)
    try:
        assert len(restored) == 390 and restored.encoder_version == "enc-1"
        assert {k: restored.get(k).id for k in restored.keys()} == expected_ids  # ids kept
        assert restored.get("hf:m5").metadata == {"i": 5} and restored.get("hf:m5").graph_hash == "g5"
        assert restored.search(base[5], k=1)[0].key == "hf:m5"
        assert restored.add("hf:new", units(1, seed=14)[0]) == 401  # ids continue past the old max
        conn = sqlite3.connect(d / "meta.sqlite")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    finally:
        restored.close()
    assert list(d.glob("meta.sqlite.corrupt-*")), sorted(p.name for p in d.iterdir())
    with EmbeddingIndex(d) as again:
        assert len(again) == 391


def test_rebuild_in_place_and_from_entries(tmp_path: Path) -> None:
    base = units(100, seed=15)
    with EmbeddingIndex(tmp_path, encoder_version="enc-1") as index:
        index.add_many((f"k{i}", v) for i, v in enumerate(base))
        (tmp_path / "vectors.faiss").unlink()
        index.rebuild()  # cache only
        assert (tmp_path / "vectors.faiss").exists() and len(index) == 100
        entries = list(index.entries())
        assert [e.key for e in entries] == [f"k{i}" for i in range(100)]
        index.rebuild(entries[:10])  # recreate from scratch with 10 entries
        assert len(index) == 10 and index.search(base[3], k=1)[0].key == "k3"
    assert list(tmp_path.glob("meta.sqlite.bak-*"))


def test_restore_with_bad_entries_leaves_index_untouched(tmp_path: Path) -> None:
    v = units(3)
    with EmbeddingIndex(tmp_path) as index:
        index.add("a", v[0])
        with pytest.raises(KeyExistsError):
            index.rebuild([("x", v[1]), ("x", v[2])])
        with pytest.raises(InvalidVectorError):
            index.rebuild([("y", v[1]), ("z", np.zeros(D, dtype=np.float32))])
        assert index.keys() == ["a"]
    assert not list(tmp_path.glob("meta.sqlite.*-*"))


def test_export_import_round_trip(tmp_path: Path, idx: EmbeddingIndex) -> None:
    base = units(20, seed=16)
    idx.add_many((f"k{i}", v, {"uri": f"u{i}", "params_count": i}) for i, v in enumerate(base))
    path = tmp_path / "out.jsonl"
    assert idx.export(path) == 20
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "nar-index-export" and len(lines) == 21
    assert all(json.loads(line)["vector"].startswith("nar1:") for line in lines[1:])
    back = list(import_jsonl(path))
    assert [e.key for e in back] == [f"k{i}" for i in range(20)]
    for e, v in zip(back, base):
        assert np.max(np.abs(e.vector - v)) <= 1e-3
        assert e.uri == f"u{e.id - 1}" and e.encoder_version == "enc-1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + lines[1] + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:3"):
        list(import_jsonl(bad))


# --------------------------------------------------------------------------- locking, processes


def test_lock_timeout_raises_index_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idx: EmbeddingIndex) -> None:
    monkeypatch.setenv("NAR_LOCK_TIMEOUT", "0.2")
    other = filelock.FileLock(str(idx.path / ".lock"), thread_local=False)
    other.acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError, match="NAR_LOCK_TIMEOUT") as info:
            idx.add("a", units(1)[0])
        assert isinstance(info.value, TimeoutError) and time.monotonic() - t0 < 5
    finally:
        other.release()
    idx.add("a", units(1)[0])
    assert len(idx) == 1


def _concurrent_writer(path: str, worker: int, n: int) -> None:
    rng = np.random.default_rng(1000 + worker)
    index = EmbeddingIndex(path, encoder_version="enc-1")
    for j in range(n):
        index.add(f"w{worker}:{j}", rng.standard_normal(D).astype(np.float32))
        if j % 10 == 0:
            index.search(rng.standard_normal(D).astype(np.float32), k=3)  # readers interleave
    index.close()


def test_eight_processes_fifty_adds_each(tmp_path: Path) -> None:
    path = tmp_path / "index"
    parent = EmbeddingIndex(path, encoder_version="enc-1")  # open before the writers start
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_writer, args=(str(path), w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    try:
        assert len(parent) == 400
        ids = [parent.get(k).id for k in parent.keys()]
        assert sorted(ids) == list(range(1, 401))
        for w in range(8):
            rng = np.random.default_rng(1000 + w)
            for j in range(50):
                v = rng.standard_normal(D).astype(np.float32)
                if j % 10 == 0:
                    rng.standard_normal(D)  # the writer's interleaved search query
                hit = parent.search(v, k=1)[0]
                assert hit.key == f"w{w}:{j}" and hit.score == pytest.approx(1.0, abs=1e-5)
    finally:
        parent.close()
    with EmbeddingIndex(path) as fresh:
        assert len(fresh) == 400 and len(fresh.search(units(1)[0], k=400)) == 400


_KILL_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from nar_plugin.index import EmbeddingIndex

    index = EmbeddingIndex(sys.argv[1], encoder_version="enc-1")
    rng = np.random.default_rng(0)

    def batch(b):
        for j in range(10):
            time.sleep(0.003)  # slow producer: the kill lands inside the transaction
            yield (f"b{b:04d}:{j}", rng.standard_normal(128).astype(np.float32))

    b = 0
    while True:
        index.add_many(batch(b))
        b += 1
    """
)


def test_kill_9_mid_batch_leaves_consistent_index(tmp_path: Path) -> None:
    path = tmp_path / "index"
    EmbeddingIndex(path, encoder_version="enc-1").close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(path)], env=env)
    try:
        watcher = sqlite3.connect(path / "meta.sqlite", timeout=10)
        deadline = time.monotonic() + 60
        while watcher.execute("SELECT COUNT(*) FROM entries").fetchone()[0] < 40:
            assert proc.poll() is None, "writer died on its own"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.01)
        watcher.close()
        time.sleep(0.015)  # land inside a batch (10 items x 3 ms)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with EmbeddingIndex(path, encoder_version="enc-1") as index:  # verify=True runs quick_check
        conn = sqlite3.connect(path / "meta.sqlite")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        committed = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        conn.close()
        n = len(index)
        assert n == committed and n >= 40
        assert n % 10 == 0  # batches are atomic: no half batch
        assert index.keys() == [f"b{b:04d}:{j}" for b in range(n // 10) for j in range(10)]
        rng = np.random.default_rng(0)
        vecs = [rng.standard_normal(D).astype(np.float32) for _ in range(n)]
        for i in (0, n // 2, n - 1):
            assert index.search(vecs[i], k=1)[0].key == index.keys()[i]
        assert len(index.search(vecs[0], k=n + 10)) == n
        index.add("after-crash", vecs[0])  # still writable (lock released by the kernel)
        assert len(index) == n + 1


# --------------------------------------------------------------------------- shared handles (open_index)


@pytest.fixture
def shared() -> object:
    yield index_mod.open_index
    index_mod.close_all()


def test_open_index_one_handle_per_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared) -> None:
    a = shared(tmp_path / "a")
    assert isinstance(a, EmbeddingIndex) and not a.closed
    assert shared(tmp_path / "a") is a
    assert shared(str(tmp_path / "a")) is a
    monkeypatch.chdir(tmp_path)
    assert shared("a") is a and shared(Path("x") / ".." / "a") is a  # keyed by the resolved path
    b = shared(tmp_path / "b")
    assert b is not a and b.path == (tmp_path / "b").resolve()
    assert shared(tmp_path / "a", read_only=True) is not a  # another kind of handle
    monkeypatch.setenv("NAR_HOME", str(tmp_path / "home"))
    home = shared()
    assert home.path == (tmp_path / "home" / "index").resolve() and shared() is home
    monkeypatch.setenv("NAR_HOME", str(tmp_path / "home2"))  # read at call time
    assert shared() is not home
    assert index_mod.close_all() == 5 and a.closed and home.closed
    assert index_mod.close_all() == 0


def test_open_index_reopens_closed_or_deleted(tmp_path: Path, shared) -> None:
    v = units(2, seed=40)
    a = shared(tmp_path / "i")
    a.add("x", v[0])
    a.close()
    b = shared(tmp_path / "i")
    assert b is not a and not b.closed and b.get("x") is not None
    assert shared(tmp_path / "i") is b
    import shutil

    shutil.rmtree(tmp_path / "i")  # the index is deleted under the handle
    c = shared(tmp_path / "i")
    assert c is not b and len(c) == 0 and b.closed
    c.add("y", v[1])
    assert c.search(v[1], k=1)[0].key == "y"
    shared.cache_clear()  # the functools spelling
    assert c.closed and shared(tmp_path / "i") is not c


def test_close_all_skips_deleted_indexes_quietly(tmp_path: Path, shared, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    h = shared(tmp_path / "gone")
    h.add("a", units(1, seed=46)[0])
    shutil.rmtree(tmp_path / "gone")  # e.g. a temporary NAR_HOME removed before exit
    with caplog.at_level(logging.WARNING, logger="nar_plugin.index"):
        assert index_mod.close_all() == 1
    assert h.closed and not caplog.records


def test_open_index_is_thread_safe(tmp_path: Path, shared) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: shared(tmp_path / "t"), range(16)))
    assert all(h is got[0] for h in got)
    v = units(40, seed=41)
    with ThreadPoolExecutor(4) as pool:  # one handle written and searched from several threads
        list(pool.map(lambda i: got[0].add(f"k{i}", v[i]), range(40)))
        hits = list(pool.map(lambda i: got[0].search(v[i], k=1)[0].key, range(40)))
    assert hits == [f"k{i}" for i in range(40)] and len(got[0]) == 40


def test_open_index_checks_encoder_version_on_every_call(tmp_path: Path, shared) -> None:
    h = shared(tmp_path)  # no version yet
    assert h.encoder_version is None
    assert shared(tmp_path, encoder_version="enc-1") is h and h.encoder_version == "enc-1"  # recorded
    with pytest.raises(EncoderVersionMismatchError) as info:
        shared(tmp_path, encoder_version="enc-2")
    assert info.value.found == "enc-1" and not h.closed  # the shared handle stays usable
    with pytest.raises(EncoderVersionMismatchError):
        EmbeddingIndex(tmp_path, encoder_version="enc-2")  # same verdict as a fresh open


def test_read_only_handle(tmp_path: Path, shared) -> None:
    v = units(2, seed=42)
    ro = shared(tmp_path, encoder_version="enc-1", read_only=True)
    assert ro.encoder_version is None  # checked, never recorded by a read-only handle
    for write in (lambda: ro.add("a", v[0]), lambda: ro.upsert("a", v[0]), lambda: ro.add_many([("a", v[0])]),
                  lambda: ro.remove("a"), lambda: ro.rebuild([("a", v[0])])):
        with pytest.raises(InvalidQueryError, match="read-only"):
            write()
    rw = shared(tmp_path, encoder_version="enc-1")
    rw.add("a", v[0])
    assert ro.search(v[0], k=1)[0].key == "a" and ro.get("a").encoder_version == "enc-1"
    ro.rebuild()  # re-deriving the FAISS cache writes no entries: allowed
    assert len(ro) == 1


_OTHER_PROCESS_WRITES = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nar_plugin.index import EmbeddingIndex

    with EmbeddingIndex(sys.argv[1]) as index:
        vecs = np.load(sys.argv[2])
        if sys.argv[3] == "add":
            index.add_many((f"p{i}", v) for i, v in enumerate(vecs))
        else:
            index.remove("p0")
            index.upsert("p1", vecs[0])
    """
)


def test_cached_handle_sees_writes_of_other_processes(tmp_path: Path, shared) -> None:
    d = tmp_path / "index"
    vecs = units(300, seed=43)
    np.save(tmp_path / "v.npy", vecs)
    h = shared(d, encoder_version="enc-1")
    assert h.search(vecs[0], k=1) == []  # the in-memory FAISS index now exists and is current
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def other(action: str) -> None:
        subprocess.run([sys.executable, "-c", _OTHER_PROCESS_WRITES, str(d), str(tmp_path / "v.npy"), action],
                       env=env, check=True, timeout=120)

    other("add")
    same = shared(d, encoder_version="enc-1")
    assert same is h and len(h) == 300 and h.get("p7").encoder_version == "enc-1"
    assert [h.search(vecs[i], k=1)[0].key for i in (0, 150, 299)] == ["p0", "p150", "p299"]
    other("change")
    hit = h.search(vecs[0], k=1)[0]  # p0 removed, p1 moved onto p0's vector
    assert hit.key == "p1" and hit.score == pytest.approx(1.0, abs=1e-5) and "p0" not in h
    assert all(x.key != "p0" for x in h.search(vecs[0], k=300))


_EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nar_plugin.index import open_index

    index = open_index(sys.argv[1])
    index.add_many((f"k{i}", v) for i, v in enumerate(np.load(sys.argv[2])))
    index.search(np.load(sys.argv[2])[0], k=1)
    """
)


def test_shared_handles_are_closed_at_exit(tmp_path: Path) -> None:
    """Below the save threshold only close() writes the FAISS cache file: atexit must run it."""
    d = tmp_path / "index"
    np.save(tmp_path / "v.npy", units(20, seed=44))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", _EXIT_WITHOUT_CLOSE, str(d), str(tmp_path / "v.npy")],
                   env=env, check=True, timeout=120)
    meta = json.loads((d / "vectors.faiss.json").read_text())
    assert meta["count"] == 20 and meta["size"] == (d / "vectors.faiss").stat().st_size


def test_forked_child_opens_its_own_handle(tmp_path: Path, shared) -> None:
    h = shared(tmp_path)
    h.add("a", units(1, seed=45)[0])
    pid = os.fork()
    if pid == 0:  # child: never reuse the parent's SQLite connection
        code = 1
        try:
            mine = shared(tmp_path)
            code = 0 if mine is not h and len(mine) == 1 and not h.closed else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert shared(tmp_path) is h and len(h) == 1
