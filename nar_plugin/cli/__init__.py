"""The ``nar`` command line (click): :func:`main` runs it and returns the exit code.

Modules: :mod:`~nar_plugin.cli.main` (root group, error table), :mod:`~nar_plugin.cli.options`
and :mod:`~nar_plugin.cli.output` (shared ``--json`` and friends, the output helper), and one
module per job: ``model`` (graph, motifs, embed), ``search`` (similar, dedup), ``index`` and
``hf`` (``nar index ...``), ``serve``, ``apps`` (demo, map), ``training`` (corpus, train, eval).
Importing it loads click only; each command imports what it needs when it runs.
"""

from __future__ import annotations

from nar_plugin.cli.main import main

__all__ = ["main"]
