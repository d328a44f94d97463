"""The one VTK deprecation notice the web viewer hides (trame-slicer's views observe the
interactor's WindowResizeEvent), in-process: only that message is hidden, other VTK warnings and
errors still reach stderr, and the viewer's own resize observer needs no hiding."""

from __future__ import annotations

import pytest
from trame.app import get_server
from vtkmodules.vtkCommonCore import vtkCommand, vtkOutputWindow, vtkPoints
from vtkmodules.vtkCommonTransforms import vtkTransform
from vtkmodules.vtkRenderingCore import vtkRenderWindowInteractor

from cyclegan_explain_web import viewer as viewer_module
from cyclegan_explain_web.vtk_warnings import INTERACTOR_RESIZE_DEPRECATION, hidden_vtk_warnings

DEPRECATED = "WindowResizeEvent"


def trigger_vtk_messages() -> None:
    """The hidden notice, an unrelated VTK warning and a VTK error."""
    vtkRenderWindowInteractor().AddObserver(vtkCommand.WindowResizeEvent, lambda *_: None)
    vtkPoints().SetDataType(99)  # "Unsupported data type: 99! Setting to VTK_DOUBLE"
    transform = vtkTransform()
    transform.SetInput(transform)  # "this would create a circular reference"


# DEFAULT: VTK's own; ALWAYS_STDERR: what the viewer runs with once trame-slicer is imported.
@pytest.mark.parametrize("mode", [vtkOutputWindow.DEFAULT, vtkOutputWindow.ALWAYS_STDERR])
def test_only_the_named_message_is_hidden_and_settings_are_restored(capfd, mode):
    window = vtkOutputWindow.GetInstance()
    previous_mode = window.GetDisplayMode()
    window.SetDisplayMode(mode)
    try:
        capfd.readouterr()
        with hidden_vtk_warnings(INTERACTOR_RESIZE_DEPRECATION):
            trigger_vtk_messages()
        inside = capfd.readouterr().err
        assert DEPRECATED not in inside
        assert "Unsupported data type: 99" in inside and "circular reference" in inside
        assert window.GetDisplayMode() == mode

        trigger_vtk_messages()  # outside the block: shown again
        assert DEPRECATED in capfd.readouterr().err
    finally:
        window.SetDisplayMode(previous_mode)


def test_the_viewer_starts_without_the_notice_and_refits_a_resized_view(capfd, monkeypatch):
    capfd.readouterr()
    viewer = viewer_module.ExplainViewer(server=get_server("vtk-warnings-test", client_type="vue3"), device="cpu")
    viewer.load_sample()
    assert viewer.volume_node is not None, viewer.state.error_text
    assert DEPRECATED not in capfd.readouterr().err

    # What the browser's resize of a view does (trame-rca's UpdateSize sets the render window's size).
    fitted = []
    real_fit = viewer._fit_view
    monkeypatch.setattr(viewer, "_fit_view", lambda view: fitted.append(view) or real_fit(view))
    axial = viewer.slicer_app.view_manager.get_slice_views()[0]
    axial.interactor().UpdateSize(520, 410)
    assert fitted == [axial]
    assert tuple(axial.get_view_node().GetDimensions())[:2] == (520, 410)
