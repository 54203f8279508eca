"""Token weights of the structural sketch, learned from labelled training data (sketch version 4).

Why (issue 16, session 6; numbers in docs/benchmarks.md): the sketch of versions 1-3 weighs a
token by how often it occurs, so a network's repeated body outvotes the few nodes that tell its
family. wav2vec 2.0 LARGE (pre-norm, a 7-layer 1-D convolutional front end, a convolutional
position embedding) scored nearer the pre-norm *vision* transformers (hiera, PiT: sketch 0.97)
than wav2vec 2.0 BASE (post-norm, the same front end: 0.78); torchaudio's family MAP@10 was
0.711 while GAT, which pools node features by their maximum, got 1.000. A token that few
training architectures have, and that every member of a family that has it shares, says more
about the family than a common one.

So each token gets a weight, fitted on the training data's family labels::

    weight = idf ** idf_power * consistency ** consistency_power
    idf = log((N + 1) / (max(df, df_floor * N) + 1)) + 1
    consistency = mean over the families having the token of (members having it / members)

* ``df`` counts the training items having the token. The floor keeps one rare token from
  outweighing the rest: a token seen in fewer than 1% of the items counts as seen in 1%.
  Without the floor, the stem convolution of the wiring fixture's wide ResNets (3 -> 128
  channels, a width change no corpus model has) weighed 45x a common token and pulled ResNet
  v1 to v2.
* ``consistency`` is low for a token only some implementations of a family write (one
  library's glue), high for one every member has. It needs labelled re-implementations, which
  is what the cross-library benchmark's libraries give: they are part of the fitting data, and
  the leave-one-library-out protocol fits one table per held-out library without it.
* A token no training item has gets the floor's weight (``unseen``) with consistency 1.

The table is a JSON file next to the encoder weights (``nar-sketch-weights.json``); its SHA-256
is in the encoder config (``sketch_weights``), hence in the encoder version string.

numpy only; no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.graph import ArchGraph

__all__ = ["SKETCH_WEIGHTS_FILE", "TokenRow", "TokenWeights", "fit_token_weights", "load_token_weights",
           "token_row"]

#: File name of the table in a weights directory.
SKETCH_WEIGHTS_FILE = "nar-sketch-weights.json"
_FORMAT = "nar-sketch-weights"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenRow:
    """One training item as the fitting sees it: its group (library or corpus source, what a
    leave-one-out fit drops), family, and the *sets* of node and edge tokens it has."""

    group: str
    family: str
    nodes: frozenset[str]
    edges: frozenset[str]


def token_row(graph: ArchGraph, family: str, group: str, version: int) -> TokenRow:
    """The :class:`TokenRow` of one graph (tokens of sketch ``version``)."""
    from nar_plugin.model.sketch import sketch_tokens

    nodes, edges = sketch_tokens(graph, version)
    return TokenRow(group, family, frozenset(nodes), frozenset(edges))


@dataclass(frozen=True)
class TokenWeights:
    """A fitted table: per-token weights for the node and the edge bag, and the weight of a
    token no training item had."""

    nodes: Mapping[str, float]
    edges: Mapping[str, float]
    unseen: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def node(self, token: str) -> float:
        return self.nodes.get(token, self.unseen)

    def edge(self, token: str) -> float:
        return self.edges.get(token, self.unseen)

    def to_bytes(self) -> bytes:
        """The file's bytes: canonical JSON (sorted keys, weights rounded to 6 decimals), so
        that a refit on the same data writes the same bytes and the same SHA-256."""
        doc = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **dict(self.meta),
               "unseen": round(self.unseen, 6),
               "nodes": {t: round(w, 6) for t, w in sorted(self.nodes.items())},
               "edges": {t: round(w, 6) for t, w in sorted(self.edges.items())}}
        return (json.dumps(doc, indent=0, sort_keys=True) + "\n").encode()

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of :meth:`to_bytes` (serialised once per table)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> Path:
        from nar_plugin.utils.io import atomic_write_bytes

        path = Path(directory) / SKETCH_WEIGHTS_FILE
        atomic_write_bytes(path, self.to_bytes())
        return path


def fit_token_weights(rows: Iterable[TokenRow], *, df_floor: float = 0.01, idf_power: float = 2.0,
                      consistency_power: float = 2.0, exclude: Iterable[str] = (),
                      meta: Mapping[str, Any] | None = None) -> TokenWeights:
    """Fit the table (see the module docstring) on ``rows`` minus the groups in ``exclude``.

    Raises:
        ValueError: no rows left, or a parameter out of range.
    """
    if not 0.0 < df_floor < 1.0 or idf_power < 0 or consistency_power < 0:
        raise ValueError(f"need 0 < df_floor < 1 and non-negative powers, found {df_floor}, {idf_power}, "
                         f"{consistency_power}")
    drop = set(exclude)
    kept = [r for r in rows if r.group not in drop]
    if not kept:
        raise ValueError("no training rows to fit sketch token weights on")
    n = len(kept)
    family_size = Counter(r.family for r in kept)
    floor = df_floor * n

    def weights(kind: str) -> dict[str, float]:
        per_family: dict[str, Counter[str]] = defaultdict(Counter)
        for r in kept:
            for tok in getattr(r, kind):
                per_family[tok][r.family] += 1
        out = {}
        for tok, fams in per_family.items():
            idf = math.log((n + 1) / (max(sum(fams.values()), floor) + 1)) + 1
            consistency = sum(c / family_size[f] for f, c in fams.items()) / len(fams)
            out[tok] = round(idf ** idf_power * consistency ** consistency_power, 6)
        return out

    unseen = round((math.log((n + 1) / (floor + 1)) + 1) ** idf_power, 6)
    info = {"items": n, "families": len(family_size), "groups": sorted({r.group for r in kept}),
            "excluded": sorted(drop), "df_floor": df_floor, "idf_power": idf_power,
            "consistency_power": consistency_power, **dict(meta or {})}
    return TokenWeights(weights("nodes"), weights("edges"), unseen, info)


def load_token_weights(directory: str | os.PathLike[str], sha256: str) -> TokenWeights:
    """Read ``directory``'s table and check it is the one the encoder config names.

    Raises:
        FileNotFoundError: no table there.
        CorruptArtifactError: unreadable, another format, or another SHA-256 than ``sha256``
            (a prefix is enough).
    """
    path = Path(directory) / SKETCH_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"sketch token weights {path} not found (written by `nar train`)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not sha256 or not digest.startswith(sha256):
        raise CorruptArtifactError(f"{path.name} has SHA-256 {digest[:16]}..., the encoder config expects "
                                   f"{sha256[:16]}... (table and encoder come from different runs)", str(path))
    try:
        doc = json.loads(data)
        if doc.get("format") != _FORMAT or doc.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"format {doc.get('format')!r} v{doc.get('format_version')}")
        nodes = {str(k): float(v) for k, v in doc.pop("nodes").items()}
        edges = {str(k): float(v) for k, v in doc.pop("edges").items()}
        unseen = float(doc.pop("unseen"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptArtifactError(f"bad sketch token weights {path}: {e}", str(path)) from e
    return TokenWeights(nodes, edges, unseen, doc)
