"""``python -m nar_plugin.cli ...``: the same as ``nar ...``."""

from __future__ import annotations

import sys

from nar_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
