"""Integrations with model hubs and trackers (``mlflow``, ``hf``).

Importing this package does nothing: each submodule imports its third-party library when one of
its functions is called, and no hook is installed until you ask for it.
"""
