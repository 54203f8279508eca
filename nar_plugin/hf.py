"""``nar_plugin.hf``: the public face of the Hugging Face Hub integration.

Importing it is light (``huggingface_hub`` is imported by the functions) and installs nothing;
see :mod:`nar_plugin.integrations.hf` and ``docs/hf.md``.

Example:
    >>> import nar_plugin.hf
    >>> key = nar_plugin.hf.index_repo("google-bert/bert-base-uncased")
    >>> nar_plugin.hf.autolog()          # stamp model cards on push_to_hub / upload_folder
"""

from __future__ import annotations

from nar_plugin.integrations.hf import (
    HubSnapshot,
    IndexSummary,
    RepoFailure,
    autolog,
    card_with_nar_block,
    classify_webhook,
    fetch_repo,
    graph_from_repo_config,
    index_repo,
    index_repos,
    make_webhook_app,
    maybe_autolog,
    nar_card_block,
    parse_repo_spec,
    relation_vs_base_model,
    repo_key,
)

__all__ = [
    "HubSnapshot",
    "IndexSummary",
    "RepoFailure",
    "autolog",
    "card_with_nar_block",
    "classify_webhook",
    "fetch_repo",
    "graph_from_repo_config",
    "index_repo",
    "index_repos",
    "make_webhook_app",
    "maybe_autolog",
    "nar_card_block",
    "parse_repo_spec",
    "relation_vs_base_model",
    "repo_key",
]
