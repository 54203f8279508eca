"""The stages of a bulk run, shared by both engines so that they write identical entries.

``fetch + build on meta + extract + describe`` (:func:`extract_source`, one source, a CPU
worker) -> ``embed`` (:func:`embed_outcomes`, a batch, an actor: on GPU when there is one) ->
``write`` (:class:`~nar_plugin.bulk.writer.Writer`, on the driver, in batches).

Embedding is :func:`nar_plugin.model.inference.embed_many` itself (not a copy of its
arithmetic), so a bulk entry's vector is the one ``nar index add`` / ``index_graph`` computes.
On a GPU only the encoder's forward moves there (:class:`_OnDevice`).

A source that fails at any stage becomes an :class:`Outcome` with ``status="failed"`` and the
error's type and first line: one bad model never stops a run. A source whose revision equals
the one ``--resume`` found in the index becomes ``status="skipped"`` before anything heavy runs
(for HF repos after resolving the revision, which reads ``config.json``; for files after
hashing them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nar_plugin.bulk.sources import Source

__all__ = ["Outcome", "embed_outcomes", "extract_source", "known_revision", "on_device", "peak_rss_mb",
           "revision_of_path"]

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the stages made of one source.

    Attributes:
        sid: the source's :attr:`~nar_plugin.bulk.sources.Source.sid`.
        status: ``ok``, ``skipped`` (already indexed at this revision) or ``failed``.
        revision: what the source resolved to (see :mod:`nar_plugin.bulk.sources`).
        error: the exception type of a failure; ``message``: its first line.
        entries: the index entries to write with the one vector: ``key``, ``uri``,
            ``source_kind``, ``metadata`` (an MLflow model and its registered versions share it).
        graph_hash, name, description: of the extracted graph.
        graph: the extracted graph (dropped once embedded).
        vector: the unit embedding (after :func:`embed_outcomes`).
        extract_s, embed_s: seconds spent in the two stages.
        worker: ``<host>:<pid>`` that extracted it; ``rss_mb``: that process's peak RSS then.
    """

    sid: str
    status: str = "ok"
    revision: str | None = None
    error: str | None = None
    message: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    graph_hash: str | None = None
    name: str | None = None
    description: dict[str, Any] | None = None
    graph: Any = None
    vector: np.ndarray | None = None
    extract_s: float = 0.0
    embed_s: float = 0.0
    worker: str = ""
    rss_mb: float = 0.0

    def fail(self, exc: BaseException) -> Outcome:
        """Mark this outcome failed with ``exc`` (type name and first line of its message)."""
        text = str(exc).strip()
        self.status, self.error = "failed", type(exc).__name__
        self.message = text.splitlines()[0][:500] if text else ""
        self.graph = None
        return self


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _worker() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def known_revision(source: Source) -> str | None:
    """The revision of ``source`` when it is known without fetching anything, else ``None``."""
    if source.kind == "timm":
        return _timm_revision()
    if source.kind == "hf":
        from nar_plugin.integrations.hf.keys import SHA_RE

        sha = source.extra.get("sha") or source.revision
        return sha if sha and SHA_RE.fullmatch(sha) else None
    if source.kind == "mlflow" and source.ref.startswith("models:/m-"):
        return _mlflow_revision(source.ref.removeprefix("models:/").split("/")[0], _versions(source))
    return None


def _timm_revision() -> str:
    from nar_plugin.utils.deps import require

    return f"timm-{require('timm', 'timm').__version__}"


def revision_of_path(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, or of a folder's files (relative path and bytes, sorted)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f is not p:
            digest.update(f.relative_to(p).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _versions(source: Source) -> list[tuple[str, str]]:
    return [(str(n), str(v)) for n, v in source.extra.get("versions") or []]


def _mlflow_revision(model_id: str, versions: list[tuple[str, str]]) -> str:
    return model_id + "".join(f";{n}/{v}" for n, v in sorted(versions))


# ------------------------------------------------------------------ fetch + extract, per kind
# Each ``_resolve_<kind>`` returns (revision, state); each ``_build_<kind>(source, state)`` the
# graph and the entries (without vector, description, name: those are shared).

def _resolve_timm(source: Source, **_: Any) -> tuple[str, Any]:
    return _timm_revision(), None


def _build_timm(source: Source, state: Any) -> tuple[Any, list[dict[str, Any]]]:
    from nar_plugin.extract import extract_graph

    key = f"timm:{source.ref}"  # what `nar index add timm:<name>` writes
    return extract_graph(key), [{"key": key, "uri": key, "source_kind": "timm", "metadata": {}}]


def _resolve_hf(source: Source, cache_dir: Any = None, token: Any = None) -> tuple[str, Any]:
    from nar_plugin.integrations.hf.hub import fetch_repo

    snap = fetch_repo(source.ref, source.extra.get("sha") or source.revision, token, cache_dir)
    return snap.sha, snap


def _build_hf(source: Source, snap: Any) -> tuple[Any, list[dict[str, Any]]]:
    # the same graph, key and metadata as `nar index hf` (integrations/hf/index.py)
    from nar_plugin.integrations.hf.configs import graph_from_repo_config
    from nar_plugin.integrations.hf.hub import tree_url
    from nar_plugin.integrations.hf.index import entry_metadata
    from nar_plugin.integrations.hf.keys import repo_key

    graph = graph_from_repo_config(snap.config, {"name": source.ref})
    entry = {"key": repo_key(source.ref, snap.sha), "uri": tree_url(source.ref, snap.sha), "source_kind": "hf",
             "metadata": entry_metadata(snap, source.revision)}
    return graph, [entry]


def _resolve_file(source: Source, **_: Any) -> tuple[str, Any]:
    if not Path(source.ref).exists():
        raise FileNotFoundError(f"{source.ref} does not exist")
    return revision_of_path(source.ref), None


def _build_file(source: Source, state: Any) -> tuple[Any, list[dict[str, Any]]]:
    from nar_plugin.extract import extract_graph

    # the key and uri `nar index add <path>` writes
    return extract_graph(source.ref), [{"key": f"file:{source.ref}", "uri": source.ref, "source_kind": "file",
                                        "metadata": {}}]


_CLIENTS: dict[str | None, Any] = {}


def _client(tracking_uri: str | None) -> Any:
    from nar_plugin.integrations.mlflow.client import client_for

    if tracking_uri not in _CLIENTS:  # one health check per worker process and server
        _CLIENTS[tracking_uri] = client_for(tracking_uri)
    return _CLIENTS[tracking_uri]


def _resolve_mlflow(source: Source, **_: Any) -> tuple[str, Any]:
    from nar_plugin.integrations.mlflow.resolve import model_id_for

    client = _client(source.extra.get("tracking_uri"))
    model_id = model_id_for(client, source.ref)
    versions = _versions(source)
    name, _, version = source.ref.removeprefix("models:/").rpartition("/")
    if not versions and name and version.isdigit():
        versions = [(name, version)]
    return _mlflow_revision(model_id, versions), (client, model_id, versions)


def _build_mlflow(source: Source, state: Any) -> tuple[Any, list[dict[str, Any]]]:
    import tempfile

    from nar_plugin.extract.mlflow_model import graph_from_mlflow_dir
    from nar_plugin.integrations.mlflow.client import tracking_uri_of
    from nar_plugin.integrations.mlflow.indexing import download_model_files
    from nar_plugin.integrations.mlflow.keys import model_key, server_id, version_key
    from nar_plugin.integrations.mlflow.tags import model_metadata, version_metadata

    client, model_id, versions = state
    uri = tracking_uri_of(client)
    with tempfile.TemporaryDirectory(prefix="nar-bulk-") as tmp:
        graph = graph_from_mlflow_dir(download_model_files(client, model_id, tmp))  # never pickles
    lm = client.get_logged_model(model_id)
    # the keys and metadata `nar index sync` writes for the same model and versions
    entries = [{"key": model_key(model_id), "uri": f"models:/{model_id}", "source_kind": "mlflow",
                "metadata": {**model_metadata(lm, uri), "uri": f"models:/{model_id}"}}]
    for name, version in versions:
        meta = version_metadata(client.get_model_version(name, version), uri)
        entries.append({"key": version_key(name, version, server_id(uri)), "uri": meta["uri"],
                        "source_kind": "mlflow", "metadata": meta})
    return graph, entries


_STAGES = {
    "timm": (_resolve_timm, _build_timm),
    "hf": (_resolve_hf, _build_hf),
    "file": (_resolve_file, _build_file),
    "mlflow": (_resolve_mlflow, _build_mlflow),
}


def extract_source(source: Source, previous: str | None = None, *, hf_cache_dir: Any = None,
                   token: Any = None) -> Outcome:
    """Fetch, build on meta, extract and describe one source (never raises).

    Args:
        source: what to index.
        previous: the revision ``--resume`` found in the index for this source (``None``: none);
            when the source still resolves to it, the outcome is ``skipped``.
        hf_cache_dir, token: for HF sources (default cache; the logged-in token).

    Returns:
        An :class:`Outcome` (``ok`` with ``graph`` set, ``skipped`` or ``failed``).
    """
    from nar_plugin.config import NAR_MAX_NODES
    from nar_plugin.errors import GraphTooLargeError
    from nar_plugin.search.results import describe_graph

    t0 = time.perf_counter()
    out = Outcome(source.sid)
    try:
        resolve, build = _STAGES[source.kind]
        out.revision, state = resolve(source, cache_dir=hf_cache_dir, token=token)
        if previous is not None and out.revision == previous:
            out.status = "skipped"
            return out
        graph, out.entries = build(source, state)
        limit = NAR_MAX_NODES.get()
        if graph.num_nodes > limit:
            raise GraphTooLargeError(graph.num_nodes, limit)
        out.description = describe_graph(graph)
        out.graph, out.graph_hash, out.name = graph, graph.graph_hash, graph.metadata.get("name")
    except Exception as e:  # noqa: BLE001 - bulk contract: a failing source is recorded, not raised
        logger.info("bulk: %s failed: %s: %s", source.sid, type(e).__name__, e)
        out.fail(e)
    finally:
        out.extract_s = time.perf_counter() - t0
        out.worker, out.rss_mb = _worker(), peak_rss_mb()
    return out


def on_device(encoder: Any, device: str) -> Any:
    """``encoder`` (a :func:`~nar_plugin.model.inference.load_encoder` result) with its forward
    on ``device``: batches go there, embeddings come back to CPU; everything around the forward
    stays :func:`embed_many`'s. ``cpu``: ``encoder`` itself. The process-wide cached encoder
    is not moved: the device gets a copy of its module."""
    import copy
    import dataclasses

    import torch

    if device == "cpu":
        return encoder

    class OnDevice(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = copy.deepcopy(inner).to(device)
            self.config = inner.config

        def forward(self, batch: Any) -> Any:
            return self.inner(batch.to(device)).float().cpu()

    return dataclasses.replace(encoder, model=OnDevice(encoder.model))


def embed_outcomes(outcomes: list[Outcome], encoder: Any = None, device: str = "cpu") -> list[Outcome]:
    """Embed the ``ok`` outcomes of a batch with one :func:`embed_many` call (sets ``vector``,
    drops ``graph``); other statuses pass through unchanged.

    Args:
        outcomes: the batch.
        encoder: a :func:`~nar_plugin.model.inference.load_encoder` result (default: shipped),
            already :func:`on_device` when ``device`` is not ``cpu``.
        device: where the forward runs (``cuda`` in a GPU actor).
    """
    from nar_plugin.model.inference import embed_many, load_encoder

    todo = [o for o in outcomes if o.status == "ok"]
    if not todo:
        return outcomes
    t0 = time.perf_counter()
    enc = encoder or on_device(load_encoder(), device)
    try:
        emb = embed_many([o.graph for o in todo], batch_size=len(todo), encoder=enc)
    except Exception as e:  # noqa: BLE001 - a batch that cannot be embedded fails its sources
        for o in todo:
            o.fail(e)
        return outcomes
    each = (time.perf_counter() - t0) / len(todo)
    for o, v in zip(todo, emb):
        o.vector, o.graph, o.embed_s = v, None, each
    return outcomes
