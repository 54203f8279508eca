"""Indexing Hub repos by id: one (:func:`index_repo`) or many in parallel (:func:`index_repos`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nar_plugin.graph import ArchGraph
from nar_plugin.integrations.hf.configs import TORCH_LOCK, graph_from_repo_config
from nar_plugin.integrations.hf.hub import HubSnapshot, fetch_repo, tree_url
from nar_plugin.integrations.hf.keys import parse_repo_spec, repo_key
from nar_plugin.utils.progress import Progress

logger = logging.getLogger(__name__)

__all__ = ["IndexSummary", "RepoFailure", "entry_metadata", "index_repo", "index_repos", "specs_from_file"]

#: ``progress(spec, key_or_None, error_or_None)``, called after each repo of :func:`index_repos`
ProgressCallback = Callable[[str, str | None, BaseException | None], None]


class _Prepared(NamedTuple):
    """A repo fetched and extracted, ready to be embedded and written to the index."""

    key: str
    graph: ArchGraph
    metadata: dict[str, Any]
    uri: str


def entry_metadata(snap: HubSnapshot, requested: str | None) -> dict[str, Any]:
    """The index metadata of a Hub repo's entry (``nar index hf`` and ``nar index bulk`` write
    the same): repo id, resolved and requested revision, pipeline tag, library, model type,
    declared ``base_model``; unknown fields left out."""
    meta = {"repo_id": snap.repo_id, "revision": snap.sha, "requested_revision": requested or "main",
            "pipeline_tag": snap.pipeline_tag, "library": snap.library, "model_type": snap.model_type,
            "base_model": snap.base_model or None}
    return {k: v for k, v in meta.items() if v is not None}


def _prepare(spec: str, revision: str | None, token: str | bool | None, cache_dir: str | Path | None,
             extract: Callable[[Path], ArchGraph] | None = None) -> _Prepared:
    """Fetch and extract ``spec`` (``revision``, when given, overrides the spec's own)."""
    repo_id, spec_rev = parse_repo_spec(spec)
    revision = revision or spec_rev
    snap = fetch_repo(repo_id, revision, token, cache_dir)
    if extract is None:
        graph = graph_from_repo_config(snap.config, {"name": repo_id})
    else:  # e.g. a sandboxed subprocess: it reads the config from a file of its own
        import json
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nar-hf-") as tmp:
            cfg = Path(tmp) / "config.json"
            cfg.write_text(json.dumps(snap.config))
            graph = extract(cfg)
    return _Prepared(repo_key(repo_id, snap.sha), graph, entry_metadata(snap, revision), tree_url(repo_id, snap.sha))


def _store(prepared: _Prepared, index: Any) -> str:
    from nar_plugin.search.api import index_graph

    with TORCH_LOCK:  # embedding runs the encoder: not while another thread traces
        index_graph(prepared.graph, prepared.key, prepared.metadata, index=index, uri=prepared.uri,
                    source_kind="hf")
    return prepared.key


def index_repo(repo_id: str, revision: str | None = None, token: str | bool | None = None,
               index: Any = None, *, cache_dir: str | Path | None = None,
               extract: Callable[[Path], ArchGraph] | None = None) -> str:
    """Index a Hub model repo by id, from its ``config.json`` only.

    Args:
        repo_id: ``org/name`` (``org/name@rev`` and ``hf:org/name@rev`` are accepted too).
        revision: branch, tag or sha (default ``main``); resolved to a commit sha.
        token: Hub token for private or gated repos.
        index: an ``EmbeddingIndex`` or path (default: the index under ``NAR_HOME``).
        cache_dir: Hub cache (default: ``huggingface_hub.constants.HF_HUB_CACHE``, which is read
            from ``HF_HUB_CACHE`` when ``huggingface_hub`` is first imported).
        extract: reads the graph from a ``config.json`` path instead of extracting in-process
            (the webhook receiver passes a sandboxed subprocess for configs pushed by others).

    Returns:
        The key, ``hf:<repo_id>@<sha>``. Metadata stored: repo_id, revision (sha),
        requested_revision, pipeline_tag, library, model_type, base_model.

    Raises:
        KeyNotFoundError: unknown repo/revision, no config.json (or not cached when offline).
        UnsupportedModelError: the config is not a transformers or timm model config.

    Example:
        >>> nar_plugin.hf.index_repo("google-bert/bert-base-uncased")
        'hf:google-bert/bert-base-uncased@<the 40-hex sha main resolved to>'
    """
    key = _store(_prepare(repo_id, revision, token, cache_dir, extract), index)
    logger.info("indexed %s", key)
    return key


@dataclass(frozen=True)
class RepoFailure:
    """One repo :func:`index_repos` could not index."""

    repo: str
    error: str
    message: str

    @classmethod
    def of(cls, repo: str, exc: BaseException) -> RepoFailure:
        """The failure of ``repo`` with ``exc`` (its type name and the first line of its message)."""
        text = str(exc)
        return cls(repo, type(exc).__name__, text.splitlines()[0] if text else "")


@dataclass(frozen=True)
class IndexSummary:
    """Result of :func:`index_repos`.

    Attributes:
        indexed: repo spec -> index key, for the repos that worked.
        failed: one :class:`RepoFailure` per repo that did not.
        seconds: wall time of the whole run.
    """

    indexed: dict[str, str] = field(default_factory=dict)
    failed: list[RepoFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def repos_per_minute(self) -> float:
        return 60.0 * len(self.indexed) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "failed": [f.__dict__ for f in self.failed],
                "seconds": round(self.seconds, 3), "repos_per_minute": round(self.repos_per_minute, 2)}


def index_repos(repo_ids: Iterable[str], workers: int = 4, progress: bool | ProgressCallback = True,
                *, token: str | bool | None = None, index: Any = None,
                cache_dir: str | Path | None = None) -> IndexSummary:
    """Index many repos: downloads overlap in ``workers`` threads, extraction is serialised and
    index writes happen in the calling thread. A repo that fails is recorded, not raised.

    Args:
        repo_ids: ``org/name`` or ``org/name@revision`` specs.
        workers: download threads.
        progress: ``True`` shows a progress bar on stderr; a callable is called as
            ``progress(spec, key_or_None, error_or_None)`` after each repo; ``False``: silent.

    Returns:
        An :class:`IndexSummary`.

    Raises:
        ValueError: ``workers`` < 1.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from nar_plugin.search.api import open_index

    if workers < 1:
        raise ValueError(f"workers must be >= 1, found {workers}")
    specs = [s.strip() for s in repo_ids if s and s.strip()]
    idx = open_index(index)
    indexed: dict[str, str] = {}
    failed: list[RepoFailure] = []
    t0 = time.perf_counter()
    with Progress("indexing HF repos", total=len(specs), enabled=progress is True) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nar-hf") as pool:
        futures = {pool.submit(_prepare, s, None, token, cache_dir): s for s in specs}
        for fut in as_completed(futures):
            spec, key, err = futures[fut], None, None
            try:
                key = indexed[spec] = _store(fut.result(), idx)
            except Exception as e:  # noqa: BLE001 - bulk contract: record per-repo failures
                err = e
                failed.append(RepoFailure.of(spec, e))
                logger.info("could not index %s: %s: %s", spec, type(e).__name__, e)
            bar.advance()
            if callable(progress):
                progress(spec, key, err)
    return IndexSummary(indexed, sorted(failed, key=lambda f: f.repo), time.perf_counter() - t0)


def specs_from_file(path: str | Path) -> list[str]:
    """Repo specs from a file: one per line, ``#`` comments and blank lines skipped."""
    lines = Path(path).read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
