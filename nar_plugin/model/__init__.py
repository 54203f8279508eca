"""The NAR encoder: features, layers, weights format and inference (``embed``)."""
