"""The one exception boundary between a user's call and the work nar-plugin does inside it.

Example:
    >>> from nar_plugin.integrations.boundary import plugin_boundary
    >>> def log_model_artifacts(self, model_id, local_dir):
    ...     result = original(self, model_id, local_dir)  # the user's call: its errors propagate
    ...     with plugin_boundary(f"indexing logged model {model_id}"):
    ...         index_logged_model(client, model_id, local_dir)  # ours: one warning, never raised
    ...     return result

It also decorates (the function then returns ``None`` when it fails)::

    @plugin_boundary("stamping the model card", category=MyWarning)
    def stamp(...): ...

The rules follow MLflow autologging:

- put only nar-plugin's own work inside the boundary: an error raised by the user's own call
  (outside it) propagates unchanged;
- an ``Exception`` raised inside is caught and reported **once**: one ``WARNING`` log line
  (logger ``nar_plugin.integrations.boundary``) and one :mod:`warnings` warning of ``category``
  (a :class:`~nar_plugin.errors.PluginFailureWarning` by default), and the user's result is
  returned; ``silent=True`` makes it one debug line only;
- the warning can never raise: under ``warnings.simplefilter("error")`` (common in test suites)
  ``warnings.warn`` raises the warning itself, *after* the user's model was logged or pushed;
  :func:`warn_safely` catches that and keeps the log line as the report;
- ``NAR_TESTING=true`` re-raises it instead, so tests see plugin errors (any value that is not a
  boolean counts as false, with one log line: a typo must not turn failures into aborted calls);
- ``passthrough`` names plugin errors that are meant to stop the user's call (e.g.
  :class:`~nar_plugin.errors.DuplicateModelError` under ``NAR_DEDUP=block``): they propagate;
- ``on_error(exc)`` runs first, e.g. to record ``nar.status=error:<Type>``; its own failure is
  logged at debug level and never hides the original error;
- ``fail_closed(exc)`` is for promises that must not lapse silently: when it returns an
  exception, that one is raised (from the plugin error) instead of a warning, whatever
  ``NAR_TESTING`` says. ``NAR_DEDUP=block`` uses it: a duplicate check that failed refuses the
  registration (:class:`~nar_plugin.errors.DedupCheckFailedError`) rather than letting it through.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nar_plugin.errors import NarError, PluginFailureWarning

logger = logging.getLogger(__name__)

__all__ = ["plugin_boundary", "testing", "warn_safely"]


#: frames of these packages are skipped, so that a warning points at the user's own line
_LIBRARY_FRAMES = ("nar_plugin", "mlflow", "huggingface_hub", "contextlib", "functools")


def _user_stacklevel() -> int:
    """``stacklevel`` (for the ``warnings.warn`` in :func:`warn_safely`) of the first frame
    outside nar-plugin and the libraries it hooks: the user's ``log_model`` / ``push_to_hub`` line."""
    frame, level = sys._getframe(1), 1  # level 1 = warn_safely, the caller of warnings.warn
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not any(name == p or name.startswith(p + ".") for p in _LIBRARY_FRAMES):
            return level
        frame, level = frame.f_back, level + 1
    return level


def testing() -> bool:
    """``NAR_TESTING``: re-raise plugin errors (a malformed value counts as false, logged)."""
    from nar_plugin.config import NAR_TESTING

    try:
        return bool(NAR_TESTING.get())
    except NarError as e:
        logger.warning("nar-plugin: %s; counted as false (plugin errors are reported, not re-raised)", e)
        return False


def warn_safely(message: str, category: type[Warning], stacklevel: int | None = None) -> bool:
    """``warnings.warn`` that never raises, whatever the warning filters say.

    ``warnings.simplefilter("error")`` turns a warning into an exception raised at the
    ``warnings.warn`` call, inside a hook, after the user's call already happened; a custom
    ``warnings.showwarning`` may raise too. Either is caught: the message is logged instead
    (callers log it at ``WARNING`` already, so this adds a debug line only).

    Args:
        message: the warning text.
        category: the warning class.
        stacklevel: as for ``warnings.warn``, counted from the caller of this function
            (default: the first frame outside nar-plugin and the libraries it hooks, i.e. the
            user's ``log_model`` / ``register_model`` / ``push_to_hub`` line).

    Returns:
        Whether the warning was issued (False: the filters turned it into an error).
    """
    level = _user_stacklevel() if stacklevel is None else stacklevel + 1
    try:
        warnings.warn(message, category, stacklevel=level)
    except Exception as e:  # noqa: BLE001 - a warning filter's "error" must not break the user's call
        logger.debug("nar-plugin: warning filters turned %s into an error (%s); reported by log only",
                     category.__name__, type(e).__name__)
        return False
    return True


@contextmanager
def plugin_boundary(
    what: str,
    *,
    category: type[Warning] = PluginFailureWarning,
    consequence: str = "the call itself succeeded",
    passthrough: tuple[type[BaseException], ...] = (),
    on_error: Callable[[Exception], object] | None = None,
    silent: bool = False,
    fail_closed: Callable[[Exception], BaseException | None] | None = None,
) -> Iterator[None]:
    """Run nar-plugin's part of a hooked call; see the module docstring for the rules.

    Args:
        what: the work, as a gerund phrase (``"indexing logged model m-123"``); the message
            reads ``nar-plugin: <what> failed (<Type>: <message>); <consequence>``.
        category: warning class (define it in :mod:`nar_plugin.errors`).
        consequence: what happened to the user's call.
        passthrough: exception types that propagate unchanged.
        on_error: called with the exception before it is reported or re-raised.
        silent: log at debug level and issue no warning.
        fail_closed: maps the error to the exception that must stop the user's call, or ``None``.

    Raises:
        Exception: the error itself, when ``NAR_TESTING=true`` or its type is in ``passthrough``;
            what ``fail_closed`` returned.
    """
    try:
        yield
    except passthrough:
        raise
    except Exception as exc:
        if on_error is not None:
            try:
                on_error(exc)
            except Exception as e:  # noqa: BLE001 - best effort: what failed may be the server
                logger.debug("nar-plugin: recording the failure of %s failed too: %s", what, e)
        refusal = fail_closed(exc) if fail_closed is not None else None
        if refusal is not None:
            logger.warning("nar-plugin: %s failed (%s: %s); %s", what, type(exc).__name__, exc, refusal)
            raise refusal from exc
        if testing():
            raise
        msg = f"nar-plugin: {what} failed ({type(exc).__name__}: {exc}); {consequence}"
        if silent:
            logger.debug(msg, exc_info=exc)
            return
        logger.warning(msg)
        warn_safely(msg, category)
