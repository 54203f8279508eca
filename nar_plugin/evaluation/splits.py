"""Train/test splits for family-retrieval evaluation (DESIGN.md, "Corpus and evaluation").

Two splits are reported:

* :func:`split_by_model` -- stratified by family: every family keeps at least one member in
  train, and a family that contributes to test contributes at least ``min_test_per_family``
  (default 2) members, so that every test query has a relevant item both when the gallery is
  the test set (the paper's protocol) and when it is train + test. Families too small for that
  (``n <= min_test_per_family``) stay entirely in train.
* :func:`split_by_family` -- held-out families: whole families go to test (only families with at
  least ``min_family_size`` = 2 members, so that each test query has a relevant item), none of
  their members is seen in training.

Both are deterministic functions of ``(families, test_frac, seed)``, using a local
``np.random.default_rng(seed)`` only. A :class:`Split` persists as versioned JSON together with a
hash of the item keys it was made for; loading it against other keys fails loudly instead of
silently evaluating on a stale split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.utils.io import atomic_write_text, read_versioned_json

__all__ = [
    "SPLIT_FORMAT_VERSION",
    "Split",
    "keys_hash",
    "split_by_family",
    "split_by_model",
]

logger = logging.getLogger(__name__)

#: Bump when the JSON layout of a saved split changes.
SPLIT_FORMAT_VERSION = 1
_FORMAT = "nar-split"


def keys_hash(keys: Sequence[Hashable]) -> str:
    """Order-sensitive hash of item keys (``str()`` of each), as stored in a :class:`Split`.

    Args:
        keys: one key per item, in corpus order (e.g. graph hashes or model names).

    Returns:
        A 32-character hex digest.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([str(k) for k in keys], separators=(",", ":")).encode())
    return h.hexdigest()


def _as_int_array(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test partition of item indices ``0..n_items-1``.

    Attributes:
        name: ``"by_model"`` or ``"by_family"`` (free text for custom splits).
        train: sorted int64 indices of training items (read-only array).
        test: sorted int64 indices of test items (read-only array), disjoint from ``train``.
        seed: the seed that produced it.
        n_items: size of the corpus the indices refer to.
        keys_hash: :func:`keys_hash` of the item keys the split was made for.
        params: the other arguments that produced it (``test_frac``...), for provenance.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    seed: int
    n_items: int
    keys_hash: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _as_int_array(self.train))
        object.__setattr__(self, "test", _as_int_array(self.test))
        both = np.concatenate([self.train, self.test])
        if both.size and (both.min() < 0 or both.max() >= self.n_items):
            raise ValueError(f"split indices must lie in [0, {self.n_items})")
        if np.unique(both).size != both.size:
            raise ValueError("train and test indices must be unique and disjoint")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            (self.name, self.seed, self.n_items, self.keys_hash, self.params)
            == (other.name, other.seed, other.n_items, other.keys_hash, other.params)
            and np.array_equal(self.train, other.train)
            and np.array_equal(self.test, other.test)
        )

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "format_version": SPLIT_FORMAT_VERSION,
            "name": self.name,
            "seed": self.seed,
            "n_items": self.n_items,
            "keys_hash": self.keys_hash,
            "params": self.params,
            "train": self.train.tolist(),
            "test": self.test.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the split as compact JSON, atomically (:func:`~nar_plugin.utils.io.atomic_write_text`).

        Args:
            path: destination file.
        """
        atomic_write_text(path, json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | os.PathLike[str], keys: Sequence[Hashable] | None = None) -> Split:
        """Read a split written by :meth:`save`.

        Args:
            path: the JSON file.
            keys: the item keys of the corpus about to be evaluated; when given, they must hash
                to the split's ``keys_hash`` (same items, same order).

        Returns:
            The :class:`Split`.

        Raises:
            FileNotFoundError: no file at ``path``.
            CorruptArtifactError: the file is not a split, has another format version, is
                malformed, or was made for other item keys.
        """
        where = str(path)
        data = read_versioned_json(path, _FORMAT, SPLIT_FORMAT_VERSION)
        try:
            split = cls(
                name=str(data["name"]),
                train=data["train"],
                test=data["test"],
                seed=int(data["seed"]),
                n_items=int(data["n_items"]),
                keys_hash=str(data["keys_hash"]),
                params=dict(data.get("params") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptArtifactError(f"malformed split file: {e}", path=where) from e
        if keys is not None:
            found = keys_hash(keys)
            if len(keys) != split.n_items or found != split.keys_hash:
                raise CorruptArtifactError(
                    f"split {split.name!r} was made for {split.n_items} items with keys hash "
                    f"{split.keys_hash}, but the corpus has {len(keys)} items with keys hash "
                    f"{found}; regenerate the split for this corpus",
                    path=where,
                )
        return split


def _groups(families: Sequence[Hashable]) -> list[np.ndarray]:
    """Member indices per family, families in first-seen order."""
    members: dict[Hashable, list[int]] = {}
    for i, fam in enumerate(families):
        members.setdefault(fam, []).append(i)
    return [np.asarray(v, dtype=np.int64) for v in members.values()]


def _check_frac(test_frac: float) -> None:
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1), found {test_frac}")


def split_by_model(
    families: Sequence[Hashable],
    test_frac: float = 0.2,
    seed: int = 0,
    keys: Sequence[Hashable] | None = None,
    min_test_per_family: int = 2,
) -> Split:
    """Stratified split: each family sends about ``test_frac`` of its members to test.

    Per family of size ``n`` with target ``x = n * test_frac``: the test count is ``x`` rounded
    stochastically (``floor(x)`` plus one with probability ``frac(x)``), except that a count
    below ``min_test_per_family`` becomes ``min_test_per_family`` with probability
    ``x / min_test_per_family`` and 0 otherwise (so the expected count stays ``x``). The count is
    capped at ``n - 1`` (one member always stays in train); families with
    ``n <= min_test_per_family`` stay in train entirely.

    Args:
        families: family label per item.
        test_frac: expected fraction of items in test, in (0, 1).
        seed: seed of the local ``np.random.default_rng``.
        keys: item keys recorded as :func:`keys_hash` (default: the family labels, which is
            weaker: another corpus with the same label sequence would pass the check).
        min_test_per_family: least number of test members of a family that has any (>= 1).

    Returns:
        A :class:`Split` named ``"by_model"``.

    Raises:
        ValueError: ``test_frac`` outside (0, 1), ``min_test_per_family`` < 1, or ``keys`` of
            another length than ``families``.
    """
    _check_frac(test_frac)
    if min_test_per_family < 1:
        raise ValueError(f"min_test_per_family must be >= 1, found {min_test_per_family}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for members in _groups(families):
        n = members.size
        # draw for every family (even ineligible ones) so that one family's size does not
        # shift the random stream of the families after it
        u_round, perm = rng.random(), rng.permutation(n)
        if n <= min_test_per_family:
            continue
        x = n * test_frac
        if x < min_test_per_family:
            count = min_test_per_family if u_round < x / min_test_per_family else 0
        else:
            count = math.floor(x) + int(u_round < x - math.floor(x))
        count = min(count, n - 1)
        if count >= min_test_per_family:
            test.append(members[perm[:count]])
    return _make("by_model", families, test, seed, keys,
                 {"test_frac": test_frac, "min_test_per_family": min_test_per_family})


# Docstring and argument checks alike in shape to split_by_model's on purpose (two public entry
# points with parallel contracts; see docs/architecture.md, "Layout decisions").
def split_by_family(
    families: Sequence[Hashable],
    test_frac: float = 0.2,
    seed: int = 0,
    keys: Sequence[Hashable] | None = None,
    min_family_size: int = 2,
) -> Split:
    """Held-out families: whole families go to test until about ``test_frac`` of the items.

    Families with at least ``min_family_size`` members are visited in a seeded random order; a
    family is moved to test when that brings the test size closer to ``test_frac * N``.

    Args:
        families: family label per item.
        test_frac: target fraction of items in test, in (0, 1).
        seed: seed of the local ``np.random.default_rng``.
        keys: item keys recorded as :func:`keys_hash` (default: the family labels).
        min_family_size: smallest family eligible for test (>= 2 so that every test query has
            a relevant item in a test-only gallery).

    Returns:
        A :class:`Split` named ``"by_family"``; no family has members on both sides.

    Raises:
        ValueError: ``test_frac`` outside (0, 1), ``min_family_size`` < 2, or ``keys`` of
            another length than ``families``.
    """
    _check_frac(test_frac)
    if min_family_size < 2:
        raise ValueError(f"min_family_size must be >= 2, found {min_family_size}")
    rng = np.random.default_rng(seed)
    groups = _groups(families)
    target = test_frac * len(families)
    test: list[np.ndarray] = []
    size = 0
    for gi in rng.permutation(len(groups)):
        members = groups[gi]
        if members.size < min_family_size:
            continue
        if abs(size + members.size - target) < abs(size - target):
            test.append(members)
            size += members.size
    if not test:
        logger.warning("split_by_family: no family fits test_frac=%s; the test set is empty",
                       test_frac)
    return _make("by_family", families, test, seed, keys,
                 {"test_frac": test_frac, "min_family_size": min_family_size})


def _make(
    name: str,
    families: Sequence[Hashable],
    test_parts: list[np.ndarray],
    seed: int,
    keys: Sequence[Hashable] | None,
    params: dict[str, Any],
) -> Split:
    n = len(families)
    if keys is not None and len(keys) != n:
        raise ValueError(f"expected {n} keys (one per item), found {len(keys)}")
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    split = Split(
        name=name,
        train=np.flatnonzero(mask),
        test=test,
        seed=int(seed),
        n_items=n,
        keys_hash=keys_hash(keys if keys is not None else families),
        params=params,
    )
    logger.info("%s split (seed %d): %d train, %d test items", name, seed, split.train.size,
                split.test.size)
    return split
