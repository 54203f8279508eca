"""ArchGraph: the one intermediate representation of a model architecture.

* :mod:`~nar_plugin.graph.vocab` -- the versioned op vocabulary and node attributes;
* :mod:`~nar_plugin.graph.ir` -- :class:`ArchGraph` (structure, WL hash, serialisation, views);
* :mod:`~nar_plugin.graph.canonical` -- the canonical passes (attention, RMSNorm and activation
  fusion, BatchNorm/pad folding, dead code) that make one model one graph on every path;
* :mod:`~nar_plugin.graph.builder` -- :class:`GraphBuilder`, which every extractor lowers into,
  and :func:`canonicalize` for graphs built before;
* :mod:`~nar_plugin.graph.algorithms` -- the one union-find, topological sort, induced subgraph
  and WL refinement of the package.

This package imports nothing above :mod:`nar_plugin.errors` / :mod:`nar_plugin.config` /
:mod:`nar_plugin.utils`; everything else builds on it.
"""

from __future__ import annotations

from nar_plugin.graph.algorithms import (
    UnionFind,
    digest,
    induced_edges,
    topological_order,
    wl_refine,
)
from nar_plugin.graph.builder import GraphBuilder, canonicalize
from nar_plugin.graph.canonical import CANON_VERSION
from nar_plugin.graph.ir import ArchGraph
from nar_plugin.graph.vocab import (
    ATTR_BINS,
    GROUPS_DEPTHWISE,
    GROUPS_GROUPED,
    GROUPS_NONE,
    NO_ATTRS,
    OP_INDEX,
    OPS,
    VOCAB_VERSION,
    NodeAttrs,
    width_bucket,
)

# Deliberate repetition (duplicates reports it): a literal re-export list, which linters and type
# checkers read, necessarily repeats the names of vocab.__all__.
__all__ = [
    "ATTR_BINS",
    "CANON_VERSION",
    "GROUPS_DEPTHWISE",
    "GROUPS_GROUPED",
    "GROUPS_NONE",
    "NO_ATTRS",
    "OPS",
    "OP_INDEX",
    "VOCAB_VERSION",
    "ArchGraph",
    "GraphBuilder",
    "NodeAttrs",
    "UnionFind",
    "canonicalize",
    "digest",
    "induced_edges",
    "topological_order",
    "width_bucket",
    "wl_refine",
]
