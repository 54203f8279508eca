"""Text codec for architecture embeddings (MLflow tags, HF card metadata, index exports).

An embedding is a unit-norm ``float32`` vector of dimension :data:`EMBEDDING_DIM`. Its text form
is a format-version prefix followed by the base64 of the vector as little-endian ``float16``::

    nar1:<base64 of 128 x float16 LE>      # 5 + 344 = 349 characters

``float16`` halves the size of the tag (MLflow run tags are capped at 8,000 characters on SQL
stores) and loses at most ~5e-4 per component of a unit vector, which is far below what changes
a nearest-neighbour ranking. The prefix carries the format version so that a future format can be
told apart and refused with a clear message instead of being decoded as garbage. Decoding
re-normalises to unit norm, so inner products of decoded vectors are cosines.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re

import numpy as np

from nar_plugin.errors import EmbeddingCodecError

__all__ = [
    "EMBEDDING_DIM",
    "CODEC_VERSION",
    "SUPPORTED_VERSIONS",
    "encode_embedding",
    "decode_embedding",
]

logger = logging.getLogger(__name__)

#: Dimension of the architecture embedding produced by the shipped encoder.
EMBEDDING_DIM = 128
#: Format version written by :func:`encode_embedding` by default.
CODEC_VERSION = 1
#: Format versions :func:`decode_embedding` can read.
SUPPORTED_VERSIONS = (1,)

_PREFIX_RE = re.compile(r"^nar(\d+):")
_WIRE_DTYPE = np.dtype("<f2")  # little-endian float16, independent of the host byte order


def _prefix(version: int) -> str:
    return f"nar{version}:"


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise EmbeddingCodecError(
            f"embedding format version {version} is not supported; expected one of "
            f"{', '.join(str(v) for v in SUPPORTED_VERSIONS)} (upgrade nar-plugin to read newer tags)"
        )


def _unit(vec: np.ndarray, what: str) -> np.ndarray:
    """Return ``vec`` as finite, unit-norm float32 or raise :class:`EmbeddingCodecError`."""
    if not np.all(np.isfinite(vec)):
        raise EmbeddingCodecError(f"{what} contains non-finite values (NaN or inf)")
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if norm == 0.0 or not np.isfinite(norm):
        raise EmbeddingCodecError(f"{what} has norm {norm}; expected a non-zero vector")
    return (vec.astype(np.float64) / norm).astype(np.float32)


def encode_embedding(vec: np.ndarray | list[float], version: int = CODEC_VERSION, *, dim: int = EMBEDDING_DIM) -> str:
    """Encode an embedding as a short, versioned ASCII string.

    The vector is normalised to unit norm, cast to little-endian float16 and base64-encoded
    after a ``nar<version>:`` prefix. For ``dim=128`` the result has 349 characters.

    Args:
        vec: The embedding, shape ``(dim,)`` (any float dtype; a ``(1, dim)`` row is accepted).
        version: Format version to write; only ``1`` exists.
        dim: Expected dimension of ``vec``.

    Returns:
        The encoded string, e.g. ``"nar1:AAA8..."``.

    Raises:
        EmbeddingCodecError: Unsupported ``version``, wrong shape, non-finite values or a zero
            vector.

    Example:
        >>> s = encode_embedding(np.ones(128, dtype=np.float32))
        >>> s[:5], len(s)
        ('nar1:', 349)
    """
    _check_version(version)
    try:
        arr = np.asarray(vec, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingCodecError(f"embedding must be a numeric vector, found {type(vec).__name__}: {exc}") from None
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dim,):
        raise EmbeddingCodecError(f"embedding must have shape ({dim},), found {arr.shape}")
    unit = _unit(arr, "embedding")
    payload = unit.astype(_WIRE_DTYPE).tobytes()
    return _prefix(version) + base64.b64encode(payload).decode("ascii")


def decode_embedding(s: str, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Decode a string made by :func:`encode_embedding`.

    Args:
        s: The encoded embedding (``"nar1:<base64>"``); surrounding whitespace is ignored.
        dim: Expected dimension of the embedding.

    Returns:
        A unit-norm ``float32`` array of shape ``(dim,)`` (re-normalised after the float16
        round trip, so inner products of decoded vectors are cosines).

    Raises:
        EmbeddingCodecError: ``s`` is not a string, has no ``nar<N>:`` prefix, has an
            unsupported format version, is not valid base64, decodes to the wrong number of
            bytes (wrong dimension), or holds non-finite values or a zero vector.

    Example:
        >>> v = decode_embedding(encode_embedding(np.ones(128)))
        >>> v.shape, v.dtype
        ((128,), dtype('float32'))
    """
    if not isinstance(s, str):
        raise EmbeddingCodecError(f"encoded embedding must be a str, found {type(s).__name__}")
    text = s.strip()
    match = _PREFIX_RE.match(text)
    if match is None:
        shown = text[:12] + ("..." if len(text) > 12 else "")
        raise EmbeddingCodecError(
            f"encoded embedding must start with a format prefix like 'nar{CODEC_VERSION}:', found {shown!r}"
        )
    _check_version(int(match.group(1)))
    body = text[match.end() :]
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise EmbeddingCodecError(f"encoded embedding is not valid base64: {exc}") from None
    expected = dim * _WIRE_DTYPE.itemsize
    if len(raw) != expected:
        found_dim = len(raw) / _WIRE_DTYPE.itemsize
        raise EmbeddingCodecError(
            f"encoded embedding has {len(raw)} bytes ({found_dim:g} float16 values); "
            f"expected {expected} bytes for dim={dim}"
        )
    half = np.frombuffer(raw, dtype=_WIRE_DTYPE)
    return _unit(half.astype(np.float32), "decoded embedding")
