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

from CycleGANExplainLib.caveats import G_POS_NOT_MALIGNANT, explanation_caveats
from CycleGANExplainLib.explain_controller import ExplainController
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.overlay import legend_html

from .qt_stand_ins import ManualTimer, PlotWidget, panel_widgets

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
    made._plotWidget = PlotWidget()
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
    again = widget.logic.explain(widget._parameterNode.inputVolume, nodule_ras, device="cpu")
    batch, seed_slice = again.batch, again.stack.centre  # the panel's default: +/-10 mm through the nodule
    assert widget.ui.probabilityXLabel.text == probability_text(seed_slice.p_x)
    assert widget.ui.probabilityPosLabel.text == probability_text(seed_slice.p_pos)
    assert widget.ui.probabilityNegLabel.text == probability_text(seed_slice.p_neg)
    assert widget.ui.deviceUsedLabel.text.startswith("cpu, ") and widget.ui.deviceUsedLabel.text.endswith(
        "for 11 patch(es)")  # the synthetic CT's 2 mm slices from -10 to +10 mm
    # The slices' probabilities in the panel's plot: its view node shows the chart of this nodule's table.
    assert widget._plotWidget.visible
    chart = widget._plotWidget.view_node.GetScene().GetNodeByID(widget._plotWidget.view_node.GetPlotChartNodeID())
    assert chart.GetNthPlotSeriesNode(0).GetTableNode().GetNumberOfRows() == 11
    assert "CycleGAN-AM" in widget.ui.methodUsedLabel.text and batch.bundle_name in widget.ui.methodUsedLabel.text
    assert widget.ui.legendLabel.text == legend_html("cyclegan-am")
    assert not widget._busyRow.visible


# In the synthetic CT, beside the nodule's lung: the shipped default bundle's G+(x) stops at p about 0.29.
G_POS_FAILS_RAS = np.array([24.0, -10.0, 22.0])


def test_the_panel_says_when_a_counterfactual_did_not_reach_the_other_class(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))
    explain_now(widget)
    assert "did not reach" not in widget.ui.warningsLabel.text
    drag_with_the_mouse(seed, 0, [G_POS_FAILS_RAS])
    explain_now(widget)
    explanation = widget.logic.explain(widget._parameterNode.inputVolume, G_POS_FAILS_RAS, device="cpu").stack.centre
    [caveat] = explanation_caveats(explanation, "cyclegan-am")
    assert caveat.code == G_POS_NOT_MALIGNANT
    assert caveat.text.startswith(f"G+(x) did not reach malignant (p = {probability_text(explanation.p_pos)}")
    assert widget.ui.warningsLabel.text.splitlines()[0] == caveat.text


IDENTITY_ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def place_with_the_mouse(node, hovered, ras) -> int:
    """What Place mode does (vtkSlicerMarkupsWidget): a preview point follows the mouse over ``hovered``
    positions (its display node's UpdateActiveControlPointWorld), and the click defines it at ``ras``."""
    import slicer

    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    event, index = slicer.vtkMRMLInteractionEventData(), -1
    for position in [*hovered, ras]:
        event.SetWorldPosition([float(value) for value in position])
        index = node.GetDisplayNode().UpdateActiveControlPointWorld(index, event, IDENTITY_ORIENTATION, "", "",
                                                                    node.PositionPreview)
    node.SetNthControlPointPositionWorld(index, *map(float, ras))
    return index


def drag_with_the_mouse(node, index: int, positions) -> None:
    """What vtkSlicerMarkupsWidget does when a point is dragged: the moving point's index in an
    attribute, the start event, one move per mouse move, the end event, the attribute cleared."""
    import slicer

    moving = slicer.vtkMRMLMarkupsDisplayNode.GetMovingMarkupIndexAttributeName()
    node.SetAttribute(moving, str(index))
    node.InvokeCustomModifiedEvent(node.PointStartInteractionEvent)
    for position in positions:
        node.SetNthControlPointPositionWorld(index, *map(float, position))
    node.InvokeCustomModifiedEvent(node.PointEndInteractionEvent)
    node.SetAttribute(moving, "")


def explained_ras(widget) -> np.ndarray:
    import slicer
    import vtk

    overlay = widget._parameterNode.overlayVolume
    matrix = vtk.vtkMatrix4x4()
    overlay.GetIJKToRASMatrix(matrix)
    # The seed's slice is the middle one of the stack: these seeds lie far from the CT's first and last slices.
    middle = (overlay.GetImageData().GetDimensions()[2] - 1) / 2
    return (slicer.util.arrayFromVTKMatrix(matrix) @ [31.5, 31.5, middle, 1.0])[:3]


def test_hovering_in_place_mode_and_label_changes_request_nothing(widget, nodule_ras):
    import slicer

    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))
    starts = widget.debounce.starts
    display = seed.GetDisplayNode()
    event = slicer.vtkMRMLInteractionEventData()
    index = -1
    for step in range(5):  # Place mode: the preview point follows the mouse
        event.SetWorldPosition([float(value) for value in nodule_ras + [step, 0.0, 0.0]])
        index = display.UpdateActiveControlPointWorld(index, event, IDENTITY_ORIENTATION, "", "", seed.PositionPreview)
    seed.SetNthControlPointLabel(0, "nodule")
    seed.SetNthControlPointSelected(0, False)
    seed.SetNthControlPointLocked(0, True)
    assert widget.debounce.starts == starts
    assert seed.GetNumberOfControlPoints() == 2, "the preview point is left to the markups widget"


def test_placing_and_the_end_of_a_drag_explain_once_each(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    index = place_with_the_mouse(seed, [nodule_ras + [9.0, 0.0, 0.0], nodule_ras + [5.0, 0.0, 0.0]], nodule_ras)
    assert widget.debounce.starts == 1
    explain_now(widget)
    np.testing.assert_allclose(explained_ras(widget), nodule_ras, atol=1e-6)
    target = nodule_ras + [2.0, 1.0, 0.0]
    drag_with_the_mouse(seed, index, [nodule_ras + [1.0, 0.0, 0.0], nodule_ras + [2.0, 0.5, 0.0], target])
    assert widget.debounce.starts == 2
    explain_now(widget)
    np.testing.assert_allclose(explained_ras(widget), target, atol=1e-6)


def test_a_users_point_list_keeps_its_points_and_its_chosen_point_is_explained(widget, scene_app, nodule_ras):
    users = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my nodules")
    positions = [nodule_ras + [0.0, 0.0, float(offset)] for offset in (-6, -4, -2, 2, 4)]
    for position in positions:
        users.AddControlPointWorld(*map(float, position))
    widget._parameterNode.seedNode = users
    widget.onParameterNodeModified()  # the parameter node's observer, as in Slicer
    index = place_with_the_mouse(users, [nodule_ras + [3.0, 0.0, 0.0]], nodule_ras)
    explain_now(widget)
    np.testing.assert_allclose(explained_ras(widget), nodule_ras, atol=1e-6)
    drag_with_the_mouse(users, 3, [positions[3] + [1.0, 0.0, 0.0]])
    explain_now(widget)
    np.testing.assert_allclose(explained_ras(widget), positions[3] + [1.0, 0.0, 0.0], atol=1e-6)
    assert users.GetNumberOfControlPoints() == 6 and index == 5
    for point, position in enumerate(positions[:3] + [positions[3] + [1.0, 0.0, 0.0]] + positions[4:] + [nodule_ras]):
        np.testing.assert_allclose(users.GetNthControlPointPositionWorld(point), position, atol=1e-6)


def test_deleting_the_explained_point_takes_its_overlay_out_of_the_views(widget, scene_app, nodule_ras):
    seed = widget._parameterNode.seedNode
    place_with_the_mouse(seed, [], nodule_ras)
    explain_now(widget)
    composite = scene_app.red_logic.GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == widget._parameterNode.overlayVolume.GetID()
    seed.RemoveNthControlPoint(0)
    assert composite.GetForegroundVolumeID() is None
    assert widget.ui.probabilityXLabel.text == "" and not widget.debounce.active


def test_deleting_another_point_of_a_users_list_keeps_the_overlay(widget, scene_app, nodule_ras):
    users = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my nodules")
    users.AddControlPointWorld(*map(float, nodule_ras + [0.0, 0.0, 4.0]))
    widget._parameterNode.seedNode = users
    widget.onParameterNodeModified()
    place_with_the_mouse(users, [], nodule_ras)
    explain_now(widget)
    users.RemoveNthControlPoint(0)  # not the explained point: its index shifts, its overlay stays
    composite = scene_app.red_logic.GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == widget._parameterNode.overlayVolume.GetID()
    assert widget.ui.probabilityXLabel.text != ""


def test_an_error_is_one_dialog_with_its_reason_and_clears_the_labels(widget, nodule_ras):
    seed = widget._parameterNode.seedNode
    seed.AddControlPointWorld(*map(float, nodule_ras))
    explain_now(widget)
    drag_with_the_mouse(seed, 0, [(500.0, 500.0, 500.0)])
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


def test_entering_with_a_saved_scenes_unavailable_bundle_binds_the_default_and_says_so_once(widget, module,
                                                                                          monkeypatch):
    parameters = widget._parameterNode
    parameters.bundle, parameters.method = "bundle-not-installed", "method-removed"
    bound = []  # what the GUI binding would show (connect_gui needs Qt widgets: recorded instead)
    monkeypatch.setitem(vars(module), "connect_gui",
                        lambda node, ui: bound.append((node.method, node.bundle)) or len(bound))
    monkeypatch.setattr(widget.logic, "getParameterNode", lambda: parameters)  # the stand-in keeps no values
    # The wrapper's own methods, as Slicer's wrapper has them (the stand-in lacks them).
    parameters.disconnectGui = lambda tag: None
    parameters.AddObserver, parameters.RemoveObserver = (parameters.parameterNode.AddObserver,
                                                         parameters.parameterNode.RemoveObserver)
    widget._parameterNode = None  # the fixture bound it without the observer setParameterNode adds
    widget.initializeParameterNode()
    widget.initializeParameterNode()  # entering the module again
    assert bound == [(module.DEFAULT_METHOD, module.default_bundle_dir().name)] * 2
    [(kind, text)] = widget.dialogs.shown
    assert kind == "infoDisplay" and "bundle-not-installed" in text and "method-removed" in text


def test_the_overlay_is_not_offered_as_a_ct_to_explain(widget, nodule_ras):
    widget._parameterNode.seedNode.AddControlPointWorld(*map(float, nodule_ras))
    assert widget.ui.inputVolumeSelector.filter.hiddenNodeIDs == []
    explain_now(widget)
    widget.onParameterNodeModified()  # the parameter node's observer, as in Slicer
    overlay = widget._parameterNode.overlayVolume
    assert widget.ui.inputVolumeSelector.filter.hiddenNodeIDs == [overlay.GetID()]
