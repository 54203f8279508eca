"""Tests of nar_plugin.index.codec: versioned float16/base64 text form of embeddings."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from nar_plugin.index.codec import EMBEDDING_DIM, decode_embedding, encode_embedding
from nar_plugin.errors import EmbeddingCodecError, NarError


def _units(n: int, seed: int = 0, dim: int = EMBEDDING_DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _tag(payload: bytes, prefix: str = "nar1:") -> str:
    return prefix + base64.b64encode(payload).decode("ascii")


def test_round_trip_error_below_1e3_on_many_random_unit_vectors() -> None:
    vecs = _units(2000)
    # also some adversarial shapes: one-hot, heavy-tailed, near-constant
    rng = np.random.default_rng(1)
    extra = np.zeros((3, EMBEDDING_DIM), dtype=np.float32)
    extra[0, 7] = 1.0
    extra[1] = rng.standard_cauchy(EMBEDDING_DIM)
    extra[2] = 1.0 + 1e-3 * rng.standard_normal(EMBEDDING_DIM)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    worst = 0.0
    for v in np.concatenate([vecs, extra]):
        out = decode_embedding(encode_embedding(v))
        assert out.dtype == np.float32 and out.shape == (EMBEDDING_DIM,)
        assert abs(float(np.linalg.norm(out)) - 1.0) < 1e-5
        worst = max(worst, float(np.max(np.abs(out - v))))
    assert worst <= 1e-3


def test_encoded_size_well_under_1kb_and_ascii() -> None:
    s = encode_embedding(_units(1)[0])
    assert s.startswith("nar1:")
    assert len(s) == 5 + 344
    assert len(s.encode("ascii")) < 1024


def test_encode_normalises_and_uses_little_endian_float16() -> None:
    v = np.arange(1, EMBEDDING_DIM + 1, dtype=np.float64)  # not unit norm, float64
    s = encode_embedding(v)
    raw = base64.b64decode(s[5:])
    expected = (v / np.linalg.norm(v)).astype("<f2").tobytes()
    assert raw == expected
    np.testing.assert_allclose(decode_embedding(s), v / np.linalg.norm(v), atol=1e-3)


def test_decode_accepts_surrounding_whitespace_and_row_vector_input() -> None:
    v = _units(1, seed=3)
    s = encode_embedding(v)  # (1, D) row accepted
    np.testing.assert_allclose(decode_embedding(f"  {s}\n"), v[0], atol=1e-3)


def test_custom_dim_round_trip() -> None:
    v = _units(1, seed=4, dim=16)[0]
    out = decode_embedding(encode_embedding(v, dim=16), dim=16)
    np.testing.assert_allclose(out, v, atol=1e-3)


_GOOD = _units(1, seed=5)[0].astype("<f2").tobytes()
_NAN = np.full(EMBEDDING_DIM, np.nan, dtype="<f2").tobytes()
_INF = np.concatenate([np.ones(EMBEDDING_DIM - 1), [np.inf]]).astype("<f2").tobytes()
_ZERO = np.zeros(EMBEDDING_DIM, dtype="<f2").tobytes()


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        pytest.param(base64.b64encode(_GOOD).decode(), "format prefix", id="no-prefix"),
        pytest.param(_tag(_GOOD, "xyz1:"), "format prefix", id="wrong-prefix"),
        pytest.param(_tag(_GOOD, "NAR1:"), "format prefix", id="uppercase-prefix"),
        pytest.param(_tag(_GOOD, "nar:"), "format prefix", id="prefix-without-version"),
        pytest.param(_tag(_GOOD, "nar2:"), "version 2 is not supported", id="future-version"),
        pytest.param(_tag(_GOOD, "nar0:"), "version 0 is not supported", id="version-zero"),
        pytest.param("nar1:!!!not base64!!!", "not valid base64", id="bad-base64-chars"),
        pytest.param(_tag(_GOOD)[:-3], "not valid base64", id="bad-base64-padding"),
        pytest.param("nar1:\u00e9\u00e9\u00e9\u00e9", "not valid base64", id="non-ascii"),
        pytest.param("nar1:", "expected 256 bytes", id="empty-body"),
        pytest.param(_tag(_GOOD[:128]), "expected 256 bytes", id="too-short-dim-64"),
        pytest.param(_tag(_GOOD + b"\x00\x00"), "expected 256 bytes", id="too-long"),
        pytest.param(_tag(_GOOD[:-1]), "expected 256 bytes", id="odd-byte-count"),
        pytest.param(_tag(_NAN), "non-finite", id="nan"),
        pytest.param(_tag(_INF), "non-finite", id="inf"),
        pytest.param(_tag(_ZERO), "norm 0.0", id="zero-vector"),
        pytest.param("", "format prefix", id="empty-string"),
    ],
)
def test_decode_rejects_malformed(encoded: str, message: str) -> None:
    with pytest.raises(EmbeddingCodecError, match=message) as info:
        decode_embedding(encoded)
    assert isinstance(info.value, ValueError) and isinstance(info.value, NarError)


@pytest.mark.parametrize("value", [b"nar1:AAAA", None, 123, ["nar1:"]], ids=["bytes", "none", "int", "list"])
def test_decode_rejects_non_str(value: object) -> None:
    with pytest.raises(EmbeddingCodecError, match="must be a str"):
        decode_embedding(value)  # type: ignore[arg-type]


def test_decode_rejects_dim_mismatch_against_requested_dim() -> None:
    s = encode_embedding(_units(1)[0])
    with pytest.raises(EmbeddingCodecError, match="expected 128 bytes for dim=64"):
        decode_embedding(s, dim=64)


@pytest.mark.parametrize(
    ("vec", "message"),
    [
        pytest.param(np.ones(64, dtype=np.float32), r"shape \(128,\)", id="wrong-dim"),
        pytest.param(np.ones((2, 128), dtype=np.float32), r"shape \(128,\)", id="matrix"),
        pytest.param(np.full(128, np.nan, dtype=np.float32), "non-finite", id="nan"),
        pytest.param(np.zeros(128, dtype=np.float32), "norm 0.0", id="zero"),
        pytest.param(["a"] * 128, "numeric vector", id="strings"),
    ],
)
def test_encode_rejects_bad_vectors(vec: object, message: str) -> None:
    with pytest.raises(EmbeddingCodecError, match=message):
        encode_embedding(vec)  # type: ignore[arg-type]


def test_encode_rejects_unsupported_version() -> None:
    with pytest.raises(EmbeddingCodecError, match="version 2 is not supported"):
        encode_embedding(_units(1)[0], version=2)


def test_codec_import_does_not_load_faiss() -> None:
    """MLflow/HF hooks import the codec on every log_model: it must not pull in the index store."""
    import subprocess
    import sys

    code = (
        "import sys, nar_plugin.index.codec\n"
        "heavy = sorted(m for m in ('faiss', 'filelock', 'sqlite3', 'nar_plugin.index.store') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "from nar_plugin.index import EmbeddingIndex, open_index\n"  # the package still re-exports
        "assert 'faiss' in sys.modules and EmbeddingIndex.__module__ == 'nar_plugin.index.store'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
