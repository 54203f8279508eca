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
- ``NAR_TESTING=true`` re-raises it instead, so tests see plugin errors;
- ``passthrough`` names plugin errors that are meant to stop the user's call (e.g.
  :class:`~nar_plugin.errors.DuplicateModelError` under ``NAR_DEDUP=block``): they propagate;
- ``on_error(exc)`` runs first, e.g. to record ``nar.status=error:<Type>``; its own failure is
  logged at debug level and never hides the original error.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nar_plugin.errors import NarError, PluginFailureWarning

logger = logging.getLogger(__name__)

__all__ = ["plugin_boundary", "testing"]


#: frames of these packages are skipped, so that a warning points at the user's own line
_LIBRARY_FRAMES = ("nar_plugin", "mlflow", "huggingface_hub", "contextlib", "functools")


def _user_stacklevel() -> int:
    """``stacklevel`` (for a ``warnings.warn`` in :func:`plugin_boundary`) of the first frame
    outside nar-plugin and the libraries it hooks: the user's ``log_model`` / ``push_to_hub`` line."""
    frame, level = sys._getframe(1), 1  # level 1 = plugin_boundary, the caller of warnings.warn
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not any(name == p or name.startswith(p + ".") for p in _LIBRARY_FRAMES):
            return level
        frame, level = frame.f_back, level + 1
    return level


def testing() -> bool:
    """``NAR_TESTING``: re-raise plugin errors (a malformed value counts as false)."""
    from nar_plugin.config import NAR_TESTING

    try:
        return bool(NAR_TESTING.get())
    except NarError:
        return False


@contextmanager
def plugin_boundary(
    what: str,
    *,
    category: type[Warning] = PluginFailureWarning,
    consequence: str = "the call itself succeeded",
    passthrough: tuple[type[BaseException], ...] = (),
    on_error: Callable[[Exception], object] | None = None,
    silent: bool = False,
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

    Raises:
        Exception: the error itself, when ``NAR_TESTING=true`` or its type is in ``passthrough``.
    """
    try:
        yield
    except passthrough:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the boundary
        if on_error is not None:
            try:
                on_error(exc)
            except Exception as e:  # noqa: BLE001 - best effort: what failed may be the server
                logger.debug("nar-plugin: recording the failure of %s failed too: %s", what, e)
        if testing():
            raise
        msg = f"nar-plugin: {what} failed ({type(exc).__name__}: {exc}); {consequence}"
        if silent:
            logger.debug(msg, exc_info=exc)
            return
        logger.warning(msg)
        warnings.warn(msg, category, stacklevel=_user_stacklevel())
