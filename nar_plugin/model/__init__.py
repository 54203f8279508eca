"""The NAR encoder.

:mod:`.features` (graphs -> index tensors: ``prepare``, ``collate``), :mod:`.layers`
(direction-aware message passing), :mod:`.encoder` (``EncoderConfig``, ``NAREncoder``),
:mod:`.weights` (the weights file format and its version checks) and :mod:`.inference`
(``embed``, ``embed_many``, ``encoder_version``). Nothing is imported here, so that importing
a light submodule (``weights``, ``inference``) does not import torch.
"""
