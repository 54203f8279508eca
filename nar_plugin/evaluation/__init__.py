"""Retrieval metrics, splits, baselines, the ``nar eval`` runner and threshold calibration."""
