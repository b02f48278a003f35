"""Imports that Gradio retries on its hot path, made to fail at once when they cannot succeed."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

RETRIED_BY_GRADIO = ("matplotlib",)
"""Gradio 6 runs every event handler call inside ``MatplotlibBackendMananger``, which tries
``import matplotlib`` on entry and on exit. The arena does not need matplotlib (its plots are
Plotly), and Python does not remember a failed import: each attempt searches every ``sys.path``
entry again, two of them per streamed update (a quarter of ``call_process_api`` under load)."""


def settle_missing(modules: Iterable[str] = RETRIED_BY_GRADIO) -> list[str]:
    """Mark each of ``modules`` that is not installed as known missing; returns those marked.

    ``sys.modules[name] = None`` is the import system's own way to say so: ``import name`` then
    raises ``ModuleNotFoundError`` without searching. An installed module is left alone, so
    installing it later (and restarting) works as usual.
    """
    marked = []
    for name in modules:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]
            marked.append(name)
    return marked
