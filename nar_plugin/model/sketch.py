"""The structural sketch: a fixed, training-free part of the shipped embedding.

Why it exists (issue 16, docs/cross-library.md): on model code from libraries the encoder never
saw, the learned vector alone scored *below* a plain op histogram (family MAP@10 0.684 vs
0.705 over ten libraries). The shipped embedding therefore carries a floor: the learned vector
plus this sketch, each unit norm and weighted (:class:`~nar_plugin.model.encoder.EncoderConfig`
``sketch_dim`` / ``sketch_weight``), so a cosine between two embeddings is
``(1 - w) * cos_learned + w * cos_sketch``.

The sketch is two bags of tokens, hashed into ``dim / 2`` buckets each:

* **nodes**: one token per node: the op, plus for convolutions the kernel, stride, group kind
  and the *width change* (``log2(out / in)`` bucket difference), for linears the width change,
  for pools the kernel and stride. No absolute widths: they split families whose members
  differ in width and tell two implementations of one network apart by their stem width.
* **edges**: one token per data-flow edge, ``source token > target token``, with the
  convolution/pool tokens *without* the width change: the local wiring (conv -> bn -> relu,
  attention -> add) that a histogram of nodes cannot see.

Version 2 (issue 16, session 4) writes ``relu6`` as ``relu``: libraries swap the two in one
network (pytorchcv's MobileNet v1 uses ReLU where timm and transformers use ReLU6, and every
edge token differed: sketch cosine 0.28 for the same network).

Version 3 (issue 16, session 5) marks, in the edge bag, whether the source of an edge that
leaves a residual ``add`` or a norm feeds one consumer or several (``add^1`` / ``add^2``). That
fan-out is where the block designs of one op mix differ: a pre-norm block's input feeds its
norm and its residual add, a parallel block's (GPT-J, ViT-22B) feeds both branches' norms and
the add, a post-norm block's norm feeds the next block's layers and its residual. Node and
plain edge tokens are the same for the three (equal op counts, equal op pairs), so version 2
scored the wiring fixture's pre-norm and parallel transformers as one family. Only adds and
norms are marked: marking every source also split re-implementations whose glue differs
(cross-library family MAP@10 -0.017, numbers in docs/benchmarks.md).

Version 4 (issue 16, session 6) weighs each token by a table fitted on labelled training data
(:mod:`nar_plugin.model.token_weights`: rare tokens that a family's members share count more)
and adds a back-off token per attributed node and edge (``~conv``, ``~relu>conv_transpose``):
two implementations that write one upsampling with kernel 3 and kernel 4 share the back-off
where their full tokens differ, which matters once a rare token weighs more.

A config's ``sketch_version`` picks the definition, so weights shipped with an older version
keep embedding as they did.

Each bag is counted, divided by its total (graph size does not matter), square-rooted (a
Hellinger-style damping: frequent glue ops do not drown rare, telling ones) and hashed with
BLAKE2b (stable across processes and platforms, unlike Python's ``hash``). Measured on the
cross-library benchmark with the shipped encoder of the time (docs/cross-library.md): op
histogram 0.705, this sketch alone 0.768.

numpy only; no torch.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from nar_plugin.graph import ArchGraph

if TYPE_CHECKING:
    from nar_plugin.model.token_weights import TokenWeights

__all__ = ["SKETCH_VERSION", "SKETCH_VERSIONS", "compose", "edge_tokens", "node_tokens", "sketch_tokens",
           "structural_sketch"]

#: The token definition new encoders use. Add a version (never change one) when the tokens or the
#: hashing change: the encoder config records it (``sketch_version``) and its hash, so the
#: version string of every embedding says which sketch made it.
SKETCH_VERSION = 4
#: Definitions this release can compute.
SKETCH_VERSIONS = (1, 2, 3, 4)
#: Ops a version writes as another (2 and later: ReLU6 is a ReLU).
_RELU6_IS_RELU = {"relu6": "relu"}
_ALIASES: dict[int, dict[str, str]] = {1: {}, 2: _RELU6_IS_RELU, 3: _RELU6_IS_RELU, 4: _RELU6_IS_RELU}
#: Sources whose fan-out an edge token records (version 3): the residual stream's adds and norms.
_FAN_OUT_OPS = frozenset({"add", "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"})

_CONVS = frozenset({"conv", "conv_transpose"})
_POOLS = frozenset({"max_pool", "avg_pool"})


def node_tokens(graph: ArchGraph, widths: bool = True, version: int = SKETCH_VERSION) -> list[str]:
    """One token per node (see the module docstring); ``widths=False`` leaves out the width
    change (the edge bag's tokens); ``version``: the token definition."""
    alias = _ALIASES[version]
    out = []
    for op, (k, s, g, wi, wo) in zip(graph.ops, graph.attrs):
        op = alias.get(op, op)
        delta = f"/d{wo - wi}" if widths and wi and wo else ("/d?" if widths else "")
        if op in _CONVS:
            out.append(f"{op}/k{k}/s{s}/g{g}{delta}")
        elif op == "linear":
            out.append(f"linear{delta}")
        elif op in _POOLS:
            out.append(f"{op}/k{k}/s{s}")
        else:
            out.append(op)
    return out


@lru_cache(maxsize=65536)
def _bucket(token: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % buckets


def _hashed_bag(counts: Counter[str], buckets: int, weight: Callable[[str], float] | None = None) -> np.ndarray:
    vec = np.zeros(buckets, dtype=np.float64)
    total = sum(counts.values())
    if not total:
        return vec
    for tok, n in counts.items():
        vec[_bucket(tok, buckets)] += np.sqrt(n / total) * (weight(tok) if weight is not None else 1.0)
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def edge_tokens(graph: ArchGraph, version: int = SKETCH_VERSION) -> list[str]:
    """One token per data-flow edge, ``source > target`` (node tokens without the width change);
    from version 3 a source in :data:`_FAN_OUT_OPS` says whether it feeds one consumer (``^1``)
    or several (``^2``)."""
    plain = node_tokens(graph, widths=False, version=version)
    if version >= 3:
        fan_out = [0] * len(plain)
        for a, _ in graph.edges:
            fan_out[a] += 1
        plain = [f"{tok}^{min(fan_out[i], 2)}" if op in _FAN_OUT_OPS else tok
                 for i, (tok, op) in enumerate(zip(plain, graph.ops))]
    return [f"{plain[a]}>{plain[b]}" for a, b in graph.edges]


def _coarse(token: str) -> str:
    return token.split("/", 1)[0]


def sketch_tokens(graph: ArchGraph, version: int = SKETCH_VERSION) -> tuple[list[str], list[str]]:
    """The node and edge tokens of ``version``; from version 4 each attributed token is followed
    by its back-off (``~`` and the ops alone)."""
    nodes, edges = node_tokens(graph, version=version), edge_tokens(graph, version=version)
    if version >= 4:
        nodes += ["~" + _coarse(t) for t in nodes if "/" in t]
        edges += ["~" + ">".join(_coarse(x) for x in t.split(">")) for t in edges if "/" in t]
    return nodes, edges


def structural_sketch(graph: ArchGraph, dim: int, version: int = SKETCH_VERSION,
                      weights: TokenWeights | None = None) -> np.ndarray:
    """The sketch of one graph: float64 ``(dim,)``, unit norm (zeros for an empty graph);
    ``version``: the token definition (:data:`SKETCH_VERSIONS`); ``weights``: the token table
    of version 4 and later (``None``: every token weighs 1; an encoder's sketch always has its
    table, see :class:`~nar_plugin.model.encoder.EncoderConfig` ``sketch_weights``).

    Raises:
        ValueError: ``dim`` is not a positive even number, or ``version`` is unknown.
    """
    if version not in _ALIASES:
        raise ValueError(f"sketch version must be one of {SKETCH_VERSIONS}, found {version}")
    if dim <= 0 or dim % 2:
        raise ValueError(f"sketch dim must be a positive even number, found {dim}")
    half = dim // 2
    nodes, edges = sketch_tokens(graph, version)
    weighted = weights is not None and version >= 4
    vec = np.concatenate([_hashed_bag(Counter(nodes), half, weights.node if weighted else None),  # type: ignore[union-attr]
                          _hashed_bag(Counter(edges), half, weights.edge if weighted else None)])  # type: ignore[union-attr]
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def compose(learned: np.ndarray, graphs: Sequence[ArchGraph], sketch_dim: int, sketch_weight: float,
            sketch_version: int = SKETCH_VERSION, weights: TokenWeights | None = None) -> np.ndarray:
    """The shipped embedding: ``[sqrt(1 - w) * learned, sqrt(w) * sketch]``, rows unit norm.

    Args:
        learned: ``(N, out_dim)`` encoder outputs (unit-norm rows).
        graphs: the ``N`` graphs they were computed from.
        sketch_dim: sketch width (0: ``learned`` is returned unchanged).
        sketch_weight: ``w``.
        sketch_version: the sketch's token definition (the encoder config's).
        weights: its token table (version 4 and later).

    Returns:
        ``(N, out_dim + sketch_dim)`` float32.
    """
    learned = np.asarray(learned, dtype=np.float64)
    if not sketch_dim:
        return learned.astype(np.float32)
    if len(graphs) != learned.shape[0]:
        raise ValueError(f"{learned.shape[0]} embeddings for {len(graphs)} graphs")
    sk = np.stack([structural_sketch(g, sketch_dim, sketch_version, weights) for g in graphs]) if len(graphs) else \
        np.zeros((0, sketch_dim))
    out = np.hstack([np.sqrt(1.0 - sketch_weight) * learned, np.sqrt(sketch_weight) * sk])
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)
