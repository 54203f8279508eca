"""Hugging Face Hub integration: index repos by id, stamp model cards on push, webhook receiver.

Each entry point imports ``huggingface_hub`` only when called:

- :func:`index_repo` / :func:`index_repos` (:mod:`.index`): resolve a revision to a commit sha,
  download ``config.json`` (and ``README.md`` when offline, for ``base_model``) (:mod:`.hub`),
  build the model on the meta device (transformers, or timm for timm repos) (:mod:`.configs`),
  embed and index it under ``hf:<repo_id>@<sha>`` (:mod:`.keys`). Weights are never downloaded.
- :func:`autolog` (:mod:`.push`): wrap ``HfApi.create_commit`` so that a commit that adds a model
  ``config.json`` also writes a ``nar`` block (:mod:`.card`) into the ``README.md`` metadata,
  in the same commit.
- :func:`make_webhook_app` (:mod:`.webhook`): a Starlette app that verifies ``X-Webhook-Secret``
  and indexes every updated model repo at the pushed commit.
"""

from __future__ import annotations

from nar_plugin.integrations.hf.card import (
    card_with_nar_block,
    nar_card_block,
    relation_vs_base_model,
)
from nar_plugin.integrations.hf.configs import graph_from_repo_config
from nar_plugin.integrations.hf.hub import HubSnapshot, fetch_repo
from nar_plugin.integrations.hf.index import (
    IndexSummary,
    RepoFailure,
    index_repo,
    index_repos,
    specs_from_file,
)
from nar_plugin.integrations.hf.keys import parse_repo_spec, repo_key
from nar_plugin.integrations.hf.push import autolog, maybe_autolog
from nar_plugin.integrations.hf.webhook import classify_webhook, make_webhook_app

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
    "specs_from_file",
]
