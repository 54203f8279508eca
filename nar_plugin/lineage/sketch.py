"""Streaming per-tensor statistics: an exact content hash, a CountSketch of the values, moments.

One :class:`TensorSketcher` per tensor is fed the tensor's raw bytes (little-endian, row-major)
in blocks of :data:`CHUNK` elements and never holds more than one block: memory is bounded by the
block size, whatever the tensor size.

The sketch is a CountSketch (a sparse Johnson-Lindenstrauss projection, Charikar et al. 2002):
element ``i`` of chunk ``c`` is added, with sign ``sign[i] * sigma(c)``, to bucket
``(bucket[i] + offset(c)) mod K``. ``bucket``/``sign`` is one fixed random table of ``CHUNK``
entries (seeded by :data:`SEED`, the same in every process) and ``offset``/``sigma`` a hash of the
chunk index, so two sketches of same-shaped tensors are made with the same projection and
``<S x, S y>`` estimates ``<x, y>`` without bias (relative standard error about ``sqrt(2 / K)``
for a squared norm). The projection is linear, so ``S x - S y = S (x - y)``: the distance between
two tensors is estimated from their sketches alone.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["CHUNK", "SEED", "SKETCH_DIM", "TensorSketcher", "TensorStats", "decode_block", "ones_sketch"]

#: sketch width (buckets); 64 float32 = 256 bytes per tensor
SKETCH_DIM = 64
#: elements per block; the random table has this many entries
CHUNK = 1 << 16
#: the global seed of the projection: changing it makes every stored sketch incomparable
SEED = 0x4E415231

#: dtype name -> (numpy dtype of the stored bytes, how they become float64)
_NUMPY: dict[str, str] = {
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<u2",
    "int8": "i1", "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "u1",
}
FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})


def itemsize(dtype: str) -> int:
    """Bytes per element of ``dtype`` (1 for the float8 kinds and anything unknown)."""
    return np.dtype(_NUMPY[dtype]).itemsize if dtype in _NUMPY else 1


def decode_block(raw: bytes | memoryview | np.ndarray, dtype: str) -> np.ndarray | None:
    """The values of a block of raw little-endian bytes, as float32 (16- and 32-bit floats) or
    float64 (the rest); ``None``: a dtype whose values are not sketched, e.g. float8 (such
    tensors are hashed only)."""
    code = _NUMPY.get(dtype)
    if code is None:
        return None
    arr = np.frombuffer(raw, dtype=code)
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32 if dtype in ("float32", "float16") else np.float64, copy=False)


def _mix(x: int) -> int:
    """splitmix64: a well-spread 64-bit hash of a chunk index."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=4)
def _table(k: int, chunk: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    buckets = rng.integers(0, k, chunk, dtype=np.int64)
    signs = rng.integers(0, 2, chunk).astype(np.float64) * 2.0 - 1.0
    return buckets, signs


def _chunk_params(c: int, k: int, seed: int) -> tuple[int, float]:
    h = _mix((seed << 20) ^ c)
    return int(h % k), 1.0 if (h >> 32) & 1 else -1.0


def _project(values: np.ndarray, c: int, k: int = SKETCH_DIM, seed: int = SEED, start: int = 0) -> np.ndarray:
    """The sketch of ``values``, elements ``start ...`` of chunk ``c`` (they must not cross its end)."""
    buckets, signs = _table(k, CHUNK, seed)
    m = values.shape[0]
    off, sigma = _chunk_params(c, k, seed)
    # bucket (b + off) mod k == the histogram over b, rotated by off (cheaper than moving every b)
    hist = np.bincount(buckets[start:start + m], weights=values * signs[start:start + m], minlength=k)
    return sigma * np.roll(hist, off)


@functools.lru_cache(maxsize=1024)
def ones_sketch(numel: int, k: int = SKETCH_DIM, seed: int = SEED) -> np.ndarray:
    """The sketch of a tensor of ``numel`` ones (to centre a sketch: ``S(x - m) = S x - m S 1``)."""
    out = np.zeros(k)
    for c in range(max(1, -(-numel // CHUNK))):
        m = min(CHUNK, numel - c * CHUNK)
        if m > 0:
            out += _project(np.ones(m), c, k, seed)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class TensorStats:
    """What is kept of one tensor.

    Attributes:
        name: its name (a state-dict key, an ONNX initializer name).
        dtype: ``float32``, ``bfloat16``, ``int64``...
        shape: its shape.
        sha256: hex digest of its raw little-endian bytes (row-major).
        sketch: CountSketch of its values (float32, :data:`SKETCH_DIM`); zeros when not sketched.
        mean, std: of its values.
        kurtosis: excess kurtosis of its values (0 for a Gaussian, -1.2 for a uniform).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    sketch: np.ndarray
    mean: float
    std: float
    kurtosis: float

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


class TensorSketcher:
    """Accumulate the statistics of one tensor from consecutive blocks of raw bytes.

    Args:
        name, dtype, shape: the tensor's.

    Each :meth:`update` takes the next block of whole elements (any size; blocks of ``CHUNK``
    elements are the cheapest); :meth:`finish` returns the :class:`TensorStats`.
    """

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        self.name, self.dtype, self.shape = name, dtype, tuple(int(d) for d in shape)
        self._sha = hashlib.sha256()
        self._sketch = np.zeros(SKETCH_DIM)
        self._n = 0
        self._shift: float | None = None
        self._sums = np.zeros(4)  # sums of d, d^2, d^3, d^4 with d = x - shift (numerically stable)

    def update(self, raw: bytes | memoryview) -> None:
        """Add the next block of whole elements."""
        self._sha.update(raw)
        values = decode_block(raw, self.dtype)
        if values is None or values.size == 0:
            return
        if not np.isfinite(values.sum()):  # a diverged tensor still hashes; its statistics ignore the NaNs
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        pos, done = self._n, 0
        while done < values.size:  # each piece within one chunk of the fixed projection
            c, start = divmod(pos + done, CHUNK)
            m = min(CHUNK - start, values.size - done)
            self._sketch += _project(values[done:done + m], c, SKETCH_DIM, SEED, start)
            done += m
        if self._shift is None:
            self._shift = float(values.mean())
        # in the values' own precision (half the memory traffic of float64 for float32 weights),
        # summed in float64; not BLAS dot products: those start a thread pool per call
        d = values - values.dtype.type(self._shift)
        d2 = d * d
        f64 = np.float64
        self._sums += (d.sum(dtype=f64), d2.sum(dtype=f64), (d2 * d).sum(dtype=f64), (d2 * d2).sum(dtype=f64))
        self._n += values.size

    def finish(self) -> TensorStats:
        """The tensor's statistics (moments from the shifted sums)."""
        n = self._n
        mean = std = kurt = 0.0
        if n:
            s1, s2, s3, s4 = (self._sums / n).tolist()
            var = max(s2 - s1 * s1, 0.0)
            m4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1 ** 4
            mean = (self._shift or 0.0) + s1
            std = var ** 0.5
            kurt = m4 / (var * var) - 3.0 if var > 0 else 0.0
        return TensorStats(self.name, self.dtype, self.shape, self._sha.hexdigest(),
                           self._sketch.astype(np.float32), float(mean), float(std), float(kurt))
