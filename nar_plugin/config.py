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
NAR_TRACKING_TIMEOUT = EnvVar("NAR_TRACKING_TIMEOUT", float, 5.0,
                              doc="Seconds a tracking server has to answer the reachability check before a query.")
NAR_SYNC_INTERVAL = EnvVar("NAR_SYNC_INTERVAL", float, 0.0,
                           doc="Seconds between the implicit syncs of find_similar(run id) (0: sync every call).")
NAR_FINGERPRINT = EnvVar("NAR_FINGERPRINT", bool, True,
                         doc="Fingerprint the weights of logged models (same-weights, fine-tuned-from relations).")
NAR_HF_READ_WEIGHTS = EnvVar("NAR_HF_READ_WEIGHTS", bool, False,
                             doc="Read the safetensors of a Hub push to fingerprint its weights (opt-in).")
NAR_WEBHOOK_MAX_BODY = EnvVar("NAR_WEBHOOK_MAX_BODY", int, 1 << 20,
                              doc="Largest webhook body a receiver reads, bytes (413 past it).")

# (EnvVar definitions are alike in shape on purpose: one declaration per variable.)
# Budgets for untrusted input (docs/security.md): every stored artifact nar-plugin reads (pt2,
# ONNX, MLmodel, config.json) is checked against these before and while it is read.
NAR_MAX_MEMBER_MB = EnvVar("NAR_MAX_MEMBER_MB", float, 128.0,
                           doc="Largest pt2 archive member read (models/model.json), MB uncompressed.")
NAR_MAX_JSON_MB = EnvVar("NAR_MAX_JSON_MB", float, 16.0,
                         doc="Largest config.json / MLmodel / ArchGraph JSON file read, MB.")
NAR_MAX_JSON_DEPTH = EnvVar("NAR_MAX_JSON_DEPTH", int, 64, doc="Deepest nesting of any JSON read.")
NAR_MAX_ONNX_MB = EnvVar("NAR_MAX_ONNX_MB", float, 2048.0, doc="Largest ONNX file read, MB.")
NAR_MAX_CONFIG_LAYERS = EnvVar("NAR_MAX_CONFIG_LAYERS", int, 256,
                               doc="Most layers (summed over sub-configs) a model config may ask for.")
NAR_MAX_CONFIG_EXPERTS = EnvVar("NAR_MAX_CONFIG_EXPERTS", int, 65536, doc="Most experts a MoE config may ask for.")
NAR_MAX_CONFIG_DIM = EnvVar("NAR_MAX_CONFIG_DIM", int, 1 << 24,
                            doc="Largest size field (hidden, vocab, heads, positions, ...) of a model config.")
NAR_MAX_CONFIG_PARAMS = EnvVar("NAR_MAX_CONFIG_PARAMS", float, 1e14,
                               doc="Largest parameter count a model config may describe (layers x width^2 estimate).")
NAR_MAX_TRACE_NODES = EnvVar("NAR_MAX_TRACE_NODES", int, 0,
                             doc="Nodes an extraction may reach before folding (0: 4 x NAR_MAX_NODES).")
NAR_EXTRACT_TIMEOUT = EnvVar("NAR_EXTRACT_TIMEOUT", float, 300.0,
                             doc="Wall-time budget of one extraction from a stored artifact, seconds.")
NAR_SANDBOX_MEMORY_MB = EnvVar("NAR_SANDBOX_MEMORY_MB", int, 4096,
                               doc="Memory a sandboxed extraction may add after its imports, MB.")

#: Integrations that extend search (query resolvers, result folding), as ``"module:function"``.
#: :mod:`nar_plugin.search.resolvers` imports each by name and calls it the first time it is
#: needed, so that core search never imports an integration (see that module for why).
SEARCH_INTEGRATIONS: tuple[str, ...] = (
    "nar_plugin.integrations.mlflow.resolve:register",
    "nar_plugin.integrations.hf.keys:register",
)


def nar_home() -> Path:
    """The directory holding the index and caches (``NAR_HOME`` or the user cache dir).

    The folder need not exist yet (it is created when first written).

    Raises:
        ConfigError: the path, or a folder above it, is a file.
    """
    raw = NAR_HOME.get()
    home = Path(raw or _default_home()).expanduser()
    _check_not_a_file(home, raw)
    return home


def _check_not_a_file(home: Path, raw: str) -> None:
    """Raise a ConfigError naming ``NAR_HOME`` when ``home`` or one of its parents is a file
    (the index would otherwise fail later with a bare ``NotADirectoryError``)."""
    for p in (home, *home.parents):
        if p.is_dir():
            return
        if p.exists():
            what = f"{NAR_HOME.name}={raw}" if raw else f"the default {NAR_HOME.name} ({home})"
            where = "is a file" if p == home else f"is inside {p}, which is a file"
            fix = "point it at a folder" if raw else f"set {NAR_HOME.name} to a folder"
            raise ConfigError(f"{what} {where}; {fix}")
