"""The library's translation function with Slicer's own slicer.i18n (v5.10.0, from SLICER_SOURCE_DIR):
in PythonSlicer, which has slicer.i18n but no application, text stays as written."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types

import pytest

from CycleGANExplainLib import translation


@pytest.fixture
def slicer_i18n(monkeypatch):
    """Slicer 5.10's slicer.i18n module, imported from a git clone of Slicer."""
    import slicer

    source = os.environ.get("SLICER_SOURCE_DIR")
    if not source:
        pytest.skip("set SLICER_SOURCE_DIR to a git clone of Slicer to test against its slicer.i18n")
    text = subprocess.run(["git", "-C", source, "show", "v5.10.0:Base/Python/slicer/i18n.py"], check=True,
                          capture_output=True, text=True).stdout
    i18n = types.ModuleType("slicer.i18n")
    exec(compile(text, "i18n.py", "exec"), vars(i18n))
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    yield i18n
    monkeypatch.undo()
    importlib.reload(translation)


def test_in_python_slicer_text_stays_as_written(slicer_i18n, monkeypatch):
    import slicer

    monkeypatch.delattr(slicer, "app", raising=False)  # PythonSlicer: no application
    with pytest.raises(ImportError):
        slicer_i18n.tr("Explain")  # what an unguarded import would call
    assert importlib.reload(translation).tr("Explain") == "Explain"


def test_in_the_slicer_application_slicers_tr_is_used(slicer_i18n, monkeypatch):
    import slicer

    class Application:  # STAND-IN for slicer.app (qSlicerApplication): records the translation context
        def __init__(self) -> None:
            self.contexts = []

        def translate(self, context: str, text: str) -> str:
            self.contexts.append(context)
            return text.upper()

    monkeypatch.setattr(slicer, "app", Application(), raising=False)
    reloaded = importlib.reload(translation)
    assert reloaded.tr is slicer_i18n.tr
    assert reloaded.tr("Explain") == "EXPLAIN"
    assert slicer.app.contexts == ["test_translation"]  # the caller's file, as Slicer's string extraction expects
