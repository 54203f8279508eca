"""Index keys of Hub repos (``hf:<repo_id>@<sha>``) and the repo specs users type.

The ``hf:`` key format belongs to this integration: the core index stores keys as opaque strings.
"""

from __future__ import annotations

import re

__all__ = ["PREFIX", "REPO_RE", "SHA_RE", "parse_repo_spec", "register", "repo_key", "repo_key_prefix"]

#: what every key of a Hub repo starts with
PREFIX = "hf:"
#: a repo id: ``name`` or ``org/name``
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: a full commit sha
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def repo_key(repo_id: str, sha: str) -> str:
    """The index key of a repo at a commit: ``hf:<repo_id>@<sha>``."""
    return f"{repo_key_prefix(repo_id)}{sha}"


def repo_key_prefix(repo_id: str) -> str:
    """What the keys of every revision of ``repo_id`` start with: ``hf:<repo_id>@``."""
    return f"{PREFIX}{repo_id}@"


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """``"org/name"``, ``"org/name@rev"`` or ``"hf:org/name@rev"`` -> ``(repo_id, revision)``.

    Raises:
        ValueError: not a repo id.
    """
    s = spec.strip().removeprefix(PREFIX)
    repo_id, _, rev = s.partition("@")
    if not REPO_RE.fullmatch(repo_id):
        raise ValueError(f"expected a repo id like 'org/name' (optionally '@revision'), found {spec!r}")
    return repo_id, rev or None


def register() -> None:
    """Tell search that ``hf:`` strings are index keys (named in ``config.SEARCH_INTEGRATIONS``)."""
    from nar_plugin.search import resolvers

    resolvers.register_key_scheme(PREFIX, owner="hf")
