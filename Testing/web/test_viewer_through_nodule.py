"""The web viewer's overlay through the nodule, in-process on a real viewer (trame server not started): one
volume over the slices through the nodule, drawn in the axial view on each of them while scrolling and in the
coronal and sagittal views over the stack's extent along S."""

from __future__ import annotations

import numpy as np
import pytest

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib import mrml_overlay
from CycleGANExplainLib.nodule_stack import DEFAULT_HALF_EXTENT_MM
from CycleGANExplainLib.overlay import TRANSPARENT_BELOW
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE

STEP_MM = 2.5  # the synthetic sample's slice spacing


@pytest.fixture(scope="module")
def explained(synthetic_viewer, explain_in):
    app = synthetic_viewer
    ras = viewer_module.sample_nodule_ras("N2", SYNTHETIC_SAMPLE)
    explain_in(app, ras)
    assert app.state.has_result, app.state.error_text
    return app, ras


def overlay_changes(app, view, slice_value=None) -> "tuple[np.ndarray, np.ndarray]":
    """Pixels of ``view`` that the overlay changes (opacity 1 against 0) and each pixel's RAS."""
    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    if slice_value is not None:
        view.set_slice_value(slice_value)
    images = []
    for opacity in (1.0, 0.0):
        mrml_overlay.show_in_slice_views(app.scene, app.overlay_node, app.volume_node, opacity)
        producer = view._logic.GetImageDataConnection().GetProducer()  # what the view renders
        producer.Update()
        image = producer.GetOutputDataObject(0)
        width, height, _ = image.GetDimensions()
        images.append(vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3].astype(int))
    changed = np.any(images[0] != images[1], axis=-1)
    y, x = np.mgrid[0:changed.shape[0], 0:changed.shape[1]]
    xy_to_ras = slicer.util.arrayFromVTKMatrix(view.get_view_node().GetXYToRAS())
    ras = np.stack([x, y, np.zeros_like(x), np.ones_like(x)], axis=-1) @ xy_to_ras.T
    return changed, ras[..., :3]


def views(app) -> dict:
    return {view.get_orientation(): view for view in app.slicer_app.view_manager.get_slice_views()}


def test_the_overlay_is_one_volume_through_the_nodule_in_every_view(explained):
    import slicer

    app, ras = explained
    relevance = slicer.util.arrayFromVolume(app.overlay_node)
    slices = 2 * int(DEFAULT_HALF_EXTENT_MM / STEP_MM) + 1
    assert relevance.shape == (slices, 64, 64)
    assert {view.get_foreground_volume_id() for view in views(app).values()} == {app.overlay_node.GetID()}


def test_the_axial_view_shows_the_slice_scrolled_to_and_nothing_beyond(explained):
    import slicer

    app, ras = explained
    relevance = slicer.util.arrayFromVolume(app.overlay_node)
    threshold = TRANSPARENT_BELOW * mrml_overlay.overlay_limit(app.overlay_node)
    axial = views(app)["Axial"]
    centre = len(relevance) // 2
    for k in (0, centre - 1, centre + 2, len(relevance) - 1):
        changed, _ = overlay_changes(app, axial, ras[2] + (k - centre) * STEP_MM)
        assert changed.any() == bool((np.abs(relevance[k]) >= threshold).any()), k
    changed, _ = overlay_changes(app, axial, ras[2] + DEFAULT_HALF_EXTENT_MM + 2 * STEP_MM)
    assert not changed.any()


@pytest.mark.parametrize("orientation", ["Coronal", "Sagittal"])
def test_coronal_and_sagittal_views_show_it_over_the_stacks_extent(orientation, explained):
    import slicer

    app, ras = explained
    view = views(app)[orientation]
    slicer.vtkMRMLSliceNode.JumpAllSlices(app.scene, *map(float, ras), slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    changed, pixels_ras = overlay_changes(app, view)
    heights = pixels_ras[..., 2][changed] - ras[2]
    reach = DEFAULT_HALF_EXTENT_MM + STEP_MM / 2  # the outer slices' half thickness
    assert changed.sum() > 50
    assert heights.min() >= -reach - 1.0 and heights.max() <= reach + 1.0
    assert heights.min() < -reach + STEP_MM and heights.max() > reach - STEP_MM  # more than one slice
