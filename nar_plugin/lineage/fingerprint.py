""":class:`WeightFingerprint`: what nar-plugin keeps of a model's weights, and its stored form.

Per tensor: name, dtype, shape, the SHA-256 of its bytes, a 64-bucket CountSketch and its mean,
standard deviation and kurtosis (:mod:`.sketch`). Per model: :attr:`WeightFingerprint.weights_hash`,
a hash over the tensors' (dtype, shape, sha256), sorted: equal hashes mean byte-identical
tensors, whatever the names (a copy wrapped in another module, or saved under another name).

The stored form is gzip-compressed JSON (``mtime=0``: the same fingerprint always gives the same
bytes, so its digest identifies it) with a format name and version checked on load. ResNet-50
(320 tensors): about 100 KB; it never goes into a tag (MLflow caps tag values), but into a small
artifact whose digest is tagged.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.lineage.sketch import (
    CHUNK,
    SEED,
    SKETCH_DIM,
    TensorSketcher,
    TensorStats,
)

__all__ = ["FORMAT", "VERSION", "WeightFingerprint", "fingerprint_tensors", "weights_hash_of"]

FORMAT = "nar-weights"
VERSION = 1
#: largest stored fingerprint read back (compressed and inflated), bytes
MAX_STORED_BYTES = 64 << 20

#: (name, dtype, shape, blocks of raw bytes): what a reader yields per tensor
RawTensor = tuple[str, str, tuple[int, ...], Iterable[bytes]]


def weights_hash_of(tensors: Iterable[TensorStats]) -> str:
    """The whole-model hash: SHA-256 over the sorted ``dtype shape sha256`` lines (names left out)."""
    lines = sorted(f"{t.dtype} {'x'.join(map(str, t.shape))} {t.sha256}" for t in tensors)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class WeightFingerprint:
    """A model's weight fingerprint.

    Attributes:
        tensors: per-tensor statistics, in the order they were read.
        weights_hash: see :func:`weights_hash_of`.
        source: what was read (``module``, ``pt2``, ``safetensors``, ``onnx``), informative only.
    """

    tensors: tuple[TensorStats, ...]
    weights_hash: str
    source: str = ""
    _by_name: dict[str, TensorStats] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({t.name: t for t in self.tensors})

    def __len__(self) -> int:
        return len(self.tensors)

    def get(self, name: str) -> TensorStats | None:
        """The tensor called ``name``, if any."""
        return self._by_name.get(name)

    @property
    def numel(self) -> int:
        """Elements over all tensors."""
        return sum(t.numel for t in self.tensors)

    def to_bytes(self) -> bytes:
        """The stored form (deterministic gzip JSON)."""
        rows = [[t.name, t.dtype, list(t.shape), t.sha256, round(t.mean, 9), round(t.std, 9),
                 round(t.kurtosis, 6), base64.b64encode(t.sketch.astype("<f4").tobytes()).decode()]
                for t in self.tensors]
        doc = {"format": FORMAT, "version": VERSION, "sketch_dim": SKETCH_DIM, "chunk": CHUNK, "seed": SEED,
               "weights_hash": self.weights_hash, "source": self.source, "tensors": rows}
        text = json.dumps(doc, separators=(",", ":")).encode()
        return gzip.compress(text, compresslevel=6, mtime=0)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes`."""
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "weight fingerprint") -> WeightFingerprint:
        """Read the stored form back.

        Raises:
            CorruptArtifactError: not a fingerprint, another format version or projection, or
                its tensors do not give its recorded weights hash.
        """
        try:
            if len(data) > MAX_STORED_BYTES:
                raise ValueError(f"{len(data)} bytes, more than {MAX_STORED_BYTES}")
            with gzip.GzipFile(fileobj=_Bytes(data)) as fh:
                text = fh.read(MAX_STORED_BYTES + 1)
            if len(text) > MAX_STORED_BYTES:
                raise ValueError(f"inflates past {MAX_STORED_BYTES} bytes")
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"expected format {FORMAT!r}, found {doc.get('format') if isinstance(doc, dict) else doc!r}")
            if doc.get("version") != VERSION:
                raise ValueError(f"expected version {VERSION}, found {doc.get('version')!r} (re-fingerprint the model)")
            if (doc.get("sketch_dim"), doc.get("chunk"), doc.get("seed")) != (SKETCH_DIM, CHUNK, SEED):
                raise ValueError("made with another random projection; re-fingerprint the model")
            tensors = tuple(
                TensorStats(str(n), str(dt), tuple(int(d) for d in shape), str(sha),
                            np.frombuffer(base64.b64decode(sk), dtype="<f4").astype(np.float32),
                            float(mean), float(std), float(kurt))
                for n, dt, shape, sha, mean, std, kurt, sk in doc["tensors"])
        except (OSError, EOFError, ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
            raise CorruptArtifactError(f"{where} is not a readable nar weight fingerprint: {e}") from e
        if any(t.sketch.shape != (SKETCH_DIM,) for t in tensors):
            raise CorruptArtifactError(f"{where}: a sketch is not {SKETCH_DIM} values long")
        fp = cls(tensors, str(doc.get("weights_hash")), str(doc.get("source") or ""))
        if weights_hash_of(tensors) != fp.weights_hash:
            raise CorruptArtifactError(f"{where}: its tensors do not give its recorded weights hash")
        return fp


class _Bytes:
    """A minimal read-only file over bytes (``io.BytesIO`` without the copy)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        out = self._view[self._pos:end].tobytes()
        self._pos = end
        return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        return None


def fingerprint_tensors(tensors: Iterable[RawTensor], source: str = "") -> WeightFingerprint:
    """Fingerprint tensors given as ``(name, dtype, shape, blocks)``; each block holds whole
    elements, at most :data:`~nar_plugin.lineage.sketch.CHUNK` of them (a reader re-blocks with
    :func:`blocks_of`). Memory: one block at a time."""
    out = []
    for name, dtype, shape, blocks in tensors:
        sk = TensorSketcher(name, dtype, shape)
        for raw in blocks:
            sk.update(raw)
        out.append(sk.finish())
    return WeightFingerprint(tuple(out), weights_hash_of(out), source)


def blocks_of(read: Any, nbytes: int, item: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``nbytes`` read with ``read(n)`` (a file's or zip member's), as blocks of ``chunk``
    elements of ``item`` bytes.

    Raises:
        CorruptArtifactError: the stream ended early.
    """
    block = chunk * item
    left = nbytes
    while left > 0:
        want = min(block, left)
        parts, got = [], 0
        while got < want:
            b = read(want - got)
            if not b:
                raise CorruptArtifactError(f"tensor data ended {left - got} bytes early")
            parts.append(b)
            got += len(b)
        left -= want
        yield parts[0] if len(parts) == 1 else b"".join(parts)
