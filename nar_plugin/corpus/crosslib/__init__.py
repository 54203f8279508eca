"""The cross-library benchmark's data: the same architectures written by different libraries.

* :mod:`.install` -- pinned third-party model libraries (pytorchcv, efficientnet-pytorch,
  pretrainedmodels, open_clip, vit-pytorch, segmentation-models-pytorch), installed ``--no-deps``
  into a cache folder outside the venv and put on the path only for the build.
* :mod:`.families` -- name -> (canonical family, fine label) rules per library.
* :mod:`.libraries` -- which models each library contributes and how one is built on meta.
* :mod:`.manifest` -- the committed model list ``corpus/cross_library/manifest.json``.
* :mod:`.build` / :mod:`.worker` -- graph extraction in a worker process (per-model timeout),
  stored in ``corpus/cross_library/graphs/`` with :class:`~nar_plugin.corpus.store.CorpusStore`.
* :mod:`.dataset` -- :func:`load_cross_library`: the built items for evaluation.

The protocol that evaluates on it is :mod:`nar_plugin.evaluation.cross_library`; see
``docs/cross-library.md``. Command line: ``nar corpus crosslib --help``.
"""

from __future__ import annotations

from nar_plugin.corpus.crosslib.dataset import CrossLibItem, identical_network_labels, load_cross_library
from nar_plugin.corpus.crosslib.libraries import (
           LIBRARIES,
           TRAINING_LIBRARIES,
           Candidate,
)
from nar_plugin.corpus.crosslib.manifest import default_dir, load_manifest

__all__ = ["LIBRARIES", "TRAINING_LIBRARIES", "Candidate", "CrossLibItem", "default_dir", "identical_network_labels", "load_cross_library",
           "load_manifest"]
