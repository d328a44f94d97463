"""The widget's own code (the view half: observers, labels, dialogs) run with the real controller,
Logic, MRML scene and markups events.

What Slicer's Qt application would provide is stood in for: the labels and combo boxes
(qt_stand_ins) and slicer.util's dialogs, which need a QApplication; the dialogs record what
they were asked to show. setup() itself (loadUI, QTimers, the GUI binding) is not run here.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from CycleGANExplainLib.explain_controller import ExplainController
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.overlay import legend_html

from .qt_stand_ins import ManualTimer, panel_widgets

TOOLTIP_ROLE = 3  # Qt.ToolTipRole


class Dialogs:
    """slicer.util's dialogs and status bar, recorded (STAND-IN: they need Slicer's QApplication)."""

    def __init__(self, monkeypatch) -> None:
        import slicer

        self.shown, self.answers = [], []
        for name in ("errorDisplay", "infoDisplay"):
            monkeypatch.setattr(slicer.util, name, lambda text, *args, _kind=name, **kwargs: self.shown.append(
                (_kind, text)))
        monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", self._confirm)
        monkeypatch.setattr(slicer.util, "showStatusMessage", lambda message, duration=0: None)

    def _confirm(self, text, windowTitle=None, **kwargs) -> bool:
        self.shown.append(("confirmOkCancelDisplay", text))
        return self.answers.pop(0) if self.answers else True


@pytest.fixture
def widget(module, scene_app, synthetic_ct, monkeypatch):
    monkeypatch.setitem(vars(module), "qt", types.SimpleNamespace(Qt=types.SimpleNamespace(ToolTipRole=TOOLTIP_ROLE)))
    made = module.CycleGANExplainWidget(parent=None)
    made.dialogs = Dialogs(monkeypatch)
    made.ui = panel_widgets()
    made._busyRow = types.SimpleNamespace(visible=False)
    made.logic = module.CycleGANExplainLogic()
    made.debounce, made.poll_timer = ManualTimer(), ManualTimer()
    made.controller = ExplainController(made.logic, made._createInstaller(), made, made.debounce, made.poll_timer)
    scene_app.load_volume(synthetic_ct)
    parameters = made.logic.getParameterNode()
    parameters.device = "cpu"
    made.logic.completeParameters(parameters)
    # What setParameterNode does, without the GUI binding that needs Qt widgets:
    made._parameterNode = parameters
    made.controller.set_parameters(parameters)
    made._labelMethodItems()
    made._describeBundleItems()
    made.onParameterNodeModified()
    yield made
    made.cleanup()


def explain_now(widget) -> None:
    assert widget.debounce.active, "the seed's move did not start the debounce timer"
    widget.debounce.active = False
    widget.controller.explain()
    while widget.poll_timer.active:
        widget.controller.poll()


def test_the_panel_shows_the_chosen_seed_node_and_enables_explain(widget):
    parameters = widget._parameterNode
    assert widget.ui.seedPlaceWidget.current_node is parameters.seedNode
    assert widget.ui.explainButton.enabled
    assert parameters.bundle in widget.ui.bundleLabel.text and "Trained on" in widget.ui.bundleLabel.text
    assert widget.ui.methodComboBox.item_text[0] == "CycleGAN-AM"
    assert "red = malignancy-indicating" in widget.ui.methodComboBox.item_data[(0, TOOLTIP_ROLE)]
    parameters.inputVolume = None
    widget.onParameterNodeModified()
    assert not widget.ui.explainButton.enabled


def test_a_point_placed_in_the_scene_is_explained_and_the_labels_filled(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))  # the markups event reaches the widget's observer
    explain_now(widget)
    result = widget.controller.parameters.overlayVolume
    assert result is not None and not widget.dialogs.shown
    batch = widget.logic.explain(widget._parameterNode.inputVolume, nodule_ras, device="cpu").batch
    assert widget.ui.probabilityXLabel.text == probability_text(batch[0].p_x)
    assert widget.ui.probabilityPosLabel.text == probability_text(batch[0].p_pos)
    assert widget.ui.probabilityNegLabel.text == probability_text(batch[0].p_neg)
    assert widget.ui.deviceUsedLabel.text.startswith("cpu, ") and widget.ui.deviceUsedLabel.text.endswith(
        "for 1 patch(es)")
    assert "CycleGAN-AM" in widget.ui.methodUsedLabel.text and batch.bundle_name in widget.ui.methodUsedLabel.text
    assert widget.ui.legendLabel.text == legend_html("cyclegan-am")
    assert not widget._busyRow.visible


def test_dragging_the_point_restarts_the_debounce_through_the_observer(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))
    starts = widget.debounce.starts
    for step in range(3):
        seed.SetNthControlPointPositionWorld(0, *map(float, nodule_ras + [step, 0.0, 0.0]))
    assert widget.debounce.starts >= starts + 3


def test_an_error_is_one_dialog_with_its_reason_and_clears_the_labels(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))
    explain_now(widget)
    seed.SetNthControlPointPositionWorld(0, 500.0, 500.0, 500.0)
    explain_now(widget)
    [(kind, text)] = widget.dialogs.shown
    assert kind == "errorDisplay"
    assert text.startswith("Could not explain the seed point.\n\n") and "lies outside the volume" in text
    assert widget.ui.probabilityXLabel.text == "" and widget.ui.methodUsedLabel.text == ""


def test_declining_a_baselines_install_is_explained_in_a_message(widget, nodule_ras, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    widget.dialogs.answers = [False]
    widget._parameterNode.method = "occlusion"
    widget._parameterNode.seedNode.AddControlPointWorld(*map(float, nodule_ras))
    explain_now(widget)
    kinds = [kind for kind, _ in widget.dialogs.shown]
    assert kinds == ["confirmOkCancelDisplay", "infoDisplay"]
    assert "captum" in widget.dialogs.shown[0][1] and "back to CycleGAN-AM" in widget.dialogs.shown[1][1]
    assert widget._parameterNode.method == "cyclegan-am"
    np.testing.assert_equal(widget.ui.probabilityXLabel.text, "")
