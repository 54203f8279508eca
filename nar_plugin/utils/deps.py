"""Optional dependencies: the one place that imports them and says how to install them."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from nar_plugin.errors import MissingDependencyError

__all__ = ["require", "requires", "is_available", "EXTRAS"]

F = TypeVar("F", bound=Callable[..., Any])

#: top-level module -> the ``nar-plugin[extra]`` that installs it
EXTRAS: dict[str, str] = {
    "timm": "timm",
    "torchvision": "timm",
    "transformers": "hf",
    "huggingface_hub": "hf",
    "mlflow": "mlflow",
    "starlette": "mlflow",
    "uvicorn": "mlflow",
    "onnxruntime": "dev",
}


def is_available(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Args:
        module: dotted module name, e.g. ``"timm"`` or ``"mlflow.tracking"``.
        extra: the ``nar-plugin[...]`` extra that provides it (default: from :data:`EXTRAS`).

    Raises:
        MissingDependencyError: the package is not installed; the message gives the pip line.
            An ``ImportError`` raised *inside* an installed package propagates unchanged.
    """
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name != top and not module.startswith(e.name):
            raise  # the package is there but one of *its* imports is missing
        raise MissingDependencyError(top, extra or EXTRAS.get(top, "all")) from e


def requires(*modules: str, extra: str | None = None) -> Callable[[F], F]:
    """Decorator for public entry points: :func:`require` each of ``modules`` before every call,
    so that a missing extra is reported with its pip line, not as a bare ``ModuleNotFoundError``
    from deep inside.

    Example:
        >>> autolog = requires("mlflow")(hooks.autolog)
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for module in modules:
                require(module, extra)
            return fn(*args, **kwargs)
        return checked  # type: ignore[return-value]
    return decorate
