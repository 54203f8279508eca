"""The ``nar`` command line."""

from __future__ import annotations

from nar_plugin.cli.main import main

__all__ = ["main"]
