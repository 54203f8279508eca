"""Search filters: a dict of column values, a key prefix, or a predicate, compiled once per search
into an SQL condition (run by SQLite) and/or a Python predicate (run on fetched entries)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from nar_plugin.errors import InvalidQueryError
from nar_plugin.index.entries import META_COLUMNS, IndexEntry

__all__ = ["Filter", "FILTER_COLUMNS", "CompiledFilter", "compile_filter"]

#: ``None``; ``{column: value | [values] | None}``; a key prefix; or ``callable(entry) -> bool``.
Filter = Mapping[str, Any] | str | Callable[[IndexEntry], bool] | None
#: Columns a dict filter may constrain.
FILTER_COLUMNS = ("id", "key", *META_COLUMNS)


class CompiledFilter(NamedTuple):
    """A filter ready to run: an SQL ``where`` with its ``params``, and/or a predicate ``pred``."""

    where: str | None = None
    params: tuple[Any, ...] = ()
    pred: Callable[[IndexEntry], bool] | None = None

    @property
    def active(self) -> bool:
        """True if the filter rejects anything."""
        return self.where is not None or self.pred is not None


def _prefix(prefix: str) -> CompiledFilter:
    last = ord(prefix[-1])
    if last < 0xD7FF:  # key range scan on the unique index (BINARY collation = UTF-8 order)
        return CompiledFilter("key >= ? AND key < ?", (prefix, prefix[:-1] + chr(last + 1)))
    return CompiledFilter("substr(key, 1, ?) = ?", (len(prefix), prefix))


def _columns(flt: Mapping[str, Any]) -> CompiledFilter:
    clauses: list[str] = []
    params: list[Any] = []
    for col, val in flt.items():
        if col not in FILTER_COLUMNS:
            raise InvalidQueryError(f"cannot filter on {col!r}; expected one of {', '.join(FILTER_COLUMNS)}")
        if val is None:
            clauses.append(f"{col} IS NULL")
        elif isinstance(val, (list, tuple, set, frozenset)):
            vals = list(val)
            clauses.append(f"{col} IN ({', '.join('?' for _ in vals)})" if vals else "0")
            params.extend(vals)
        else:
            clauses.append(f"{col} = ?")
            params.append(val)
    return CompiledFilter(" AND ".join(clauses) or None, tuple(params))


def compile_filter(flt: Filter) -> CompiledFilter:
    """Compile a search filter (see :meth:`EmbeddingIndex.search`).

    Raises:
        InvalidQueryError: An unknown column or another kind of filter.
    """
    if flt is None or (isinstance(flt, str) and not flt):
        return CompiledFilter()
    if isinstance(flt, str):
        return _prefix(flt)
    if isinstance(flt, Mapping):
        return _columns(flt)
    if callable(flt):
        return CompiledFilter(pred=flt)
    raise InvalidQueryError(
        f"filter must be a dict of column values, a key prefix str or a callable(entry) -> bool; found {type(flt).__name__}"
    )
