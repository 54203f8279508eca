"""The push hook: :func:`autolog` wraps ``HfApi.create_commit`` (used by ``push_to_hub``,
``upload_folder`` and ``upload_file``) so that a commit adding a model ``config.json`` also writes
the ``nar`` block (embedding, encoder, graph_hash) into the ``README.md`` metadata, in the same
commit, and the pushed model is indexed.

The hook's work runs inside :func:`~nar_plugin.integrations.boundary.plugin_boundary`: errors of
the user's own call propagate unchanged; an error inside the hook is one warning and the commit
goes ahead untouched; ``NAR_TESTING=true`` re-raises hook errors.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nar_plugin.graph import ArchGraph
from nar_plugin.integrations.boundary import plugin_boundary
from nar_plugin.integrations.hf.card import (
    base_models,
    card_metadata,
    card_with_nar_block,
    nar_card_block,
)
from nar_plugin.integrations.hf.configs import (
    graph_from_repo_config,
    library_of,
    model_type_of,
)
from nar_plugin.integrations.hf.keys import repo_key
from nar_plugin.integrations.hf.weights import check_declared_base, fingerprint_commit
from nar_plugin.utils.deps import require

logger = logging.getLogger(__name__)

__all__ = ["autolog", "maybe_autolog"]

#: where the pushed weights' fingerprint rides from the stamping to the indexing (never stored as metadata)
_FINGERPRINT = "_nar_fingerprint"


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

    Raises:
        MissingDependencyError: ``huggingface_hub`` is not installed.
    """
    hub = require("huggingface_hub", "hf")
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


def _make_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs, ops = _materialise_operations(args, kwargs)
        repo_id = args[0] if args else kwargs.get("repo_id")
        stamped = None
        if ops is not None:
            with plugin_boundary("stamping the model card", consequence="the commit is not changed by nar-plugin",
                                 silent=_PATCH.config.silent):
                stamped = _stamp(self, repo_id, ops, kwargs)
        if stamped is not None:
            new_ops, graph, card = stamped
            args, kwargs = _with_operations(args, kwargs, new_ops)
        result = original(self, *args, **kwargs)  # the user's call: its errors propagate
        if stamped is not None and _PATCH.config.index:
            if hasattr(result, "add_done_callback"):  # run_as_future=True
                result.add_done_callback(lambda f: f.exception() or _index_pushed(repo_id, f.result(), graph, card))
            else:
                _index_pushed(repo_id, result, graph, card)
        return result

    create_commit.__nar_autolog__ = True  # type: ignore[attr-defined]
    return create_commit


def _with_operations(args: tuple[Any, ...], kwargs: dict[str, Any],
                     ops: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with ``operations`` (keyword or second positional) replaced."""
    if "operations" in kwargs:
        return args, {**kwargs, "operations": ops}
    return (args[0], ops, *args[2:]), kwargs


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
        args, kwargs = _with_operations(args, kwargs, ops)
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
    if not isinstance(config, dict) or library_of(config) is None:
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
    meta = {"model_type": model_type_of(config), "library": library_of(config),
            "base_model": base_models(card_metadata(new_text)) or None}
    meta = {k: v for k, v in meta.items() if v is not None}
    fp = fingerprint_commit(ops)  # NAR_HF_READ_WEIGHTS=true only
    if fp is not None:
        from nar_plugin.index.codec import decode_embedding

        if meta.get("base_model"):
            check_declared_base(repo_id, fp, meta["base_model"], decode_embedding(nar_card_block(graph)["embedding"]))
        meta[_FINGERPRINT] = fp
    return out, graph, meta


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

    oid = getattr(result, "oid", None)
    if not oid:
        return
    key = repo_key(repo_id, oid)
    meta = dict(meta)
    fp = meta.pop(_FINGERPRINT, None)
    with plugin_boundary(f"indexing the pushed model {key}", consequence="the commit was made",
                         silent=_PATCH.config.silent):
        index_graph(graph, key, {"repo_id": repo_id, "revision": oid, **meta}, uri=getattr(result, "commit_url", None),
                    source_kind="hf", fingerprint=fp)
        logger.info("indexed pushed model %s", key)
