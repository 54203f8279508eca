"""``python -m nar_plugin.corpus.crosslib {install,manifest,build,coverage}``."""

from __future__ import annotations

import sys

from nar_plugin.corpus.crosslib.cli import main

if __name__ == "__main__":
    sys.exit(main())
