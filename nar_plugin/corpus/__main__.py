"""``python -m nar_plugin.corpus build|stats ...`` (the same as ``nar corpus ...``)."""

from nar_plugin.corpus.build import main

if __name__ == "__main__":
    main()
