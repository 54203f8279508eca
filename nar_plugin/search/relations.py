"""Relations between a query and a match, strongest first, and the thresholds between them.

- ``identical``: same ``graph_hash`` (the same architecture, weights aside);
- ``near-duplicate``: cosine >= ``Thresholds.near_duplicate``;
- ``related``: cosine >= ``Thresholds.related`` (calibrated as "same family");
- ``unrelated``: anything else.

Scores are cosine similarities of unit embeddings: **larger is closer**.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nar_plugin.errors import CorruptArtifactError

logger = logging.getLogger(__name__)

__all__ = ["DUPLICATE_RELATIONS", "RELATIONS", "Thresholds", "at_least", "load_thresholds", "relation_for"]

RELATIONS = ("identical", "near-duplicate", "related", "unrelated")
#: the relations that make a duplicate (registry dedup, ``check_duplicate``)
DUPLICATE_RELATIONS = RELATIONS[:2]
_THRESHOLDS_FILE = Path(__file__).resolve().parents[1] / "weights" / "thresholds.json"


@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds (larger = closer) separating relations.

    Attributes:
        near_duplicate: at or above: near-duplicate (e.g. a depth/width variant of one model).
        related: at or above: related (same family).
        source: where the values come from (``defaults`` or the calibration file's name).
    """

    near_duplicate: float = 0.95
    related: float = 0.80
    source: str = "defaults"


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
    return Thresholds(float(data["near_duplicate"]), float(data["related"]), source=str(p.name))


def relation_for(score: float, same_hash: bool, th: Thresholds) -> str:
    """The relation implied by a cosine ``score`` (larger = closer) and hash equality."""
    if same_hash:
        return "identical"
    if score >= th.near_duplicate:
        return "near-duplicate"
    if score >= th.related:
        return "related"
    return "unrelated"


def at_least(relation: str | None) -> tuple[str, ...]:
    """The relations at least as strong as ``relation`` (all of them for ``None``).

    Raises:
        ValueError: ``relation`` is not one of :data:`RELATIONS`.
    """
    if relation is None:
        return RELATIONS
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, found {relation!r}")
    return RELATIONS[: RELATIONS.index(relation) + 1]
