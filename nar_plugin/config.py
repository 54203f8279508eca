"""Environment-driven settings, read at call time.

Each ``NAR_*`` variable is a typed :class:`EnvVar`; ``.get()`` parses the current environment and
raises :class:`~nar_plugin.errors.ConfigError` naming the variable on a bad value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from nar_plugin.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class EnvVar(Generic[T]):
    """A typed environment variable with a default."""

    name: str
    type: type
    default: T
    choices: tuple[str, ...] | None = None
    doc: str = ""

    def is_set(self) -> bool:
        return self.name in os.environ

    def get(self) -> T:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        raw = raw.strip()
        if self.type is bool:
            low = raw.lower()
            if low in _TRUE:
                return True  # type: ignore[return-value]
            if low in _FALSE:
                return False  # type: ignore[return-value]
            raise ConfigError(f"{self.name} must be a boolean (true/false), found {raw!r}")
        if self.type is int:
            try:
                return int(raw)  # type: ignore[return-value]
            except ValueError:
                raise ConfigError(f"{self.name} must be an integer, found {raw!r}") from None
        if self.type is float:
            try:
                return float(raw)  # type: ignore[return-value]
            except ValueError:
                raise ConfigError(f"{self.name} must be a number, found {raw!r}") from None
        if self.choices is not None and raw.lower() not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, found {raw!r}")
        if self.choices is not None:
            raw = raw.lower()
        return raw  # type: ignore[return-value]


def _default_home() -> str:
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("nar-plugin")))


NAR_HOME = EnvVar("NAR_HOME", str, "", doc="Where the index and caches live (default: user cache dir).")
NAR_AUTOLOG = EnvVar("NAR_AUTOLOG", bool, True, doc="Index every MLflow log_model automatically.")
NAR_HF_AUTOLOG = EnvVar("NAR_HF_AUTOLOG", bool, False, doc="Stamp model cards on HF pushes automatically.")
NAR_DEDUP = EnvVar("NAR_DEDUP", str, "warn", choices=("off", "warn", "tag", "block"), doc="Registry dedup policy.")
NAR_TRUST_PICKLE = EnvVar("NAR_TRUST_PICKLE", bool, False, doc="Allow unpickling logged models to extract graphs.")
NAR_MAX_NODES = EnvVar("NAR_MAX_NODES", int, 50_000, doc="Largest graph (after folding) that is embedded.")
NAR_TESTING = EnvVar("NAR_TESTING", bool, False, doc="Re-raise plugin errors inside hooks (for tests).")
NAR_DEBUG = EnvVar("NAR_DEBUG", bool, False, doc="CLI prints full tracebacks.")
NAR_LOCK_TIMEOUT = EnvVar("NAR_LOCK_TIMEOUT", float, 30.0, doc="Seconds to wait for the index lock.")
NAR_ENCODER_WEIGHTS = EnvVar("NAR_ENCODER_WEIGHTS", str, "", doc="Encoder weights dir/file (default: shipped).")
NAR_WEBHOOK_SECRET = EnvVar("NAR_WEBHOOK_SECRET", str, "", doc="Shared secret of webhook receivers.")
NAR_WEBHOOK_MAX_AGE = EnvVar("NAR_WEBHOOK_MAX_AGE", int, 300, doc="Oldest accepted webhook timestamp, seconds.")

#: Integrations that extend search (query resolvers, result folding), as ``"module:function"``.
#: :mod:`nar_plugin.search.resolvers` imports each by name and calls it the first time it is
#: needed, so that core search never imports an integration (see that module for why).
SEARCH_INTEGRATIONS: tuple[str, ...] = (
    "nar_plugin.integrations.mlflow.resolve:register",
    "nar_plugin.integrations.hf.keys:register",
)


def nar_home() -> Path:
    """The directory holding the index and caches (``NAR_HOME`` or the user cache dir)."""
    raw = NAR_HOME.get() or _default_home()
    return Path(raw).expanduser()
