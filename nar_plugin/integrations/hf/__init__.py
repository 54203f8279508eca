"""Hugging Face Hub integration: index repos by id, stamp model cards on push, webhook receiver.

Three entry points, each importing ``huggingface_hub`` only when called:

- :func:`index_repo` / :func:`index_repos`: resolve a revision to a commit sha, download
  ``config.json`` (and ``README.md`` when offline, for ``base_model``), build the model on the
  meta device (transformers, or timm for timm repos), embed and index it under
  ``hf:<repo_id>@<sha>``. Weights are never downloaded.
- :func:`autolog`: wrap ``HfApi.create_commit`` (used by ``push_to_hub``, ``upload_folder`` and
  ``upload_file``) so that a commit that adds a model ``config.json`` also writes a ``nar``
  block (embedding, encoder, graph_hash) into the ``README.md`` metadata, in the same commit.
- :func:`make_webhook_app`: a Starlette app that verifies ``X-Webhook-Secret`` and indexes
  every updated model repo at the pushed ``headSha``.

The exception boundary follows MLflow autologging: errors of the user's own call propagate
unchanged; an error inside the hook is one warning and the commit goes ahead untouched;
``NAR_TESTING=true`` re-raises hook errors.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import queue
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.errors import ConfigError, KeyNotFoundError, MissingDependencyError, UnsupportedModelError
from nar_plugin.graph import ArchGraph

logger = logging.getLogger(__name__)

__all__ = [
    "HubSnapshot",
    "RepoFailure",
    "IndexSummary",
    "repo_key",
    "parse_repo_spec",
    "fetch_repo",
    "graph_from_repo_config",
    "index_repo",
    "index_repos",
    "nar_card_block",
    "card_with_nar_block",
    "autolog",
    "maybe_autolog",
    "relation_vs_base_model",
    "classify_webhook",
    "make_webhook_app",
]

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Serialises extraction and embedding in this module's threads: torch.fx tracing patches
#: ``nn.Module.__call__`` process-wide, so a module run in another thread while a trace is in
#: progress (our own encoder included) breaks with "module is not installed as a submodule".
#: On a few cores parallel extraction would gain nothing anyway; downloads still overlap. It is the
#: process-wide lock of the extractors (re-entrant), so other threads' extraction waits too.
from nar_plugin.extract import TORCH_LOCK as _TORCH_LOCK  # noqa: E402


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:
        raise MissingDependencyError("huggingface_hub", "hf") from e
    return huggingface_hub


def _library() -> dict[str, str]:
    from nar_plugin import __version__

    return {"library_name": "nar-plugin", "library_version": __version__}


def _offline() -> bool:
    from huggingface_hub import constants

    fn = getattr(constants, "is_offline_mode", None)
    return bool(fn() if fn else constants.HF_HUB_OFFLINE)


# ------------------------------------------------------------------ fetching
def repo_key(repo_id: str, sha: str) -> str:
    """The index key of a repo at a commit: ``hf:<repo_id>@<sha>``."""
    return f"hf:{repo_id}@{sha}"


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """``"org/name"``, ``"org/name@rev"`` or ``"hf:org/name@rev"`` -> ``(repo_id, revision)``.

    Raises:
        ValueError: not a repo id.
    """
    s = spec.strip().removeprefix("hf:")
    repo_id, _, rev = s.partition("@")
    if not _REPO_RE.fullmatch(repo_id):
        raise ValueError(f"expected a repo id like 'org/name' (optionally '@revision'), found {spec!r}")
    return repo_id, rev or None


@dataclass(frozen=True)
class HubSnapshot:
    """What :func:`fetch_repo` read about one repo revision (no weights).

    Attributes:
        repo_id: ``org/name``.
        sha: the commit the revision resolved to.
        config: the parsed ``config.json``.
        card: the model card metadata (YAML front matter), ``{}`` when there is none.
        pipeline_tag: from the Hub API or the card.
        library: ``transformers``, ``timm``... from the Hub API, the card or the config.
        files: the repo files that were requested (``config.json``, maybe ``README.md``).
    """

    repo_id: str
    sha: str
    config: dict[str, Any]
    card: dict[str, Any]
    pipeline_tag: str | None = None
    library: str | None = None
    files: tuple[str, ...] = ()

    @property
    def base_model(self) -> list[str]:
        """``base_model`` of the card as a list (empty when absent)."""
        return _as_list(self.card.get("base_model"))

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type") or self.config.get("architecture")


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v if x]


def _library_of(config: Mapping[str, Any]) -> str | None:
    if "model_type" in config:
        return "transformers"
    if "architecture" in config:
        return "timm"
    return None


def _download(repo_id: str, filename: str, revision: str | None, token: str | bool | None,
              cache_dir: str | Path | None, local_only: bool = False) -> str:
    hub = _hub()
    return hub.hf_hub_download(repo_id, filename, revision=revision, token=token, cache_dir=cache_dir,
                               local_files_only=local_only, **_library())


def _is_connection_error(exc: BaseException) -> bool:
    """The Hub could not be reached (as opposed to: it answered no)."""
    from huggingface_hub import errors as hf_errors

    types: tuple[type[BaseException], ...] = (hf_errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)
    for mod, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                       ("requests", ("ConnectionError", "Timeout"))):
        module = sys.modules.get(mod)  # only clients that are already in use
        types += tuple(getattr(module, n) for n in names if module is not None and hasattr(module, n))
    return isinstance(exc, types)


def _sha_from_snapshot_path(path: str) -> str:
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _SHA_RE.fullmatch(parts[i + 1]):
            return parts[i + 1]
    raise KeyNotFoundError(f"cannot tell the commit of {path} (not in a Hub cache snapshot)")


def fetch_repo(repo_id: str, revision: str | None = None, token: str | bool | None = None,
               cache_dir: str | Path | None = None) -> HubSnapshot:
    """Resolve ``revision`` to a commit and read ``config.json`` (and the card metadata).

    Online, ``HfApi.model_info`` gives the sha, pipeline tag, library and card metadata, then
    ``config.json`` is downloaded at that sha. Offline (``HF_HUB_OFFLINE=1``, or the Hub cannot
    be reached), the Hub cache answers: ``refs/<revision>`` names the sha, ``snapshots/<sha>/`` holds the files, and the
    card metadata comes from a cached ``README.md`` if there is one.

    Raises:
        KeyNotFoundError: unknown repo, revision or no ``config.json`` (or not cached offline).
        CorruptArtifactError: ``config.json`` is not a JSON object.
    """
    from nar_plugin.errors import CorruptArtifactError

    hub = _hub()
    from huggingface_hub import errors as hf_errors

    card: dict[str, Any] = {}
    pipeline_tag = library = None
    files = ["config.json"]
    online = not _offline()
    try:
        if online:
            try:
                info = hub.HfApi(**_library()).model_info(repo_id, revision=revision, token=token)
            except Exception as e:
                if not _is_connection_error(e):
                    raise
                # like hf_hub_download: an unreachable Hub falls back to the local cache
                logger.info("Hub unreachable (%s: %s); reading %s from the local cache", type(e).__name__, e, repo_id)
                online = False
        if online:
            sha = info.sha
            if not sha:
                raise KeyNotFoundError(f"the Hub returned no commit sha for {repo_id}@{revision or 'main'}")
            cfg_path = _download(repo_id, "config.json", sha, token, cache_dir)
            card = info.card_data.to_dict() if info.card_data is not None else {}
            pipeline_tag, library = info.pipeline_tag, info.library_name
        else:
            cfg_path = _download(repo_id, "config.json", revision, token, cache_dir, local_only=True)
            sha = _sha_from_snapshot_path(cfg_path)
            try:
                readme = _download(repo_id, "README.md", sha, token, cache_dir, local_only=True)
                files.append("README.md")
                from huggingface_hub.repocard import metadata_load

                card = metadata_load(readme) or {}
            except hf_errors.EntryNotFoundError:
                card = {}
    except hf_errors.GatedRepoError as e:
        raise KeyNotFoundError(f"{repo_id} is gated: accept its terms and pass a token ({e})") from e
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.EntryNotFoundError) as e:
        where = "on the Hub" if online else "in the offline cache"
        raise KeyNotFoundError(f"{repo_id}@{revision or 'main'}: no config.json {where} "
                               f"({type(e).__name__})") from e
    try:
        config = json.loads(Path(cfg_path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptArtifactError(f"config.json of {repo_id}@{sha} does not parse: {e}", cfg_path) from e
    if not isinstance(config, dict):
        raise CorruptArtifactError(f"config.json of {repo_id}@{sha} holds {type(config).__name__}, "
                                   "expected a JSON object", cfg_path)
    return HubSnapshot(repo_id, sha, config, dict(card),
                       pipeline_tag or card.get("pipeline_tag"),
                       library or card.get("library_name") or _library_of(config), tuple(files))


def graph_from_repo_config(config: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> ArchGraph:
    """The architecture graph of a Hub ``config.json``: transformers (``model_type``) or timm
    (``architecture`` + ``num_classes`` / ``model_args``), built on meta.

    Raises:
        UnsupportedModelError: neither kind of config, or the model cannot be built.
        GraphExtractionError: built but not exportable.
    """
    meta = dict(metadata or {})
    with _TORCH_LOCK:
        if "model_type" in config:
            from nar_plugin.extract.transformers import graph_from_hf_config

            return graph_from_hf_config(dict(config), metadata=meta)
        if "architecture" in config:
            from nar_plugin.extract.timm_models import build_meta_timm
            from nar_plugin.extract.torch_module import graph_from_module

            kwargs = dict(config.get("model_args") or {})
            if config.get("num_classes") is not None:
                kwargs.setdefault("num_classes", int(config["num_classes"]))
            model = build_meta_timm(str(config["architecture"]), **kwargs)
            return graph_from_module(model, None, metadata={"name": config["architecture"],
                                                             "source_kind": "timm", **meta})
    raise UnsupportedModelError("config.json has neither 'model_type' (transformers) nor 'architecture' "
                                f"(timm); found keys {sorted(config)[:8]}")


def _entry_metadata(snap: HubSnapshot, requested: str | None) -> dict[str, Any]:
    meta = {"repo_id": snap.repo_id, "revision": snap.sha, "requested_revision": requested or "main",
            "pipeline_tag": snap.pipeline_tag, "library": snap.library, "model_type": snap.model_type,
            "base_model": snap.base_model or None}
    return {k: v for k, v in meta.items() if v is not None}


def _prepare(repo_id: str, revision: str | None, token: str | bool | None,
             cache_dir: str | Path | None) -> tuple[str, ArchGraph, dict[str, Any], str]:
    from huggingface_hub import constants

    snap = fetch_repo(repo_id, revision, token, cache_dir)
    graph = graph_from_repo_config(snap.config, {"name": repo_id})
    uri = f"{constants.ENDPOINT}/{repo_id}/tree/{snap.sha}"
    return repo_key(repo_id, snap.sha), graph, _entry_metadata(snap, revision), uri


def index_repo(repo_id: str, revision: str | None = None, token: str | bool | None = None,
               index: Any = None, *, cache_dir: str | Path | None = None) -> str:
    """Index a Hub model repo by id, from its ``config.json`` only.

    Args:
        repo_id: ``org/name`` (``org/name@rev`` and ``hf:org/name@rev`` are accepted too).
        revision: branch, tag or sha (default ``main``); resolved to a commit sha.
        token: Hub token for private or gated repos.
        index: an ``EmbeddingIndex`` or path (default: the index under ``NAR_HOME``).
        cache_dir: Hub cache (default: ``huggingface_hub.constants.HF_HUB_CACHE``, which is read
            from ``HF_HUB_CACHE`` when ``huggingface_hub`` is first imported).

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
    from nar_plugin.search.api import index_graph

    rid, rev = parse_repo_spec(repo_id)
    key, graph, meta, uri = _prepare(rid, revision or rev, token, cache_dir)
    with _TORCH_LOCK:
        index_graph(graph, key, meta, index=index, uri=uri, source_kind="hf")
    logger.info("indexed %s", key)
    return key


@dataclass(frozen=True)
class RepoFailure:
    """One repo :func:`index_repos` could not index."""

    repo: str
    error: str
    message: str


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


def index_repos(repo_ids: Iterable[str], workers: int = 4, progress: bool | Callable[[str, str | None, BaseException | None], None] = True,
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
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from nar_plugin.search.api import open_index, index_graph

    if workers < 1:
        raise ValueError(f"workers must be >= 1, found {workers}")
    specs = [s.strip() for s in repo_ids if s and s.strip()]
    idx = open_index(index)
    indexed: dict[str, str] = {}
    failed: list[RepoFailure] = []
    t0 = time.perf_counter()
    bar, task = _progress_bar(len(specs)) if progress is True else (None, None)

    def prepare(spec: str) -> tuple[str, ArchGraph, dict[str, Any], str]:
        rid, rev = parse_repo_spec(spec)
        return _prepare(rid, rev, token, cache_dir)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nar-hf") as pool:
            futures = {pool.submit(prepare, s): s for s in specs}
            for fut in as_completed(futures):
                spec = futures[fut]
                err: BaseException | None = None
                key = None
                try:
                    key, graph, meta, uri = fut.result()
                    with _TORCH_LOCK:
                        index_graph(graph, key, meta, index=idx, uri=uri, source_kind="hf")
                    indexed[spec] = key
                except Exception as e:  # noqa: BLE001 - bulk contract: record per-repo failures
                    err = e
                    failed.append(RepoFailure(spec, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
                    logger.info("could not index %s: %s: %s", spec, type(e).__name__, e)
                if bar is not None:
                    bar.advance(task)
                elif callable(progress):
                    progress(spec, key, err)
    finally:
        if bar is not None:
            bar.stop()
    return IndexSummary(indexed, sorted(failed, key=lambda f: f.repo), time.perf_counter() - t0)


def _progress_bar(total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("indexing HF repos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    task = bar.add_task("index", total=total)
    bar.start()
    return bar, task


# ------------------------------------------------------------------ relations
def relation_vs_base_model(match: Any, query: str | None = None, index: Any = None) -> str:
    """Compare the architectural relation of a match with the cards' ``base_model`` link.

    Args:
        match: a :class:`nar_plugin.search.api.Match` of ``find_similar(query)``.
        query: the query key (``hf:org/name@sha``) or repo id, to look up its own ``base_model``.
        index: the index the query lives in (for that look-up).

    Returns:
        ``"agrees: base_model is the match"`` / ``"agrees: the match is fine-tuned from the query"``
        when a card links the two and the relation is identical or near-duplicate;
        ``"differs: ..."`` when a card links them but the architectures are only related or
        unrelated; ``"no base_model link"`` otherwise.
    """
    from nar_plugin.search.api import open_index

    q_repo = parse_repo_spec(query)[0] if query else None
    m_repo = match.metadata.get("repo_id")
    q_base: list[str] = []
    if query and query.startswith("hf:"):
        entry = open_index(index).get(query)
        q_base = _as_list(entry.metadata.get("base_model")) if entry is not None else []
    close = match.relation in ("identical", "near-duplicate")
    if m_repo and m_repo in q_base:
        link = "base_model is the match"
    elif q_repo and q_repo in _as_list(match.metadata.get("base_model")):
        link = "the match is fine-tuned from the query"
    else:
        return "no base_model link"
    return f"agrees: {link}" if close else f"differs: {link} but the architectures are {match.relation}"


# ------------------------------------------------------------------ push hook
def nar_card_block(graph: ArchGraph) -> dict[str, str]:
    """The ``nar`` card metadata of a graph: ``{embedding, encoder, graph_hash}``."""
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import embed_graph, encoder_version

    return {"embedding": encode_embedding(embed_graph(graph)), "encoder": encoder_version(),
            "graph_hash": graph.graph_hash}


def card_with_nar_block(text: str, block: Mapping[str, Any]) -> str:
    """``text`` (a README, possibly empty) with its YAML metadata's ``nar`` key set to ``block``;
    the rest of the card is kept.

    Raises:
        ValueError, yaml.YAMLError: the README's YAML front matter does not parse (callers leave
            the card alone).
    """
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    card.data.nar = dict(block)
    return str(card)


@dataclass(frozen=True)
class _AutologConfig:
    silent: bool = False
    index: bool = True


@dataclass
class _Patch:
    original: Callable[..., Any] | None = None
    config: _AutologConfig = field(default_factory=_AutologConfig)


_PATCH = _Patch()
_PATCH_LOCK = threading.Lock()


def autolog(disable: bool = False, silent: bool = False, *, index: bool = True) -> None:
    """Stamp model cards on every push: wrap ``HfApi.create_commit``.

    A commit that adds a root ``config.json`` of a transformers or timm model also writes the
    ``nar`` block into ``README.md`` metadata, in the same commit: the commit's own README is
    merged when it has one; otherwise the repo's current README is read (at ``parent_commit`` or
    ``revision``) and merged, or a new card holding only the metadata is created when the repo
    has none. If the current README cannot be read (offline, network error), the hook gives up
    and the commit goes ahead unchanged, so an existing card is never overwritten blindly.
    After the commit, the model is indexed under ``hf:<repo_id>@<commit sha>`` (``index=True``).

    Calling it again only updates the settings; ``disable=True`` restores the original method.
    ``from huggingface_hub import create_commit`` done *before* ``autolog()`` keeps the unwrapped
    function; ``HfApi().create_commit``, ``push_to_hub`` and ``upload_folder`` are always covered.

    Args:
        disable: remove the wrapper.
        silent: no warnings when the hook fails (still logged at debug level).
        index: also index the pushed model in the local index.
    """
    hub = _hub()
    from huggingface_hub import hf_api

    with _PATCH_LOCK:
        if disable:
            if _PATCH.original is not None:
                hf_api.HfApi.create_commit = _PATCH.original  # type: ignore[method-assign]
                _PATCH.original = None
                _rebind_aliases(hub, hf_api)
            return
        _PATCH.config = _AutologConfig(silent=silent, index=index)
        if _PATCH.original is not None:
            return
        current = hf_api.HfApi.create_commit
        if getattr(current, "__nar_autolog__", False):  # wrapped by an earlier copy of this module
            return
        _PATCH.original = current
        hf_api.HfApi.create_commit = _make_wrapper(current)  # type: ignore[method-assign]
        _rebind_aliases(hub, hf_api)


def _rebind_aliases(hub: Any, hf_api: Any) -> None:
    # `huggingface_hub.create_commit` is `HfApi().create_commit` bound at import time: rebind it
    hf_api.create_commit = hf_api.api.create_commit
    if "create_commit" in vars(hub):
        hub.create_commit = hf_api.api.create_commit


def maybe_autolog() -> bool:
    """Turn on :func:`autolog` when ``NAR_HF_AUTOLOG=true``; for entry points. Never raises.

    Returns:
        Whether the hook is on.
    """
    from nar_plugin.config import NAR_HF_AUTOLOG

    try:
        if not NAR_HF_AUTOLOG.get():
            return False
        autolog(silent=False)
        return True
    except Exception as e:  # noqa: BLE001 - called from entry points, which must never break
        logger.warning("nar-plugin: HF autologging stays off: %s: %s", type(e).__name__, e)
        return False


def _plugin_failure(exc: BaseException, what: str) -> None:
    from nar_plugin.config import NAR_TESTING

    if NAR_TESTING.get():
        raise exc
    msg = f"nar-plugin: {what} failed ({type(exc).__name__}: {exc}); the commit is not changed by nar-plugin"
    if _PATCH.config.silent:
        logger.debug(msg, exc_info=exc)
        return
    logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def _make_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs, ops = _materialise_operations(args, kwargs)
        stamped = None
        if ops is not None:
            try:
                stamped = _stamp(self, args[0] if args else kwargs.get("repo_id"), ops, kwargs)
            except Exception as e:  # noqa: BLE001 - the hook's exception boundary
                _plugin_failure(e, "stamping the model card")
        if stamped is not None:
            new_ops, graph, card = stamped
            if "operations" in kwargs:
                kwargs["operations"] = new_ops
            else:
                args = (args[0], new_ops, *args[2:])
        result = original(self, *args, **kwargs)  # the user's call: its errors propagate
        if stamped is not None and _PATCH.config.index:
            repo_id = args[0] if args else kwargs.get("repo_id")
            if hasattr(result, "add_done_callback"):  # run_as_future=True
                result.add_done_callback(lambda f: f.exception() or _index_pushed(repo_id, f.result(), graph, card))
            else:
                _index_pushed(repo_id, result, graph, card)
        return result

    create_commit.__nar_autolog__ = True  # type: ignore[attr-defined]
    return create_commit


def _materialise_operations(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], list[Any] | None]:
    """Turn a one-shot iterable of operations into a list (the hook and the commit both read it)."""
    if "operations" in kwargs:
        ops = kwargs["operations"]
    elif len(args) >= 2:
        ops = args[1]
    else:
        return args, kwargs, None  # a malformed call: let the original raise its own error
    if not isinstance(ops, list):
        ops = list(ops)
        if "operations" in kwargs:
            kwargs = {**kwargs, "operations": ops}
        else:
            args = (args[0], ops, *args[2:])
    return args, kwargs, ops


def _read_op(op: Any) -> bytes:
    src = op.path_or_fileobj
    if isinstance(src, bytes):
        return src
    if isinstance(src, (str, Path)):
        return Path(src).read_bytes()
    pos = src.tell()
    try:
        return src.read()
    finally:
        src.seek(pos)


def _stamp(api: Any, repo_id: str, ops: list[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], ArchGraph, dict[str, Any]] | None:
    """(operations with the stamped README, graph, card metadata), or None: nothing to stamp."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if kwargs.get("repo_type") not in (None, "model"):
        return None
    adds = {op.path_in_repo: i for i, op in enumerate(ops) if isinstance(op, CommitOperationAdd)}
    if "config.json" not in adds:
        return None
    if any(isinstance(op, CommitOperationDelete) and op.path_in_repo == "README.md" for op in ops):
        return None
    config = json.loads(_read_op(ops[adds["config.json"]]))
    if not isinstance(config, dict) or not ("model_type" in config or "architecture" in config):
        logger.debug("config.json of the commit to %s is not a model config; card not stamped", repo_id)
        return None
    graph = graph_from_repo_config(config, {"name": repo_id})
    if "README.md" in adds:
        text = _read_op(ops[adds["README.md"]]).decode("utf-8")
    else:
        text = _current_readme(api, repo_id, kwargs)
    new_text = card_with_nar_block(text, nar_card_block(graph))
    new_op = CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=new_text.encode("utf-8"))
    out = [op for i, op in enumerate(ops) if i != adds.get("README.md")] + [new_op]
    from huggingface_hub import ModelCard

    meta = {"model_type": config.get("model_type") or config.get("architecture"),
            "library": _library_of(config), "base_model": _as_list(ModelCard(new_text).data.to_dict().get("base_model")) or None}
    return out, graph, {k: v for k, v in meta.items() if v is not None}


def _current_readme(api: Any, repo_id: str, kwargs: Mapping[str, Any]) -> str:
    """The repo's README at the commit's parent, ``""`` when the repo or the README does not exist.

    Raises:
        LocalEntryNotFoundError & co: the README could not be checked (offline, network).
    """
    from huggingface_hub import errors as hf_errors

    rev = kwargs.get("parent_commit") or kwargs.get("revision")
    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=rev, token=kwargs.get("token"))
    except hf_errors.LocalEntryNotFoundError:
        raise  # offline or unreachable: we do not know whether a card exists
    except (hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError):
        return ""
    return Path(path).read_text(encoding="utf-8")


def _index_pushed(repo_id: str, result: Any, graph: ArchGraph, meta: dict[str, Any]) -> None:
    from nar_plugin.search.api import index_graph

    try:
        oid = getattr(result, "oid", None)
        if not oid:
            return
        key = repo_key(repo_id, oid)
        index_graph(graph, key, {"repo_id": repo_id, "revision": oid, **meta}, uri=getattr(result, "commit_url", None),
                    source_kind="hf")
        logger.info("indexed pushed model %s", key)
    except Exception as e:  # noqa: BLE001 - the hook's exception boundary (after the commit)
        _plugin_failure(e, "indexing the pushed model")


# ------------------------------------------------------------------ webhook receiver
_MAX_BODY = 1 << 20


def classify_webhook(payload: Any) -> list[tuple[str, str | None]] | str:
    """The ``(repo_id, sha)`` revisions a Hub webhook asks to index, or why it is ignored.

    Model repo events with scope ``repo`` (create/update) or ``repo.content`` (and narrower
    ``repo.content.*`` scopes, as the Hub docs advise) are indexed: at the ``newSha`` of every
    updated branch in ``updatedRefs`` (pull-request refs, tags and deleted refs are skipped), or
    at ``repo.headSha`` (the head of ``main``) when ``updatedRefs`` is absent. Everything else
    (datasets, Spaces, discussions, config changes, deletions, moves) is ignored.

    Raises:
        ValueError: the payload is not a Hub webhook payload.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict) or not isinstance(payload.get("repo"), dict):
        raise ValueError("expected a Hub webhook payload with 'event' and 'repo' objects")
    event, repo = payload["event"], payload["repo"]
    action, scope = event.get("action"), str(event.get("scope") or "")
    if repo.get("type") != "model":
        return f"repo type {repo.get('type')!r} is not 'model'"
    if scope == "repo":
        if action not in ("create", "update"):
            return f"action {action!r} on scope 'repo' does not add a revision"
    elif not (scope == "repo.content" or scope.startswith("repo.content.")):
        return f"scope {scope!r} does not change the repo's files"
    name = repo.get("name")
    if not isinstance(name, str) or not _REPO_RE.fullmatch(name):
        raise ValueError(f"repo.name must be a repo id, found {name!r}")
    refs = payload.get("updatedRefs")
    if isinstance(refs, list) and refs:
        shas = [r.get("newSha") for r in refs
                if isinstance(r, dict) and str(r.get("ref", "")).startswith("refs/heads/") and r.get("newSha")]
        if not shas:
            return "only pull-request refs, tags or deleted refs were updated"
    else:
        shas = [repo.get("headSha")]
    for sha in shas:
        if sha is not None and not (isinstance(sha, str) and _SHA_RE.fullmatch(sha)):
            raise ValueError(f"a commit sha must be 40 hex digits, found {sha!r}")
    return [(name, sha) for sha in dict.fromkeys(shas)]


def make_webhook_app(secret: str | None = None, index: Any = None, indexer: Callable[..., Any] | None = None, *,
                     background: bool = True, queue_size: int = 256, token: str | bool | None = None) -> Any:
    """A Starlette app receiving Hub webhooks at ``POST /`` (and ``/webhook``); ``GET /health``.

    Every delivery must carry the secret (``X-Webhook-Secret`` header or ``?secret=``; compared in
    constant time), else 401 and nothing happens. Model repo updates (see
    :func:`classify_webhook`) are indexed by ``indexer(repo_id, revision=sha, token=token,
    index=index)`` (default :func:`index_repo`): queued for one worker thread (202; 503 with
    ``Retry-After`` when the bounded queue is full) or, with ``background=False``, indexed before
    answering (200 with the keys). Other events: 200 with the reason they are ignored; a
    malformed payload: 400. ``app.state.drain()`` waits until the queue is processed.

    Args:
        secret: the webhook secret (default ``NAR_WEBHOOK_SECRET``).

    Raises:
        ConfigError: no secret.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nar_plugin.config import NAR_WEBHOOK_SECRET

    secret = secret or NAR_WEBHOOK_SECRET.get()
    if not secret:
        raise ConfigError("the HF webhook receiver needs a secret: set NAR_WEBHOOK_SECRET (the value "
                          "entered in the Hub webhook settings)")
    expected = secret.encode("utf-8")
    run = indexer or index_repo
    jobs: queue.Queue[tuple[str, str | None] | None] = queue.Queue(maxsize=queue_size)
    stats = {"accepted": 0, "ignored": 0, "rejected": 0, "indexed": 0, "failed": 0}
    keys: list[str] = []
    worker: list[threading.Thread] = []
    lock = threading.Lock()

    def index_one(repo_id: str, sha: str | None) -> str:
        key = run(repo_id, revision=sha, token=token, index=index)
        with lock:
            stats["indexed"] += 1
            keys.append(str(key))
        return str(key)

    def work() -> None:
        while True:
            job = jobs.get()
            try:
                if job is None:
                    return
                index_one(*job)
            except Exception:  # noqa: BLE001 - a failed repo must not stop the worker
                with lock:
                    stats["failed"] += 1
                logger.exception("webhook: indexing %s failed", job)
            finally:
                jobs.task_done()

    def ensure_worker() -> None:
        with lock:
            if not worker or not worker[0].is_alive():
                worker[:] = [threading.Thread(target=work, name="nar-hf-webhook", daemon=True)]
                worker[0].start()

    def reply(code: int, **body: Any) -> JSONResponse:
        return JSONResponse(body, status_code=code)

    async def receive(request: Request) -> JSONResponse:
        # the Hub sends the secret verbatim (no HMAC), as a header or, if configured so, ?secret=
        got = request.headers.get("x-webhook-secret") or request.query_params.get("secret")
        if got is None or not hmac.compare_digest(got.encode("utf-8"), expected):
            stats["rejected"] += 1
            return reply(401, status="rejected", reason="missing or wrong X-Webhook-Secret")
        body = await request.body()
        if len(body) > _MAX_BODY:
            return reply(413, status="rejected", reason=f"payload larger than {_MAX_BODY} bytes")
        try:
            decision = classify_webhook(json.loads(body))
        except (ValueError, UnicodeDecodeError) as e:
            return reply(400, status="rejected", reason=f"bad payload: {e}")
        if isinstance(decision, str):
            stats["ignored"] += 1
            return reply(200, status="ignored", reason=decision)
        stats["accepted"] += 1
        revisions = [sha for _, sha in decision]
        repo_id = decision[0][0]
        if not background:
            try:
                keys_ = [await run_in_threadpool(index_one, rid, sha) for rid, sha in decision]
            except Exception as e:  # noqa: BLE001 - report to the Hub, keep serving
                stats["failed"] += 1
                logger.exception("webhook: indexing %s at %s failed", repo_id, revisions)
                return reply(500, status="failed", repo=repo_id, revisions=revisions, error=type(e).__name__)
            return reply(200, status="indexed", repo=repo_id, revisions=revisions, keys=keys_)
        ensure_worker()
        try:
            for job in decision:
                jobs.put_nowait(job)
        except queue.Full:
            return JSONResponse({"status": "busy", "reason": "indexing queue is full"}, status_code=503,
                                headers={"Retry-After": "30"})
        return reply(202, status="queued", repo=repo_id, revisions=revisions)

    async def health(request: Request) -> JSONResponse:
        return reply(200, status="ok", queued=jobs.qsize(), **stats)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        if worker and worker[0].is_alive():
            jobs.put(None)
            await run_in_threadpool(worker[0].join, 60)

    app = Starlette(routes=[Route("/", receive, methods=["POST"]), Route("/webhook", receive, methods=["POST"]),
                            Route("/health", health, methods=["GET"])], lifespan=lifespan)
    app.state.stats, app.state.keys = stats, keys
    app.state.drain = jobs.join  # block until every queued delivery was processed (tests, shutdown)
    return app


def _specs_from_file(path: str | Path) -> list[str]:
    """Repo specs from a file: one per line, ``#`` comments and blank lines skipped."""
    lines = Path(path).read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
