"""Training the encoder (``nar train``).

:mod:`.data` (corpus items, selection, split, family-packed batches), :mod:`.losses` (SupCon,
motif InfoNCE), :mod:`.augment` (style augmentation), :mod:`.config` (``TrainConfig``) and
:mod:`.loop` (``train``, ``train_command``).
"""
