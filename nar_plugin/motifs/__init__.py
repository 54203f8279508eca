"""Motif sampling: partition an :class:`~nar_plugin.graph.ArchGraph` into repeated motifs.

The project's precise version of the paper's motif sampling (``docs/motifs.md`` gives the
reasoning and the measurements), one step per module:

1. :mod:`~nar_plugin.motifs.labels` -- **neighbour encoding**: ``steps`` rounds of
   Weisfeiler-Lehman relabelling over in- and out-neighbours; ``label_s(v)`` encodes the
   radius-``s`` receptive field of ``v``.
2. :mod:`~nar_plugin.motifs.bpe` -- **BPE over the topological sequence**: merge the most
   frequent adjacent pair of segment tokens while it occurs ``>= min_count`` times, only where
   the two segments are connected, never beyond ``max_size`` nodes and never ``X X``; then
   resume one WL round coarser, down to round 0, where a merge must extend a multi-node segment.
3. :mod:`~nar_plugin.motifs.tiling` -- **re-tiling, phase and glue**: repeated patterns claim
   every window that is exactly their pattern, runs of copies get a canonical phase, and
   non-repeated leftovers become connected glue segments.
4. :mod:`~nar_plugin.motifs.patterns` -- **types**: an instance's type is its pattern (induced
   subgraph with node labels), keyed by a node-order-invariant WL hash (:func:`motif_key`).
5. :mod:`~nar_plugin.motifs.sample` -- :func:`sample_motifs` and its result :class:`MotifGraph`
   (instances, types, macro edges, context graphs).

:mod:`~nar_plugin.motifs.config` holds :class:`MotifConfig`, the one home of the defaults
(``steps=2, min_count=2, max_size=32``), and :data:`MOTIF_VERSION`.

Complexity: ``O((N + E) * steps)`` for the labels, ``O(steps * N * max_size * log deg)`` for BPE
(pair counts maintained incrementally in a lazy max-heap over a linked list of segments; a merge
touches only its two neighbours), ``O(N * max_size * deg)`` for re-tiling and glue. A 100k-node
graph takes a few seconds (docs/motifs.md).

Example:
    >>> mg = sample_motifs(graph, steps=2)
    >>> mg.num_instances, mg.reduction_ratio
"""

from __future__ import annotations

from nar_plugin.motifs.config import MOTIF_VERSION, MotifConfig
from nar_plugin.motifs.patterns import motif_key
from nar_plugin.motifs.sample import MotifGraph, sample_motifs

__all__ = [
    "MOTIF_VERSION",
    "MotifConfig",
    "MotifGraph",
    "motif_key",
    "sample_motifs",
]
