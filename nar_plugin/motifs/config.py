"""The parameters of motif sampling and their one home for defaults.

Every place that samples motifs (the encoder config, ``prepare``, training, ``describe_graph``,
``nar motifs``, the benchmarks) takes its defaults from :class:`MotifConfig`, so changing a
default here changes it everywhere (and changes embeddings: bump the encoder, not this file).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MOTIF_VERSION", "MotifConfig"]

#: Bump when the sampling rules or the pattern key change: motif types, macro graphs and every
#: embedding computed from them change with it.
MOTIF_VERSION = 1


@dataclass(frozen=True)
class MotifConfig:
    """Parameters of :func:`~nar_plugin.motifs.sample_motifs`; the class defaults are THE defaults.

    Attributes:
        steps: rounds of neighbour encoding before BPE (``0`` = op type + attributes only).
        min_count: a pair of segments is merged only while it occurs at least this often, and a
            pattern counts as repeated only with at least this many copies.
        max_size: no motif instance has more than this many nodes.
        glue: merge adjacent non-repeated leftovers into connected glue segments.

    Raises:
        ValueError: ``steps < 0``, ``min_count < 1``, ``max_size < 1`` or one of them is not an
            ``int`` (``bool`` excluded).

    Example:
        >>> MotifConfig().steps, MotifConfig.max_size  # instance or class: the same defaults
        (2, 32)
    """

    steps: int = 2
    min_count: int = 2
    max_size: int = 32
    glue: bool = True

    def __post_init__(self) -> None:
        for name, lowest in (("steps", 0), ("min_count", 1), ("max_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
