"""Imports Gradio retries on every event: a missing module is marked once, an installed one kept."""

from __future__ import annotations

import sys

import pytest

from arena.ui.imports import settle_missing


def test_a_missing_module_is_marked_and_then_fails_without_a_search(monkeypatch):
    name = "arena_test_module_that_is_not_installed"
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert settle_missing([name]) == [name]
    searched = []
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path])
    sys.meta_path.insert(0, type("Spy", (), {"find_spec": lambda *a: searched.append(a)})())
    with pytest.raises(ModuleNotFoundError):
        __import__(name)
    assert searched == [], "the import system did not look for it again"
    monkeypatch.delitem(sys.modules, name)


def test_an_installed_module_is_left_alone(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert settle_missing(["colorsys", "json"]) == []
    assert "colorsys" not in sys.modules
    import colorsys

    assert colorsys.rgb_to_hsv(1, 0, 0)[2] == 1


def test_gradio_still_tries_matplotlib_on_every_event():
    # If Gradio stops doing this, RETRIED_BY_GRADIO and settle_missing can go.
    import inspect

    from gradio.utils import MatplotlibBackendMananger

    assert "import matplotlib" in inspect.getsource(MatplotlibBackendMananger.__enter__)
