"""What a bulk run indexes: :class:`Source`, the spec lines users write, and the listings of
whole hubs and registries (``--hf-author``, ``--timm``, ``--mlflow``).

A source is plain data (it travels to Ray workers as JSON). Its ``sid`` names it across runs:
``--resume`` skips a source whose ``sid`` is already indexed at the same revision.

What "the same revision" means, per kind (computed by :mod:`nar_plugin.bulk.stages`):

========  ===========================================================  =====================
kind      revision                                                     known before fetching
========  ===========================================================  =====================
timm      ``timm-<timm version>`` (the name is the sid)                yes
hf        the commit sha the requested revision resolves to            when a sha was given
file      SHA-256 of the file (of every file, for a folder)            no
mlflow    the LoggedModel id (immutable), plus the registered           yes for listings
          versions that point to it
========  ===========================================================  =====================
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "Source",
    "dedupe",
    "hf_author_sources",
    "mlflow_sources",
    "parse_spec",
    "read_specs",
    "timm_sources",
]

logger = logging.getLogger(__name__)

#: the source kinds a bulk run knows
KINDS = ("timm", "hf", "file", "mlflow")


@dataclass(frozen=True)
class Source:
    """One model to index.

    Attributes:
        kind: ``timm``, ``hf``, ``file`` or ``mlflow``.
        ref: the timm name; the HF repo id; the absolute path; the ``models:/`` URI.
        revision: a requested revision (HF branch, tag or sha), else ``None``.
        extra: kind-specific plain data: ``tracking_uri`` (mlflow), ``versions`` (mlflow
            listings: ``[[name, version], ...]`` registered from this LoggedModel), ``sha`` (HF
            listings: the commit the listing reported).
    """

    kind: str
    ref: str
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"source kind must be one of {', '.join(KINDS)}, found {self.kind!r}")

    @property
    def sid(self) -> str:
        """The name ``--resume`` knows this source by (``timm:resnet50``, ``hf:org/name@v1``...)."""
        if self.kind == "mlflow":
            return self.ref if self.ref.startswith("models:/") else f"models:/{self.ref}"
        return f"{self.kind}:{self.ref}" + (f"@{self.revision}" if self.revision else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what travels to workers)."""
        return {"kind": self.kind, "ref": self.ref, "revision": self.revision, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        """Inverse of :meth:`to_dict`."""
        return cls(data["kind"], data["ref"], data.get("revision"), dict(data.get("extra") or {}))


def parse_spec(spec: str, tracking_uri: str | None = None) -> Source:
    """One line of a spec file -> :class:`Source`.

    Accepted, tried in this order: ``models:/...`` (an MLflow model; ``tracking_uri`` or
    ``MLFLOW_TRACKING_URI``); ``timm:<name>``; ``hf:<org/name>[@rev]``; an existing path (ONNX,
    ``.pt2``, an MLflow model folder, a ``config.json``, an ArchGraph JSON); a timm
    architecture name; ``org/name[@rev]`` (an HF repo id).

    Raises:
        ValueError: the line is none of these.
    """
    s = spec.strip()
    if not s:
        raise ValueError("empty source spec")
    if s.startswith("models:/"):
        return Source("mlflow", s, extra={"tracking_uri": tracking_uri} if tracking_uri else {})
    if s.startswith("timm:"):
        return Source("timm", s.removeprefix("timm:"))
    if s.startswith("hf:"):
        return _hf(s)
    path = Path(s).expanduser()
    if path.exists():
        return Source("file", str(path.resolve()))
    from nar_plugin.extract.timm_models import is_timm_name

    if "/" not in s and is_timm_name(s):
        return Source("timm", s)
    if "/" in s:
        return _hf(s)
    raise ValueError(f"{s!r} is not a timm name, an HF repo id (org/name[@rev]), an existing file or folder, "
                     "or a models:/ URI")


def _hf(spec: str) -> Source:
    from nar_plugin.integrations.hf.keys import parse_repo_spec

    repo_id, rev = parse_repo_spec(spec)
    return Source("hf", repo_id, rev)


def read_specs(path: str | Path) -> list[str]:
    """The spec lines of a file: one per line, ``#`` comments and blank lines skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            out.append(text)
    return out


def timm_sources(pattern: str = "*") -> list[Source]:
    """Every timm architecture whose name matches ``pattern`` (``timm.list_models(pattern)``).

    Raises:
        MissingDependencyError: timm is not installed (``pip install 'nar-plugin[timm]'``).
    """
    from nar_plugin.utils.deps import require

    timm = require("timm", "timm")
    return [Source("timm", name) for name in sorted(timm.list_models(pattern))]


def hf_author_sources(author: str, token: str | bool | None = None, api: Any = None) -> list[Source]:
    """Every model repo of ``author`` on the Hub (``HfApi.list_models(author=..., expand=["sha"])``).

    Each source is pinned to the commit the listing reported, so ``--resume`` can skip a repo
    whose ``main`` has not moved without asking the Hub again.

    Args:
        author: a user or organisation.
        token: Hub token (private repos).
        api: an ``HfApi``-like object (default: a new ``HfApi`` with the library user agent).

    Raises:
        MissingDependencyError: huggingface_hub is not installed.
    """
    from nar_plugin.utils.deps import require

    hub = require("huggingface_hub", "hf")
    if api is None:
        from nar_plugin.integrations.hf.hub import library_kwargs

        api = hub.HfApi(**library_kwargs())
    out = []
    for info in api.list_models(author=author, expand=["sha"], token=token):
        sha = getattr(info, "sha", None)
        out.append(Source("hf", info.id, None, {"sha": sha} if sha else {}))
    return sorted(out, key=lambda s: s.ref)


def mlflow_sources(tracking_uri: str | None = None, client: Any = None) -> list[Source]:
    """Every LoggedModel on a tracking server (one source each, with the registered versions
    that point to it), plus the versions that point to no LoggedModel (one source each).

    Raises:
        TrackingUnavailableError: the server does not answer.
        MissingDependencyError: MLflow is not installed.
    """
    from nar_plugin.integrations.mlflow.client import client_for, tracking_uri_of
    from nar_plugin.integrations.mlflow.keys import model_id_from_source

    client = client or client_for(tracking_uri)
    uri = tracking_uri_of(client)
    versions: dict[str, list[list[str]]] = {}
    orphans: list[Source] = []
    for mv in _pages(client.search_model_versions, page_size=10_000):
        model_id = getattr(mv, "model_id", None) or model_id_from_source(mv.source)
        if model_id:
            versions.setdefault(model_id, []).append([mv.name, str(mv.version)])
        else:
            orphans.append(Source("mlflow", f"models:/{mv.name}/{mv.version}", extra={"tracking_uri": uri}))
    exps = [e.experiment_id for e in _pages(client.search_experiments)]
    out = []
    for i in range(0, len(exps), 100):  # the server takes at most 100 experiments per search
        for lm in _pages(client.search_logged_models, experiment_ids=exps[i:i + 100]):
            vs = sorted(versions.get(lm.model_id, []), key=lambda v: (v[0], int(v[1]) if v[1].isdigit() else 0))
            out.append(Source("mlflow", f"models:/{lm.model_id}", extra={"tracking_uri": uri, "versions": vs}))
    return sorted(out, key=lambda s: s.ref) + orphans


def _pages(call: Any, page_size: int = 500, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = call(max_results=page_size, page_token=token, **kwargs)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def dedupe(sources: Iterable[Source]) -> list[Source]:
    """``sources`` with repeats (same ``sid``) dropped, first kept, order otherwise unchanged."""
    seen: set[str] = set()
    out = []
    for s in sources:
        if s.sid not in seen:
            seen.add(s.sid)
            out.append(s)
    return out
