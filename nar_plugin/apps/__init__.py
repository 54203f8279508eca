"""End-user applications built on the library: ``nar demo`` and ``nar map``."""
