"""MLflow integration: log_model hook, registry dedup, sync from tracking tags, webhook receiver.

Importing this package imports nothing from MLflow.
"""
