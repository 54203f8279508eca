"""What the index stores and returns: :class:`IndexEntry`, :class:`SearchHit`, and the checks
that turn user input (keys, vectors, metadata, items of ``add_many``) into validated items."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from nar_plugin.errors import InvalidQueryError, InvalidVectorError
from nar_plugin.index.codec import encode_embedding

__all__ = ["IndexEntry", "SearchHit", "META_COLUMNS", "Item", "make_item", "coerce_item", "as_unit", "now"]

#: Metadata columns of an entry (besides id, key, vector, timestamps and the free-form metadata).
META_COLUMNS = ("source_kind", "uri", "graph_hash", "encoder_version", "params_count", "family_guess")
_STR_COLUMNS = ("source_kind", "uri", "graph_hash", "encoder_version", "family_guess")


def now() -> str:
    """The current UTC time as ISO-8601 with microseconds (the format of ``created_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True, eq=False)
class IndexEntry:
    """One indexed embedding and its metadata.

    Attributes:
        id: Stable integer id (never reused after removal; kept by ``upsert``).
        key: Unique key, e.g. ``"mlflow:model:m-123"`` or ``"hf:org/name@rev"``.
        vector: Unit-norm float32 vector, shape ``(dim,)`` (read-only).
        source_kind: Where the model came from (``"mlflow"``, ``"hf"``, ``"file"``...).
        uri: Where to find the model.
        graph_hash: WL hash of the architecture graph (equal hash = identical architecture).
        encoder_version: Version of the encoder that produced ``vector``.
        params_count: Number of parameters of the model, if known.
        family_guess: Predicted architecture family, if any.
        created_at: ISO-8601 UTC time the key was first indexed.
        updated_at: ISO-8601 UTC time of the last write of the key.
        metadata: Free-form JSON-serialisable metadata.
    """

    id: int
    key: str
    vector: np.ndarray
    source_kind: str | None = None
    uri: str | None = None
    graph_hash: str | None = None
    encoder_version: str | None = None
    params_count: int | None = None
    family_guess: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexEntry):
            return NotImplemented
        return (
            self.id == other.id
            and self.key == other.key
            and np.array_equal(self.vector, other.vector)
            and all(getattr(self, c) == getattr(other, c) for c in (*META_COLUMNS, "created_at", "updated_at"))
            and self.metadata == other.metadata
        )

    __hash__ = None  # type: ignore[assignment]  # mutable metadata dict: not hashable

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-serialisable dict, the vector encoded by :func:`encode_embedding`.

        Returns:
            A dict with ``id``, ``key``, ``vector`` (``"nar1:..."``), the metadata columns,
            ``created_at``, ``updated_at`` and ``metadata``.
        """
        out: dict[str, Any] = {"id": self.id, "key": self.key, "vector": encode_embedding(self.vector, dim=len(self.vector))}
        for col in META_COLUMNS:
            out[col] = getattr(self, col)
        out["created_at"] = self.created_at
        out["updated_at"] = self.updated_at
        out["metadata"] = self.metadata
        return out


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        key: Key of the matching entry.
        id: Its stable id.
        score: Inner product of the unit query and the unit entry vector, i.e. cosine
            similarity in [-1, 1]: **larger is closer**.
        entry: The full entry.
    """

    key: str
    id: int
    score: float
    entry: IndexEntry


@dataclass(frozen=True)
class Item:
    """A validated entry about to be written (made by :func:`make_item`)."""

    key: str
    vector: np.ndarray
    meta: dict[str, Any]
    metadata: dict[str, Any]
    id: int | None = None
    created_at: str | None = None


def as_unit(vector: Any, dim: int, what: str = "vector") -> np.ndarray:
    """Check ``vector`` (float, shape ``(dim,)`` or ``(1, dim)``, finite, non-zero) and normalise it.

    Returns:
        A read-only unit-norm float32 copy.

    Raises:
        InvalidVectorError: ``vector`` is not such an array.
    """
    try:
        arr = np.asarray(vector)
    except Exception as exc:  # noqa: BLE001 - arbitrary user object; report it as a bad vector
        raise InvalidVectorError(f"{what} must be an array of {dim} floats, found {type(vector).__name__}: {exc}") from None
    if arr.dtype.kind != "f":
        raise InvalidVectorError(f"{what} must have a floating dtype (float32), found dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dim,):
        raise InvalidVectorError(f"{what} must have shape ({dim},), found {arr.shape}")
    arr64 = arr.astype(np.float64)
    if not np.all(np.isfinite(arr64)):
        raise InvalidVectorError(f"{what} contains non-finite values (NaN or inf)")
    norm = float(np.linalg.norm(arr64))
    if norm == 0.0:
        raise InvalidVectorError(f"{what} is all zeros; expected a non-zero embedding")
    unit = (arr64 / norm).astype(np.float32)
    unit.setflags(write=False)
    return unit


def _meta_columns(key: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    cols: dict[str, Any] = {c: meta.get(c) for c in META_COLUMNS}
    if cols["source_kind"] is None and ":" in key:
        cols["source_kind"] = key.split(":", 1)[0]
    if cols["params_count"] is not None:
        try:
            cols["params_count"] = int(cols["params_count"])
        except (TypeError, ValueError):
            raise InvalidQueryError(f"params_count must be an int, found {cols['params_count']!r}") from None
    for c in _STR_COLUMNS:
        if cols[c] is not None:
            cols[c] = str(cols[c])
    return cols


def make_item(
    key: str,
    vector: Any,
    meta: Mapping[str, Any],
    dim: int,
    *,
    id: int | None = None,  # noqa: A002 - mirrors the column name
    created_at: str | None = None,
) -> Item:
    """Validate one entry (before any lock is taken).

    Args:
        key: Non-empty key.
        vector: Float vector of shape ``(dim,)``.
        meta: Any of :data:`META_COLUMNS` and ``metadata``.
        dim: Embedding dimension.
        id: Id to keep (restores only; ``<= 0`` means none).
        created_at: Creation time to keep (restores only).

    Raises:
        InvalidQueryError: Bad key, unknown field, non-int ``params_count`` or metadata that is
            not JSON-serialisable.
        InvalidVectorError: Bad vector.
    """
    if not isinstance(key, str) or not key:
        raise InvalidQueryError(f"key must be a non-empty str, found {key!r}")
    unknown = set(meta) - {*META_COLUMNS, "metadata"}
    if unknown:
        raise InvalidQueryError(
            f"unknown metadata field(s) {', '.join(sorted(unknown))}; expected any of "
            f"{', '.join((*META_COLUMNS, 'metadata'))}"
        )
    unit = as_unit(vector, dim, f"vector of {key!r}")
    cols = _meta_columns(key, meta)
    metadata = dict(meta.get("metadata") or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidQueryError(f"metadata of {key!r} must be JSON-serialisable: {exc}") from None
    if id is not None and int(id) <= 0:
        id = None  # noqa: A001 - "no id" in imports without ids
    return Item(key=key, vector=unit, meta=cols, metadata=metadata, id=id, created_at=created_at)


def coerce_item(item: Any, dim: int) -> Item:
    """Accept :class:`IndexEntry`, mapping or ``(key, vector[, meta])`` tuple items (see ``add_many``).

    Raises:
        InvalidQueryError: Another kind of item, or a malformed one.
        InvalidVectorError: A bad vector.
    """
    if isinstance(item, IndexEntry):
        meta = {c: getattr(item, c) for c in META_COLUMNS}
        meta["metadata"] = item.metadata
        return make_item(item.key, item.vector, meta, dim, id=item.id, created_at=item.created_at)
    if isinstance(item, Mapping):
        if "key" not in item or "vector" not in item:
            raise InvalidQueryError(f"an item mapping needs 'key' and 'vector', found keys {sorted(item)}")
        meta = {k: v for k, v in item.items() if k not in ("key", "vector", "id", "created_at", "updated_at")}
        return make_item(item["key"], item["vector"], meta, dim, id=item.get("id"), created_at=item.get("created_at"))
    if isinstance(item, tuple) and len(item) in (2, 3):
        meta = item[2] if len(item) == 3 else {}
        if not isinstance(meta, Mapping):
            raise InvalidQueryError(f"the third element of an item tuple must be a dict, found {type(meta).__name__}")
        return make_item(item[0], item[1], meta, dim)
    raise InvalidQueryError(
        "items must be IndexEntry, mappings with 'key'/'vector', or (key, vector[, meta]) tuples; "
        f"found {type(item).__name__}"
    )
