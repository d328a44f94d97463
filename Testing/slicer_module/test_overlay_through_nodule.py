"""The overlay through the nodule on a real MRML scene: one volume node that the axial, coronal and sagittal
views draw over the slices it covers, and each slice's probabilities as plot nodes."""

from __future__ import annotations

import numpy as np
import pytest

from CycleGANExplainLib import mrml_overlay, mrml_probability_plot
from CycleGANExplainLib.overlay import TRANSPARENT_BELOW

HALF_EXTENT_MM = 4.0  # the synthetic CT's 2 mm slices: five slices, the seed's in the middle


def slice_view(scene_app, name: str, orientation: str):
    """A slice view's logic (as Slicer's layout makes one), oriented as named."""
    import slicer

    if name == "Red":
        return scene_app.red_logic
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene_app.scene)
    logic.SetMRMLApplicationLogic(scene_app.app_logic)
    logic.AddSliceNode(name)
    logic.GetSliceNode().SetOrientation(orientation)
    return logic


def composite(scene_app, logic, centre_ras, field_of_view_mm: float = 60.0, size_px: int = 240):
    """The view's composited RGB image [y, x, 3] centred on ``centre_ras`` and its XY-to-RAS matrix."""
    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    slice_node = logic.GetSliceNode()
    slice_node.SetDimensions(size_px, size_px, 1)
    slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm, 1.0)
    slice_node.JumpSliceByCentering(*map(float, centre_ras))
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3].astype(int)
    return pixels, slicer.util.arrayFromVTKMatrix(slice_node.GetXYToRAS())


def overlay_pixels(scene_app, logic, result, volume, centre_ras) -> "tuple[np.ndarray, np.ndarray]":
    """Where the overlay changes the view's image (its opacity 1 against 0), and each pixel's RAS [y, x, 3]."""
    shown = {}
    for opacity in (1.0, 0.0):  # the same layers, only the overlay's opacity changes
        mrml_overlay.show_in_slice_views(scene_app.scene, result.overlay_node, volume, opacity)
        shown[opacity], xy_to_ras = composite(scene_app, logic, centre_ras)
    changed = np.any(shown[1.0] != shown[0.0], axis=-1)
    height, width = changed.shape
    y, x = np.mgrid[0:height, 0:width]
    ras = np.stack([x, y, np.zeros_like(x), np.ones_like(x)], axis=-1) @ xy_to_ras.T
    return changed, ras[..., :3]


@pytest.fixture
def explained(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    result = module.CycleGANExplainLogic().explain(volume, nodule_ras, device="cpu", halfExtentMm=HALF_EXTENT_MM)
    return volume, result


def test_the_overlay_is_the_stack_of_slices_through_the_nodule(explained, nodule_ras):
    import slicer
    import vtk

    _, result = explained
    stack = result.stack
    np.testing.assert_allclose(stack.offsets_mm, [-4.0, -2.0, 0.0, 2.0, 4.0])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result.overlay_node), stack.relevance)
    ijk_to_ras = vtk.vtkMatrix4x4()
    result.overlay_node.GetIJKToRASMatrix(ijk_to_ras)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijk_to_ras), stack.stack_to_ras, atol=1e-9)
    assert result.central_index == stack.centre_index == 2 and result.batch[2] is stack.centre
    np.testing.assert_allclose(stack.centre.seed_ras, nodule_ras)


@pytest.mark.parametrize("name, orientation, axis", [("Yellow", "Sagittal", 0), ("Green", "Coronal", 1)])
def test_coronal_and_sagittal_views_show_the_overlay_over_the_stacks_extent(
        name, orientation, axis, explained, scene_app, nodule_ras):
    volume, result = explained
    logic = slice_view(scene_app, name, orientation)
    changed, ras = overlay_pixels(scene_app, logic, result, volume, nodule_ras)
    assert changed.sum() > 100
    heights = ras[..., 2][changed] - nodule_ras[2]
    # The stack spans -4 .. +4 mm of slice centres, each 2 mm thick: -5 .. +5 mm along S; one slice is +/-1 mm.
    assert heights.min() >= -5.0 - 0.3 and heights.max() <= 5.0 + 0.3
    assert heights.min() < -3.5 and heights.max() > 3.5
    # In-plane it covers the 45 mm patch around the seed along the view's own axis.
    across = ras[..., 1 - axis][changed] - nodule_ras[1 - axis]
    assert np.abs(across).max() <= 22.5 + 0.3


def test_the_axial_view_shows_each_slice_while_scrolling_and_nothing_beyond(explained, scene_app, nodule_ras):
    volume, result = explained
    stack = result.stack
    for offset in (-6.0, -4.0, 0.0, 2.0, 4.0, 6.0):
        changed, _ = overlay_pixels(scene_app, scene_app.red_logic, result, volume, nodule_ras + [0.0, 0.0, offset])
        if abs(offset) > HALF_EXTENT_MM + 1.0:
            assert not changed.any(), offset
        else:
            k = int(np.flatnonzero(np.isclose(stack.offsets_mm, offset))[0])
            shown = np.abs(stack.relevance[k]) >= TRANSPARENT_BELOW * mrml_overlay.overlay_limit(result.overlay_node)
            assert changed.any() == shown.any(), offset


def test_each_slices_probabilities_are_plot_nodes_updated_in_place(module, explained, scene_app, synthetic_ct,
                                                                   nodule_ras):
    import slicer

    volume, result = explained
    logic = module.CycleGANExplainLogic()
    view = logic.showSliceProbabilities(result.stack)
    chart = scene_app.scene.GetNodeByID(view.GetPlotChartNodeID())
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    table_node = chart.GetNthPlotSeriesNode(0).GetTableNode()
    columns = {table_node.GetTable().GetColumn(index).GetName(): slicer.util.arrayFromTableColumn(table_node,
               table_node.GetTable().GetColumn(index).GetName()) for index in range(table_node.GetNumberOfColumns())}
    np.testing.assert_allclose(columns[mrml_probability_plot.OFFSET_COLUMN], result.stack.offsets_mm)
    for attribute in ("p_x", "p_neg", "p_pos"):
        np.testing.assert_allclose(columns[attribute], getattr(result.stack, attribute))
    series = {chart.GetNthPlotSeriesNode(index).GetYColumnName(): chart.GetNthPlotSeriesNode(index)
              for index in range(3)}
    assert series["p_neg"].GetName() == "p(G\u207b(x))" and series["p_neg"].GetXColumnName() == "offset_mm"
    assert chart.GetYAxisRange()[0] == 0.0 and chart.GetYAxisRange()[1] == 1.0
    # Another nodule, fewer slices: the same nodes, the table rewritten.
    count = scene_app.scene.GetNumberOfNodes()
    other = logic.explain(volume, nodule_ras + [3.0, 0.0, 0.0], device="cpu", halfExtentMm=2.0)
    assert logic.showSliceProbabilities(other.stack) is view
    assert scene_app.scene.GetNumberOfNodes() == count
    assert table_node.GetNumberOfRows() == 3
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table_node, "p_x"), other.stack.p_x)
    mrml_probability_plot.remove_probability_plot(scene_app.scene)
    assert scene_app.scene.GetNumberOfNodes() == count - 6
