"""The exception boundary of every hook: plugin errors are one warning, user errors propagate."""

from __future__ import annotations

import logging
import warnings

import pytest

from nar_plugin.errors import (
    DuplicateModelError,
    NarMlflowWarning,
    PluginFailureWarning,
)
from nar_plugin.integrations.boundary import plugin_boundary


class PluginBug(RuntimeError):
    pass


@pytest.fixture
def no_reraise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAR_TESTING", "false")


def test_plugin_error_is_one_warning_and_one_log_line(no_reraise: None, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[BaseException] = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        with plugin_boundary("indexing X", category=NarMlflowWarning, on_error=seen.append):
            raise PluginBug("broken")
        after = "the user's result"
    assert after == "the user's result"
    assert [type(e) for e in seen] == [PluginBug]
    assert [(w.category, str(w.message)) for w in caught] == [
        (NarMlflowWarning, "nar-plugin: indexing X failed (PluginBug: broken); the call itself succeeded")]
    assert caught[0].filename == __file__  # points at the caller's line, not at nar-plugin
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [str(caught[0].message)]


def test_nar_testing_reraises_the_same_error() -> None:  # conftest sets NAR_TESTING=true
    seen: list[BaseException] = []
    err = PluginBug("broken")
    with pytest.raises(PluginBug) as ei, plugin_boundary("x", on_error=seen.append):
        raise err
    assert ei.value is err and seen == [err]


def test_passthrough_and_base_exceptions_propagate(no_reraise: None) -> None:
    with pytest.raises(DuplicateModelError), plugin_boundary("x", passthrough=(DuplicateModelError,)):
        raise DuplicateModelError("blocked")
    with pytest.raises(KeyboardInterrupt), plugin_boundary("x"):
        raise KeyboardInterrupt


def test_failing_on_error_does_not_hide_the_error(no_reraise: None) -> None:
    def bad(exc: BaseException) -> None:
        raise OSError("server down too")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plugin_boundary("x", on_error=bad):
            raise PluginBug("first")
    assert len(caught) == 1 and "PluginBug: first" in str(caught[0].message)
    assert caught[0].category is PluginFailureWarning


def test_silent_and_decorator_forms(no_reraise: None) -> None:
    @plugin_boundary("stamping", silent=True)
    def stamp(fail: bool) -> str:
        if fail:
            raise PluginBug("nope")
        return "stamped"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert stamp(False) == "stamped"
        assert stamp(True) is None
    assert caught == []
