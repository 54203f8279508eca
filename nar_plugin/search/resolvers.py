"""How integrations extend search without search knowing them: query resolvers, fold rules and
key schemes.

Core search understands index keys and model sources. Anything else a user may type (an MLflow
run id, ``models:/name/3``, a Hub repo id) is turned into a :class:`ResolvedQuery` by a
**resolver** that an integration registers. **Fold rules** say which index entries are shown as
another one: a registered MLflow model version carries the vector of the LoggedModel it was
made from, so :func:`~nar_plugin.search.api.find_similar` shows it once, as that LoggedModel,
with the versions listed in its metadata. **Key schemes** are the key prefixes an integration
owns; an unknown key of one is reported as "not indexed" instead of being read as a model source.

Example:
    >>> from nar_plugin.search import resolvers
    >>> resolvers.register_key_scheme("wandb:")
    >>> resolvers.register_resolver("wandb", lambda q: q.startswith("wandb://"), my_resolve)
    >>> resolvers.register_fold_rule(resolvers.FoldRule(
    ...     "wandb-aliases", parent_of=lambda e: e.metadata.get("artifact_key"),
    ...     label=lambda e: e.key, listed_as="aliases"))

Activation: an integration is registered the first time search consults this registry, by
:func:`load_integrations`, which imports each ``"module:function"`` named in
:data:`nar_plugin.config.SEARCH_INTEGRATIONS` with :func:`importlib.import_module` and calls the
function. Why a constant in ``config`` and not a packaging entry point:

- core stays below the integrations in the import graph: search names no integration module in
  its code, only reads a list of names from ``config`` (the lowest layer);
- ``nar_plugin.find_similar(run_id)`` works in a fresh process that never imported the
  integration, without relying on installed package metadata: an editable install that predates
  a new entry point, a source checkout on ``PYTHONPATH`` or a vendored copy all behave alike;
- registering reads no third-party library (the MLflow integration imports ``mlflow`` only when a
  resolver runs), so the first search pays one cheap import.

A third-party package extends search by calling the ``register_*`` functions itself (e.g. from
its own entry point or on import of its own module); they are idempotent, keyed by name.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

__all__ = [
    "FoldRule",
    "Folded",
    "ResolvedQuery",
    "Resolver",
    "fold",
    "is_key_shaped",
    "load_integrations",
    "parent_of",
    "register_fold_rule",
    "register_key_scheme",
    "register_resolver",
    "resolver_for",
    "unregister",
]


class _Entry(Protocol):
    key: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ResolvedQuery:
    """A query turned into a vector: what to search with and what to leave out.

    Attributes:
        vector: the query embedding (unit norm).
        info: ``{"description": describe_graph(...)}`` and any metadata (used by ``explain``).
        exclude_keys: the query's own entries; entries that fold into one of them are left out too.
        graph_hash: the query's architecture hash (``identical`` matches share it).
        scope: entries the query may be answered with (``None``: all), e.g. those of the
            tracking server the query was asked of; applied with the caller's ``where``.
    """

    vector: Any
    info: dict[str, Any]
    exclude_keys: tuple[str, ...] = ()
    graph_hash: str | None = None
    scope: Callable[[Any], bool] | None = None


#: ``resolve(query, index) -> ResolvedQuery``; raises ``KeyNotFoundError`` for an unknown id.
Resolver = Callable[[str, Any], ResolvedQuery]


@dataclass(frozen=True)
class FoldRule:
    """Entries that another indexed entry stands for.

    Attributes:
        name: the rule's registry name.
        parent_of: the key of the entry this one is shown as, or ``None`` (not folded).
        label: how a folded entry is listed in its parent's metadata.
        listed_as: the metadata field of the parent that lists the folded entries.
    """

    name: str
    parent_of: Callable[[Any], str | None]
    label: Callable[[Any], str]
    listed_as: str


@dataclass(frozen=True)
class Folded:
    """An entry left after folding, with what folded into it (``listed_as`` -> labels)."""

    entry: Any
    listings: dict[str, list[str]]


_LOCK = threading.RLock()
_RESOLVERS: dict[str, tuple[Callable[[str], bool], Resolver]] = {}
_FOLD_RULES: dict[str, FoldRule] = {}
#: key prefixes of the keys core search itself makes (see ``api.default_key``)
_KEY_SCHEMES: dict[str, str] = {"file:": "core", "graph:": "core", "module:": "core"}
_LOADED = False


def register_resolver(name: str, match: str | Callable[[str], bool], resolve: Resolver) -> None:
    """Resolve string queries that ``match`` (a prefix, or a predicate) with ``resolve``.

    Resolvers are tried in registration order, after the index's own keys. Registering a name
    again replaces it.
    """
    pred = (lambda q, p=match: q.startswith(p)) if isinstance(match, str) else match
    with _LOCK:
        _RESOLVERS[name] = (pred, resolve)


def register_fold_rule(rule: FoldRule) -> None:
    """Add (or replace, by name) a :class:`FoldRule`."""
    with _LOCK:
        _FOLD_RULES[rule.name] = rule


def register_key_scheme(prefix: str, owner: str = "") -> None:
    """Declare that keys starting with ``prefix`` are index keys (never model sources)."""
    with _LOCK:
        _KEY_SCHEMES[prefix] = owner or prefix


def unregister(name: str) -> None:
    """Remove a resolver or fold rule registered under ``name`` (no error when absent)."""
    with _LOCK:
        _RESOLVERS.pop(name, None)
        _FOLD_RULES.pop(name, None)


def load_integrations(names: Sequence[str] | None = None) -> None:
    """Register the integrations of :data:`nar_plugin.config.SEARCH_INTEGRATIONS` (once).

    An integration whose optional dependency is missing is skipped (logged at debug level);
    any other error propagates: it is a bug in the integration.
    """
    global _LOADED
    if _LOADED and names is None:
        return
    from nar_plugin.config import SEARCH_INTEGRATIONS

    with _LOCK:
        if _LOADED and names is None:
            return
        for spec in SEARCH_INTEGRATIONS if names is None else names:
            module, _, func = spec.partition(":")
            try:
                register = getattr(importlib.import_module(module), func or "register")
            except ImportError as e:
                logger.debug("search integration %s not available: %s", spec, e)
                continue
            register()
        if names is None:
            _LOADED = True


def resolver_for(query: str) -> Resolver | None:
    """The first registered resolver whose match accepts ``query``, if any."""
    load_integrations()
    with _LOCK:
        found = [resolve for pred, resolve in _RESOLVERS.values() if pred(query)]
    return found[0] if found else None


def is_key_shaped(query: str) -> bool:
    """Does ``query`` start with a registered key scheme (so it is an index key, not a source)?"""
    load_integrations()
    with _LOCK:
        return query.startswith(tuple(_KEY_SCHEMES))


def _rules() -> list[FoldRule]:
    load_integrations()
    with _LOCK:
        return list(_FOLD_RULES.values())


def _folding(entry: _Entry, rules: Sequence[FoldRule]) -> tuple[FoldRule, str] | None:
    for rule in rules:
        parent = rule.parent_of(entry)
        if parent:
            return rule, parent
    return None


def parent_of(entry: _Entry) -> str | None:
    """The key ``entry`` folds into under the first fold rule that folds it, else ``None``."""
    found = _folding(entry, _rules())
    return found[1] if found else None


def fold(entries: Sequence[_Entry], is_indexed: Callable[[str], bool],
         excluded: Collection[str] = ()) -> list[Folded]:
    """Entries to show, in order, each with the labels of the entries folded into it.

    An entry is dropped when its key or its parent's key is in ``excluded`` (the query's own
    entries), or when its parent is indexed (it is shown as the parent; its label is listed on
    the parent when the parent is among ``entries``).
    """
    rules = _rules()
    parents: dict[str, str] = {}
    listings: dict[str, dict[str, list[str]]] = {}
    for e in entries:
        found = _folding(e, rules)
        if found is not None:
            rule, parents[e.key] = found
            listings.setdefault(parents[e.key], {}).setdefault(rule.listed_as, []).append(rule.label(e))
    out: list[Folded] = []
    for e in entries:
        parent = parents.get(e.key)
        if e.key in excluded or (parent is not None and (parent in excluded or is_indexed(parent))):
            continue
        out.append(Folded(e, listings.get(e.key, {})))
    return out
