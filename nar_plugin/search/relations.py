"""Relations between a query and a match, strongest first, and the thresholds between them.

- ``same-weights``: every tensor byte-identical (equal weight-fingerprint hashes): the same
  trained model, whatever its name;
- ``fine-tuned-from``: one was fine-tuned from the other: its weights are strongly correlated
  with the other's (:mod:`nar_plugin.lineage`); which one is the parent is ``Match.lineage``;
- ``same-architecture``: same ``graph_hash``, weights unrelated or unknown (a retrain);
- ``near-duplicate``: the graphs are the same network (resnet50 in two libraries, with any
  classifier head; not resnet50 vs resnet101d or vgg16_bn) by the strongest evidence both
  descriptions carry (:func:`near_duplicate_evidence`, :mod:`nar_plugin.evaluation.fine_structure`):
  their parameter shapes agree up to a head and the cosine is at least
  ``Thresholds.near_duplicate_shapes`` (``related`` unless calibrated otherwise); else (entries
  indexed before parameter shapes were recorded) cosine >= ``Thresholds.near_duplicate`` and fine
  similarity (node labels with absolute widths) >= ``Thresholds.near_duplicate_fine``; entries
  without a fine signature fall back to op counts within ``NEAR_STRUCTURE``;
- ``related``: cosine >= ``Thresholds.related`` (calibrated as "same family");
- ``unrelated``: anything else.

The first two need weight fingerprints on both sides; without them the relation is decided by
the architecture alone. Old names still read: ``identical`` is ``same-architecture``
(:func:`normalize_relation`). Scores are cosine similarities of unit embeddings: **larger is closer**.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.evaluation.fine_structure import (
    NEAR_FINE,
    NEAR_STRUCTURE,
    PROMOTE_MIN,
    PROMOTE_SHAPES,
    near_evidence,
    structure_near,
)
from nar_plugin.model.weights import WEIGHTS_DIR

logger = logging.getLogger(__name__)

__all__ = [
    "DUPLICATE_RELATIONS",
    "LEGACY_RELATIONS",
    "NEAR_STRUCTURE",
    "RELATIONS",
    "WEIGHT_RELATIONS",
    "Thresholds",
    "at_least",
    "load_thresholds",
    "near_duplicate_evidence",
    "normalize_relation",
    "relation_for",
    "structurally_near",
]

RELATIONS = ("same-weights", "fine-tuned-from", "same-architecture", "near-duplicate", "related", "unrelated")
#: relations only weight fingerprints can show
WEIGHT_RELATIONS = RELATIONS[:2]
#: the relations of an architecture duplicate (``check_duplicate``): the same or nearly the same graph
DUPLICATE_RELATIONS = RELATIONS[:4]
#: names earlier releases wrote (tags, JSON output) -> today's
LEGACY_RELATIONS = {"identical": "same-architecture"}
_THRESHOLDS_FILE = WEIGHTS_DIR / "thresholds.json"


@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds (larger = closer) separating relations.

    Attributes:
        near_duplicate: at or above (with the structural check): near-duplicate.
        related: at or above: related (same family).
        source: where the values come from (``defaults`` or the calibration file's name).
        near_duplicate_fine: least fine similarity of a near-duplicate (:func:`structurally_near`).
        promote_fine: least fine similarity of the shortlisted hit ``find_similar`` moves first.
        promote_shapes: weight of the parameter-shape similarity in the score that picks it
            (:func:`~nar_plugin.evaluation.fine_structure.promote_score`).
        near_duplicate_shapes: least cosine of a near-duplicate whose parameter shapes agree
            (:func:`~nar_plugin.evaluation.fine_structure.shapes_near`); ``None``: ``related``.
    """

    near_duplicate: float = 0.95
    related: float = 0.80
    source: str = "defaults"
    near_duplicate_fine: float = NEAR_FINE
    promote_fine: float = PROMOTE_MIN
    near_duplicate_shapes: float | None = None
    promote_shapes: float = PROMOTE_SHAPES

    @property
    def shapes_floor(self) -> float:
        """The cosine a near-duplicate by parameter shapes needs."""
        return self.related if self.near_duplicate_shapes is None else self.near_duplicate_shapes


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Thresholds calibrated on the corpus (``weights/thresholds.json``) for the loaded
    encoder, else the defaults (with a warning when the file belongs to another encoder)."""
    from nar_plugin.evaluation.calibrate import read_thresholds
    from nar_plugin.model.inference import encoder_version

    p = Path(path) if path else _THRESHOLDS_FILE
    if not p.is_file():
        return Thresholds()
    try:
        data = read_thresholds(p)
    except CorruptArtifactError as e:
        logger.warning("%s; using default thresholds (recalibrate with `nar train --calibrate-only`)", e)
        return Thresholds()
    if data.get("encoder") and data["encoder"] != encoder_version():
        logger.warning("%s was calibrated for encoder %s, not %s; using default thresholds",
                       p, data["encoder"], encoder_version())
        return Thresholds()
    return Thresholds(float(data["near_duplicate"]), float(data["related"]), source=str(p.name),
                      near_duplicate_fine=float(data.get("near_duplicate_fine", NEAR_FINE)),
                      promote_fine=float(data.get("promote_fine", PROMOTE_MIN)),
                      near_duplicate_shapes=(float(data["near_duplicate_shapes"])
                                             if data.get("near_duplicate_shapes") is not None else None),
                      promote_shapes=float(data.get("promote_shapes", PROMOTE_SHAPES)))


def normalize_relation(name: str) -> str:
    """Today's name of a relation (``identical`` -> ``same-architecture``); others unchanged."""
    return LEGACY_RELATIONS.get(name, name)


#: Are two graphs nearly the same network? Parameter shapes equal up to a head when both record
#: them; else fine similarity (node labels with absolute widths) >= ``fine_min``; else op counts
#: overlapping >= :data:`NEAR_STRUCTURE`; ``None`` when nothing can be compared (the embedding
#: alone decides). The search layer's name for
#: :func:`~nar_plugin.evaluation.fine_structure.structure_near`; the relation also needs the
#: cosine floor of :func:`near_duplicate_evidence`.
structurally_near = structure_near


def near_duplicate_evidence(q: dict[str, Any] | None, m: dict[str, Any] | None,
                            th: Thresholds) -> tuple[bool | None, float]:
    """``(near, floor)`` for two descriptions: the structural verdict
    (:func:`~nar_plugin.evaluation.fine_structure.structure_check`; ``None``: no evidence) and the
    cosine a near-duplicate needs on that evidence: ``th.shapes_floor`` when parameter shapes
    decided (exact evidence), ``th.near_duplicate`` otherwise. Pass both to :func:`relation_for`."""
    return near_evidence(q, m, cosine_floor=th.near_duplicate, shapes_floor=th.shapes_floor,
                         fine_min=th.near_duplicate_fine)


def relation_for(score: float, same_hash: bool, th: Thresholds, *, weights: str | None = None,
                 near: bool | None = None, near_floor: float | None = None) -> str:
    """The relation implied by a cosine ``score`` (larger = closer), hash equality, the weight
    relation (``same-weights`` / ``fine-tuned-from`` / ``None``) and the structural check
    (``near``: :func:`structurally_near`; ``None``: not made, the cosine decides; ``near_floor``:
    the cosine a near-duplicate needs, ``th.near_duplicate`` when ``None``; both from
    :func:`near_duplicate_evidence`)."""
    if weights in WEIGHT_RELATIONS:
        return weights
    if same_hash:
        return "same-architecture"
    floor = th.near_duplicate if near_floor is None else near_floor
    if score >= floor and near is not False:
        return "near-duplicate"
    if score >= th.related:
        return "related"
    return "unrelated"


def at_least(relation: str | None) -> tuple[str, ...]:
    """The relations at least as strong as ``relation`` (all of them for ``None``).

    Raises:
        ValueError: ``relation`` is not one of :data:`RELATIONS` (or a legacy name).
    """
    if relation is None:
        return RELATIONS
    relation = normalize_relation(relation)
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, found {relation!r}")
    return RELATIONS[: RELATIONS.index(relation) + 1]
