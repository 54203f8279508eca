"""``nar_plugin.hf``: the public face of the Hugging Face Hub integration.

Importing it is light (``huggingface_hub`` is imported by the functions) and installs nothing;
it re-exports exactly the public names of :mod:`nar_plugin.integrations.hf` (see ``docs/hf.md``):
``index_repo``, ``index_repos``, ``autolog``, ``make_webhook_app``, ``relation_vs_base_model``...
The functions that need the Hub client (or the webhook server) check for it first: without the
``hf`` extra they raise :class:`~nar_plugin.errors.MissingDependencyError` with the
``pip install 'nar-plugin[hf]'`` line, never a bare ``ModuleNotFoundError``.

Example:
    >>> import nar_plugin.hf
    >>> key = nar_plugin.hf.index_repo("google-bert/bert-base-uncased")
    >>> nar_plugin.hf.autolog()          # stamp model cards on push_to_hub / upload_folder
"""

from __future__ import annotations

from nar_plugin.integrations import hf as _hf

# one list of public names, kept by the integration package (its __all__ bounds the star import)
from nar_plugin.integrations.hf import *  # noqa: F403
from nar_plugin.integrations.hf import __all__  # noqa: F401
from nar_plugin.utils.deps import requires

_needs_hub = requires("huggingface_hub", extra="hf")
index_repo = _needs_hub(_hf.index_repo)
index_repos = _needs_hub(_hf.index_repos)
fetch_repo = _needs_hub(_hf.fetch_repo)
autolog = _needs_hub(_hf.autolog)
card_with_nar_block = _needs_hub(_hf.card_with_nar_block)
make_webhook_app = requires("starlette", extra="hf")(_hf.make_webhook_app)
