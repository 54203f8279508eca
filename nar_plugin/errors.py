"""Typed errors for nar-plugin.

Every error derives from :class:`NarError` and from the builtin exception that fits it, so that
``except ValueError`` keeps working for callers who do not know about nar-plugin. Messages say
what was expected and what was found.
"""

from __future__ import annotations

from typing import Any

# Sibling error types have constructors of the same shape (message + structured fields) on purpose.

__all__ = [
    "NarError",
    "UnsupportedModelError",
    "GraphExtractionError",
    "ExampleInputsError",
    "CorruptArtifactError",
    "GraphTooLargeError",
    "EncoderVersionMismatchError",
    "IndexCorruptError",
    "IndexLockedError",
    "EmbeddingCodecError",
    "ConfigError",
    "KeyNotFoundError",
    "DuplicateModelError",
    "MissingDependencyError",
    "WebhookVerificationError",
    "KeyExistsError",
    "InvalidVectorError",
    "InvalidQueryError",
    "PickleOnlyModelError",
    "StaleCorpusError",
    "TrackingUnavailableError",
    "DedupCheckFailedError",
    "WebhookPayloadError",
    "IndexWriteError",
    "IndexReadOnlyError",
    "BudgetExceededError",
    "TraceTooLargeError",
    "ExtractionTimeoutError",
    "SandboxMemoryError",
    "UnsafePathError",
    "UnsafeConfigError",
    "NarWarning",
    "PluginFailureWarning",
    "NarMlflowWarning",
    "DuplicateModelWarning",
]


class NarError(Exception):
    """Base class of every error raised by nar-plugin."""


class UnsupportedModelError(NarError, TypeError):
    """The source is not of a kind nar-plugin can read (or the model cannot be built)."""


class GraphExtractionError(NarError, RuntimeError):
    """Every tracer failed on the model; ``attempts`` maps tracer name -> error text."""

    def __init__(self, message: str, attempts: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.attempts = dict(attempts or {})


class ExampleInputsError(NarError, ValueError):
    """No example inputs were given and none could be inferred from the model."""


class CorruptArtifactError(NarError, ValueError):
    """A stored artifact (ONNX file, pt2 archive, config.json) could not be parsed."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class GraphTooLargeError(NarError, ValueError):
    """The graph has more nodes than ``NAR_MAX_NODES`` allows."""

    def __init__(self, num_nodes: int, limit: int) -> None:
        super().__init__(
            f"graph has {num_nodes} nodes, more than the limit of {limit} "
            "(raise NAR_MAX_NODES to embed it anyway)"
        )
        self.num_nodes = num_nodes
        self.limit = limit


class EncoderVersionMismatchError(NarError, ValueError):
    """An index or embedding was made by another encoder version than the one loaded."""

    def __init__(self, expected: str, found: str, where: str = "index") -> None:
        super().__init__(
            f"{where} was built with encoder {found!r}, but the loaded encoder is {expected!r}; "
            "embeddings of different encoders are not comparable. Rebuild with `nar index rebuild`."
        )
        self.expected = expected
        self.found = found


class IndexCorruptError(NarError, OSError):
    """The on-disk index cannot be read consistently; ``hint`` says what to do (default: run
    ``nar index rebuild``, which finds a source to rebuild from or says which flag to pass)."""

    def __init__(self, message: str, path: str | None = None, hint: str = "Restore it with `nar index rebuild`") -> None:
        super().__init__(f"{message}. {hint}." if hint else message)
        self.path = path
        self.detail = message  # what is wrong, without the advice


class IndexLockedError(NarError, TimeoutError):
    """Another process held the index lock for longer than the timeout."""


class EmbeddingCodecError(NarError, ValueError):
    """An embedding tag string is malformed or has the wrong dimension/format version."""


class ConfigError(NarError, ValueError):
    """A ``NAR_*`` environment variable has a value of the wrong type or outside its choices."""


class KeyNotFoundError(NarError, KeyError):
    """A key (index key, run id, model id, repo id) does not resolve to anything."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DuplicateModelError(NarError, RuntimeError):
    """Registration was blocked because the model duplicates an existing one (NAR_DEDUP=block)."""

    def __init__(self, message: str, duplicate_of: str | None = None, score: float | None = None) -> None:
        super().__init__(message)
        self.duplicate_of = duplicate_of
        self.score = score


class MissingDependencyError(NarError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is required for this feature but is not installed; "
            f"run `pip install 'nar-plugin[{extra}]'`"
        )
        self.package = package
        self.extra = extra


class WebhookVerificationError(NarError, PermissionError):
    """A webhook delivery failed signature, secret, timestamp or replay checks."""


class KeyExistsError(NarError, ValueError):
    """``EmbeddingIndex.add`` was given a key that is already indexed (use ``upsert`` to replace)."""

    def __init__(self, key: str, existing_id: int | None = None, message: str | None = None) -> None:
        super().__init__(message or (
            f"key {key!r} is already in the index"
            + (f" (id {existing_id})" if existing_id is not None else "")
            + "; use upsert() to replace its vector and metadata"
        ))
        self.key = key
        self.existing_id = existing_id


class InvalidVectorError(NarError, ValueError):
    """A vector has the wrong shape or dimension, or holds non-finite values or all zeros."""


class InvalidQueryError(NarError, ValueError):
    """An index call got a malformed argument (``k``, ``filter``, key, metadata) or a closed index."""


class PickleOnlyModelError(UnsupportedModelError):
    """The saved model is a pickle; reading it needs ``NAR_TRUST_PICKLE=true``."""


class StaleCorpusError(CorruptArtifactError):
    """The corpus on disk was written with another corpus format or vocabulary version.

    Inherits :class:`~nar_plugin.errors.CorruptArtifactError` (and so ``ValueError``).
    """

    def __init__(self, path: Any, what: str, found: Any, expected: Any) -> None:
        super().__init__(
            f"corpus at {path} has {what} {found!r}, this nar-plugin writes {expected!r}: its graphs "
            "are stale. Rebuild it with `nar corpus build --rebuild` (or build_corpus(..., rebuild=True))",
            str(path),
        )
        self.what = what
        self.found = found
        self.expected = expected


class TrackingUnavailableError(NarError, ConnectionError):
    """An MLflow tracking server could not be reached (the message names its URI)."""


class DedupCheckFailedError(DuplicateModelError):
    """``NAR_DEDUP=block`` and no duplicate check could be made (no model id, no embedding,
    index locked, plugin error): registration is refused rather than let through unchecked.
    ``reason`` says why; the message says how to override (``NAR_DEDUP=warn``)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"refusing to register a new version of {name!r}: NAR_DEDUP=block and no duplicate check "
            f"could be made ({reason}). Set NAR_DEDUP=warn to register it unchecked"
        )
        self.reason = reason


class WebhookPayloadError(NarError, ValueError):
    """A webhook delivery's body is too large (``status`` 413) or not a JSON object (400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class IndexWriteError(NarError, OSError):
    """The index database could not be written (disk full, read-only file system, I/O error);
    the transaction was rolled back and the index is unchanged."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class IndexReadOnlyError(IndexWriteError, InvalidQueryError):
    """A write to an index that cannot be written: a handle opened with ``read_only=True``, or
    an index folder the process may not write (queries still work: it is opened read-only).
    Also an :class:`InvalidQueryError` (``ValueError``), what read-only handles always raised."""


# ------------------------------------------------------------------ untrusted input
class BudgetExceededError(NarError, ValueError):
    """An input is larger than a budget for untrusted input allows (archive member, JSON size or
    depth, config sizes); ``budget`` names the ``NAR_*`` variable that raises the limit."""

    def __init__(self, what: str, found: object, limit: object, budget: str = "",
                 path: str | None = None) -> None:
        where = f"{path}: " if path else ""
        fix = f" (raise {budget} to allow it)" if budget else ""
        super().__init__(f"{where}{what} is {found}, over the limit of {limit}{fix}")
        self.what = what
        self.found = found
        self.limit = limit
        self.budget = budget
        self.path = path


class TraceTooLargeError(GraphTooLargeError):
    """Extraction was stopped the moment the graph under construction passed
    ``NAR_MAX_TRACE_NODES`` nodes (before folding), instead of after building all of it."""

    def __init__(self, num_nodes: object, limit: object) -> None:
        super().__init__(num_nodes, limit)  # type: ignore[arg-type]
        self.args = (f"extraction stopped at {num_nodes} nodes, more than the limit of {limit} "
                     "(raise NAR_MAX_TRACE_NODES, or NAR_MAX_NODES, to read it anyway)",)


class ExtractionTimeoutError(NarError, TimeoutError):
    """An extraction ran past its wall-time budget (``NAR_EXTRACT_TIMEOUT``) and was stopped."""

    def __init__(self, message: str, limit_s: float | None = None) -> None:
        super().__init__(message)
        self.limit_s = limit_s


class SandboxMemoryError(NarError, MemoryError):
    """A sandboxed extraction ran out of its memory budget (``NAR_SANDBOX_MEMORY_MB``)."""

    def __init__(self, message: str, limit_mb: int | None = None) -> None:
        super().__init__(message)
        self.limit_mb = limit_mb


class UnsafePathError(NarError, PermissionError):
    """A stored model names a file outside its own folder (``../``, an absolute path or a link
    leading out); nothing outside the folder is read."""

    def __init__(self, message: str, path: str | None = None, root: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.root = root


class UnsafeConfigError(NarError, ValueError):
    """An untrusted config asks for something nar-plugin will not do on its behalf (a timm
    ``model_args`` key outside the allow-list, such as ``checkpoint_path``)."""


# ------------------------------------------------------------------ warnings
class NarWarning(UserWarning):
    """Base class of every warning nar-plugin issues."""


class PluginFailureWarning(NarWarning):
    """nar-plugin failed inside a call it hooks; the call itself went ahead (see
    :mod:`nar_plugin.integrations.boundary`)."""


class NarMlflowWarning(PluginFailureWarning):
    """A nar-plugin failure inside an MLflow call (the call itself still succeeded)."""


class DuplicateModelWarning(NarWarning):
    """A registered model version duplicates an existing one (``NAR_DEDUP=warn``)."""
