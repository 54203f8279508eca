"""Training the encoder: data, losses, augmentation, the loop (``nar train``)."""
