"""Reading the Hub: resolve a revision to a commit and fetch ``config.json`` (and card metadata)
of a model repo, online or from the local Hub cache. Weights are never downloaded."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from nar_plugin.errors import CorruptArtifactError, KeyNotFoundError
from nar_plugin.integrations.hf.card import base_models
from nar_plugin.integrations.hf.configs import library_of, model_type_of
from nar_plugin.integrations.hf.keys import SHA_RE
from nar_plugin.utils.deps import require

logger = logging.getLogger(__name__)

__all__ = ["HubSnapshot", "fetch_repo", "library_kwargs", "tree_url"]


def library_kwargs() -> dict[str, str]:
    """``library_name`` / ``library_version`` for every Hub client call (the Hub's user agent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        # the installed distribution's version (``nar_plugin.__version__`` is the front door's, which
        # modules inside the package do not import)
        ours = version("nar-plugin")
    except PackageNotFoundError:  # a source checkout that is not installed
        ours = "unknown"
    return {"library_name": "nar-plugin", "library_version": ours}


def tree_url(repo_id: str, sha: str) -> str:
    """The Hub page of a repo at a commit."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo_id}/tree/{sha}"


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
        return base_models(self.card)

    @property
    def model_type(self) -> str | None:
        return model_type_of(self.config)


class _Fetched(NamedTuple):
    """What one way of reading a repo (online / cache) found, before ``config.json`` is parsed."""

    sha: str
    config_path: str
    card: dict[str, Any]
    pipeline_tag: str | None
    library: str | None
    files: tuple[str, ...]


def fetch_repo(repo_id: str, revision: str | None = None, token: str | bool | None = None,
               cache_dir: str | Path | None = None) -> HubSnapshot:
    """Resolve ``revision`` to a commit and read ``config.json`` (and the card metadata).

    Online, ``HfApi.model_info`` gives the sha, pipeline tag, library and card metadata, then
    ``config.json`` is downloaded at that sha. Offline (``HF_HUB_OFFLINE=1``, or the Hub cannot
    be reached), the Hub cache answers: ``refs/<revision>`` names the sha, ``snapshots/<sha>/`` holds the files, and the
    card metadata comes from a cached ``README.md`` if there is one.

    Raises:
        MissingDependencyError: ``huggingface_hub`` is not installed.
        KeyNotFoundError: unknown repo, revision or no ``config.json`` (or not cached offline).
        CorruptArtifactError: ``config.json`` is not a JSON object.
    """
    hub = require("huggingface_hub", "hf")
    from huggingface_hub import errors as hf_errors

    online = not _offline()
    try:
        found = _fetch_online(hub, repo_id, revision, token, cache_dir) if online else None
        if found is None:
            online = False
            found = _fetch_cached(hub, repo_id, revision, token, cache_dir)
    except hf_errors.GatedRepoError as e:
        raise KeyNotFoundError(f"{repo_id} is gated: accept its terms and pass a token ({e})") from e
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.EntryNotFoundError) as e:
        where = "on the Hub" if online else "in the offline cache"
        raise KeyNotFoundError(f"{repo_id}@{revision or 'main'}: no config.json {where} "
                               f"({type(e).__name__})") from e
    config = _load_config(found.config_path, f"{repo_id}@{found.sha}")
    card = dict(found.card)
    return HubSnapshot(repo_id, found.sha, config, card, found.pipeline_tag or card.get("pipeline_tag"),
                       found.library or card.get("library_name") or library_of(config), found.files)


def _fetch_online(hub: Any, repo_id: str, revision: str | None, token: str | bool | None,
                  cache_dir: str | Path | None) -> _Fetched | None:
    """Ask the Hub API, then download ``config.json`` at the resolved sha; ``None``: Hub unreachable."""
    try:
        info = hub.HfApi(**library_kwargs()).model_info(repo_id, revision=revision, token=token)
    except Exception as e:  # noqa: BLE001 - only "unreachable" is handled; the rest is re-raised
        if not _is_connection_error(e):
            raise
        # like hf_hub_download: an unreachable Hub falls back to the local cache
        logger.info("Hub unreachable (%s: %s); reading %s from the local cache", type(e).__name__, e, repo_id)
        return None
    if not info.sha:
        raise KeyNotFoundError(f"the Hub returned no commit sha for {repo_id}@{revision or 'main'}")
    cfg_path = _download(hub, repo_id, "config.json", info.sha, token, cache_dir)
    card = info.card_data.to_dict() if info.card_data is not None else {}
    return _Fetched(info.sha, cfg_path, card, info.pipeline_tag, info.library_name, ("config.json",))


def _fetch_cached(hub: Any, repo_id: str, revision: str | None, token: str | bool | None,
                  cache_dir: str | Path | None) -> _Fetched:
    """Read the Hub cache only: ``config.json`` of the revision and, when cached, ``README.md``."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.repocard import metadata_load

    cfg_path = _download(hub, repo_id, "config.json", revision, token, cache_dir, local_only=True)
    sha = _sha_from_snapshot_path(cfg_path)
    try:
        readme = _download(hub, repo_id, "README.md", sha, token, cache_dir, local_only=True)
    except hf_errors.EntryNotFoundError:  # LocalEntryNotFoundError too: no cached card
        return _Fetched(sha, cfg_path, {}, None, None, ("config.json",))
    return _Fetched(sha, cfg_path, metadata_load(readme) or {}, None, None, ("config.json", "README.md"))


def _load_config(path: str, where: str) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptArtifactError(f"config.json of {where} does not parse: {e}", path) from e
    if not isinstance(config, dict):
        raise CorruptArtifactError(f"config.json of {where} holds {type(config).__name__}, "
                                   "expected a JSON object", path)
    return config


def _offline() -> bool:
    from huggingface_hub import constants

    fn = getattr(constants, "is_offline_mode", None)
    return bool(fn() if fn else constants.HF_HUB_OFFLINE)


def _download(hub: Any, repo_id: str, filename: str, revision: str | None, token: str | bool | None,
              cache_dir: str | Path | None, local_only: bool = False) -> str:
    # through the module attribute, so that a patched ``huggingface_hub.hf_hub_download`` is used
    return hub.hf_hub_download(repo_id, filename, revision=revision, token=token, cache_dir=cache_dir,
                               local_files_only=local_only, **library_kwargs())


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
        if i + 1 < len(parts) and SHA_RE.fullmatch(parts[i + 1]):
            return parts[i + 1]
    raise KeyNotFoundError(f"cannot tell the commit of {path} (not in a Hub cache snapshot)")
