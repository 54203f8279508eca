"""Evaluation: :mod:`.metrics` (retrieval metrics), :mod:`.splits` (by-model / held-out-family),
:mod:`.baselines` (op histogram, WL) and :mod:`.gnn_baselines` (GCN, GAT), :mod:`.runner`
(``nar eval``) and :mod:`.calibrate` (relation thresholds).
"""
