"""Build options of a corpus (one frozen dataclass, passed everywhere; no globals)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CorpusOptions", "SOURCES"]

#: Every source ``build_corpus`` knows, in default build order.
SOURCES: tuple[str, ...] = ("timm", "transformers", "torchvision", "nas")


@dataclass(frozen=True)
class CorpusOptions:
    """What a corpus build covers and how.

    Attributes:
        limit: at most this many *base* entries per source (timm names, transformers model
            types, torchvision names, NAS families per search space); ``None`` = all.
            Transformers' scaled variants and NAS family members come on top.
        names: explicit base entries per source (``{"timm": ["resnet18"]}``); a listed source
            builds only those, before ``limit`` is applied.
        timeout_s: wall-clock limit per item; an item over it is recorded as ``timeout``.
        hf_variants: add depth/width variants of every transformers model type that builds.
        hf_max_layers: cap of the "2x default" depth variant.
        nas_darts_families / nas_nb201_families: families sampled per search space.
        nas_members: networks per NAS family (depth/width/reduction-cell variants).
        seed: seed of the NAS genotype sampler (keys are content-addressed, so two seeds
            never give one key two meanings).
        retry_failed: rebuild items recorded as ``error`` (timeouts included) in the cache.
    """

    limit: int | None = None
    names: Mapping[str, Sequence[str]] = field(default_factory=dict)
    timeout_s: float = 120.0
    hf_variants: bool = True
    hf_max_layers: int = 24
    nas_darts_families: int = 400
    nas_nb201_families: int = 400
    nas_members: int = 5
    seed: int = 0
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, found {self.limit}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, found {self.timeout_s}")
        if self.nas_members < 1:
            raise ValueError(f"nas_members must be >= 1, found {self.nas_members}")
        unknown = set(self.names) - set(SOURCES)
        if unknown:
            raise ValueError(f"names has unknown sources {sorted(unknown)}; expected some of {SOURCES}")

    def select(self, source: str, available: Sequence[str]) -> list[str]:
        """The base entries of ``source`` this build covers, in a deterministic order."""
        chosen = list(self.names[source]) if source in self.names else list(available)
        return chosen if self.limit is None else chosen[: self.limit]
