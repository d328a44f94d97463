"""The widgets' binding to the parameter node can be undone on every Slicer release.

Slicer's parameterNodeWrapper cannot be installed here. With ``SLICER_SOURCE_DIR`` set to a git
clone of Slicer (https://github.com/Slicer/Slicer), the real wrapper of the tags below is imported
from it and driven through combo boxes that behave as Qt's do; without it, those tests skip and the
rest check ``connect_gui`` against a small STAND-IN of the wrapper's two methods.
"""

# No `from __future__ import annotations`: the wrapper reads the annotations of a local class.

import importlib
import os
import subprocess
import sys
import types
from typing import Annotated

import pytest

from CycleGANExplainLib.parameter_gui import SLICER_PARAMETER_NAME_PROPERTY, connect_gui, widgets_by_parameter

SLICER_TAGS = ("v5.6.0", "v5.8.0", "v5.10.0")
WRAPPER_FOLDER = "Base/Python/slicer/parameterNodeWrapper"
DEVICES = ["auto", "cpu", "cuda"]
METHODS = ["cyclegan-am", "saliency", "lrp"]


class Signal:
    def __init__(self) -> None:
        self._slots = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot) -> None:
        self._slots.remove(slot)

    def emit(self) -> None:
        for slot in list(self._slots):
            slot()


class ComboBox:
    """STAND-IN for QComboBox: clearing a box emits currentIndexChanged(-1), and the first item added
    to an empty box becomes current (emitting again), as Qt does."""

    def __init__(self, parameter: str = "") -> None:
        self._items, self._current, self.currentIndexChanged = [], -1, Signal()
        self._properties = {SLICER_PARAMETER_NAME_PROPERTY: parameter} if parameter else {}

    def isWidgetType(self) -> bool:
        return True

    def clear(self) -> None:
        self._items = []
        self._set_current(-1)

    def addItem(self, text: str) -> None:
        self._items.append(text)
        if self._current == -1:
            self._set_current(0)

    @property
    def currentIndex(self) -> int:
        return self._current

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        self._set_current(index)

    def _set_current(self, index: int) -> None:
        if index != self._current:
            self._current = index
            self.currentIndexChanged.emit()

    def property(self, name: str):  # Qt's QObject.property (defined last: it hides the builtin)
        return self._properties.get(name)


def _module_ui():
    """As childWidgetVariables gives it: every named widget, bound or not."""
    return types.SimpleNamespace(deviceComboBox=ComboBox("device"), methodComboBox=ComboBox("method"),
                                 explainButton=ComboBox())


def _stand_in_qt() -> types.ModuleType:
    """``qt`` and ``ctk`` for importing the wrapper: our ComboBox, and an empty class for any other name."""
    module = types.ModuleType("qt")
    classes = {"QComboBox": ComboBox}

    def __getattr__(name: str):
        return classes.setdefault(name, type(name, (), {}))

    module.__getattr__ = __getattr__
    return module


@pytest.fixture(params=SLICER_TAGS)
def slicer_wrapper(request, tmp_path, monkeypatch):
    """The parameterNodeWrapper package of one Slicer tag, imported from SLICER_SOURCE_DIR."""
    import slicer

    source = os.environ.get("SLICER_SOURCE_DIR")
    if not source:
        pytest.skip("set SLICER_SOURCE_DIR to a git clone of Slicer to test against its parameterNodeWrapper")
    tag = request.param
    package = f"slicer_pnw_{tag.replace('.', '_')}"
    folder = tmp_path / package
    folder.mkdir()
    listing = subprocess.run(["git", "-C", source, "ls-tree", "--name-only", f"{tag}:{WRAPPER_FOLDER}"],
                             check=True, capture_output=True, text=True).stdout.split()
    for name in listing:
        text = subprocess.run(["git", "-C", source, "show", f"{tag}:{WRAPPER_FOLDER}/{name}"],
                              check=True, capture_output=True, text=True).stdout
        (folder / name).write_text(text, encoding="utf-8")
    qt = _stand_in_qt()
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "ctk", qt)
    for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qMRMLNodeComboBox",
                 "qMRMLSubjectHierarchyTreeView", "qSlicerWidget"):
        monkeypatch.setattr(slicer, name, getattr(qt, name), raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    wrapper = importlib.import_module(package)
    yield tag, wrapper
    for name in [name for name in sys.modules if name.startswith(package)]:
        del sys.modules[name]


def _reenter(wrapper, connect):
    """Choose 'cpu' and 'saliency', leave the module (disconnect), come back with a new wrapper of
    the same node (as Logic.getParameterNode makes one) and connect again; returns the new wrapper."""
    import slicer

    @wrapper.parameterNodeWrapper
    class Parameters:
        device: Annotated[str, wrapper.Choice(DEVICES)] = "auto"
        method: Annotated[str, wrapper.Choice(METHODS)] = "cyclegan-am"

    node = slicer.vtkMRMLScriptedModuleNode()
    ui = _module_ui()
    first = Parameters(node)
    tag = connect(first, ui)
    ui.deviceComboBox.currentIndex = DEVICES.index("cpu")
    ui.methodComboBox.currentIndex = METHODS.index("saliency")
    assert (first.device, first.method) == ("cpu", "saliency")
    first.disconnectGui(tag)
    again = Parameters(node)
    connect(again, ui)
    return again, ui


def test_choices_survive_reentry_on_every_release(slicer_wrapper):
    _, wrapper = slicer_wrapper
    parameters, ui = _reenter(wrapper, connect_gui)
    assert (parameters.device, parameters.method) == ("cpu", "saliency")
    assert (ui.deviceComboBox.currentIndex, ui.methodComboBox.currentIndex) == (1, 1)


def test_connect_gui_alone_resets_the_choices_before_5_10(slicer_wrapper):
    """The defect worked around: connectGui's missing tag (fixed in 5.10)."""
    tag, wrapper = slicer_wrapper
    parameters, _ = _reenter(wrapper, lambda node, ui: node.connectGui(ui))
    if tag == "v5.10.0":
        assert (parameters.device, parameters.method) == ("cpu", "saliency")
    else:
        assert (parameters.device, parameters.method) != ("cpu", "saliency")


class StandInWrapper:
    """STAND-IN for the two wrapper methods connect_gui relies on: connectParametersToGui returns a
    tag (every release), connectGui returns none (before 5.10)."""

    def __init__(self) -> None:
        self.connected = {}

    def connectParametersToGui(self, mapping):
        tag = len(self.connected) + 1
        self.connected[tag] = mapping
        return tag

    def connectGui(self, gui):
        self.connectParametersToGui(widgets_by_parameter(gui))

    def disconnectGui(self, tag):
        self.connected.pop(tag, None)


def test_connect_gui_binds_the_named_widgets_and_returns_a_tag_that_disconnects():
    ui = _module_ui()
    assert widgets_by_parameter(ui) == {"device": ui.deviceComboBox, "method": ui.methodComboBox}
    node = StandInWrapper()
    tag = connect_gui(node, ui)
    assert node.connected == {tag: {"device": ui.deviceComboBox, "method": ui.methodComboBox}}
    node.disconnectGui(tag)
    assert node.connected == {}


def _module_with_the_real_wrapper(wrapper, monkeypatch):
    """CycleGANExplain.py imported afresh with Slicer's parameterNodeWrapper (``wrapper``) in place of the
    stand-in, so that its parameter node is the real one."""
    import importlib.util

    import slicer

    from .conftest import MODULE_DIR

    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", wrapper, raising=False)
    spec = importlib.util.spec_from_file_location("CycleGANExplain_real_wrapper", MODULE_DIR / "CycleGANExplain.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_a_saved_scenes_unavailable_choices_are_replaced_before_the_gui_is_bound(module, slicer_wrapper, scene_app,
                                                                                monkeypatch):
    _, wrapper = slicer_wrapper
    real = _module_with_the_real_wrapper(wrapper, monkeypatch)
    logic = real.CycleGANExplainLogic()
    node = logic.getParameterNode().parameterNode
    # What a scene saved with another installation holds (the wrapper writes str parameters as is).
    for name, saved in (("bundle", "bundle-not-installed"), ("method", "method-removed"), ("device", "tpu")):
        node.SetParameter(name, saved)
    parameters = logic.getParameterNode()
    assert type(parameters).__module__ == real.__name__ and parameters.bundle == "bundle-not-installed"
    ui = types.SimpleNamespace(deviceComboBox=ComboBox("device"), methodComboBox=ComboBox("method"),
                               bundleComboBox=ComboBox("bundle"))
    with pytest.raises(ValueError, match="bundle-not-installed|method-removed|tpu"):
        connect_gui(parameters, ui)  # the failure repaired below: the binding cannot show the saved value

    parameters = logic.getParameterNode()
    replaced = logic.completeParameters(parameters)
    assert len(replaced) == 3
    assert all(saved in sentence for saved, sentence in zip(("tpu", "method-removed", "bundle-not-installed"),
                                                            replaced))
    assert (node.GetParameter("device"), node.GetParameter("method"), node.GetParameter("bundle")) == (
        real.DEFAULT_DEVICE, real.DEFAULT_METHOD, real.default_bundle_dir().name)
    ui = types.SimpleNamespace(deviceComboBox=ComboBox("device"), methodComboBox=ComboBox("method"),
                               bundleComboBox=ComboBox("bundle"))
    connect_gui(parameters, ui)
    assert ui.bundleComboBox.currentIndex == real.shippedBundleNames().index(real.default_bundle_dir().name)
    assert logic.completeParameters(logic.getParameterNode()) == [], "the user is told once"
