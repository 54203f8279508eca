"""``nar_plugin.hf``: the public face of the Hugging Face Hub integration.

Importing it is light (``huggingface_hub`` is imported by the functions) and installs nothing;
it re-exports exactly the public names of :mod:`nar_plugin.integrations.hf` (see ``docs/hf.md``):
``index_repo``, ``index_repos``, ``autolog``, ``make_webhook_app``, ``relation_vs_base_model``...

Example:
    >>> import nar_plugin.hf
    >>> key = nar_plugin.hf.index_repo("google-bert/bert-base-uncased")
    >>> nar_plugin.hf.autolog()          # stamp model cards on push_to_hub / upload_folder
"""

from __future__ import annotations

# one list of public names, kept by the integration package (its __all__ bounds the star import)
from nar_plugin.integrations.hf import *  # noqa: F403
from nar_plugin.integrations.hf import __all__  # noqa: F401
