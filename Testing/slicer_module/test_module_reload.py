"""Reload in Slicer's developer section reloads the library, not only the module file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_forgotten_library_modules_are_read_again_on_the_next_import():
    script = (
        "import CycleGANExplainLib, CycleGANExplainLib.overlay as before, sys\n"
        "CycleGANExplainLib.forget_loaded_modules()\n"
        "assert not [name for name in sys.modules if name.startswith('CycleGANExplainLib')]\n"
        "import CycleGANExplainLib.overlay as after\n"
        "assert after is not before and after.colour_table is not before.colour_table\n"
        "print('reloaded')\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=REPO_ROOT / "CycleGANExplain")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "reloaded"


def test_the_widget_forgets_the_library_before_slicer_reloads_the_module(module, monkeypatch):
    import CycleGANExplainLib

    calls = []
    monkeypatch.setattr(CycleGANExplainLib, "forget_loaded_modules", lambda: calls.append("forget library"))
    monkeypatch.setattr(module.ScriptedLoadableModuleWidget, "onReload", lambda self: calls.append("reload module"),
                        raising=False)
    module.CycleGANExplainWidget.onReload(object.__new__(module.CycleGANExplainWidget))
    assert calls == ["forget library", "reload module"]
