"""The viewer's first view and wording, in-process on a real viewer (trame server not started): a
sample opens centred and zoomed on its documented nodule with its attribution, a user's CT whole;
views are named as a radiologist names them; clearing the result clears its status line; the seed
marker is a cross with an open centre that can be hidden. The browser tests check the same on the page's pixels."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from cyclegan_explain_web.slice_clicks import slice_xy_to_ras, view_plane_name
from CycleGANExplainLib.sample_data import (DEFAULT_SAMPLE, SYNTHETIC_SAMPLE, TCIA_SAMPLE, sample_notice,
                                           sample_volume_path)
from CycleGANExplainLib.volume_io import write_volume


@pytest.fixture(scope="module")
def viewer():
    app = viewer_module.ExplainViewer(server=get_server("first-view-test", client_type="vue3"), device="cpu")
    app.state.ready()
    return app


def slice_nodes(viewer):
    return {view_plane_name(view.get_view_node()): view.get_view_node()
            for view in viewer.slicer_app.view_manager.get_slice_views()}


def view_centre_ras(node) -> np.ndarray:
    width, height, _ = node.GetDimensions()
    return slice_xy_to_ras(node, (width / 2.0, height / 2.0))


def explain(viewer, ras, view_name: str = "axial") -> None:
    async def scenario():
        viewer.request_explanation(ras, view_name)
        while viewer._explaining:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())


def test_views_are_named_axial_coronal_sagittal(viewer):
    assert sorted(slice_nodes(viewer)) == ["axial", "coronal", "sagittal"]
    assert "axial, coronal or sagittal view" in viewer.ui.html
    for jargon in ("Red view", "Green view", "Yellow view", "any slice view"):
        assert jargon not in viewer.ui.html


@pytest.mark.parametrize("sample", [TCIA_SAMPLE, SYNTHETIC_SAMPLE])
def test_a_sample_opens_centred_and_zoomed_on_its_documented_nodule(viewer, sample):
    viewer.load_sample(sample)
    assert viewer.volume_node is not None, viewer.state.error_text
    nodule = viewer_module.sample_nodule_ras(sample=sample)
    for name, node in slice_nodes(viewer).items():
        # Every view passes through the nodule and has it at its centre ...
        np.testing.assert_allclose(view_centre_ras(node), nodule, atol=0.5, err_msg=name)
        # ... showing SAMPLE_FIELD_OF_VIEW_MM across its narrower side, not the whole CT.
        width, height, _ = node.GetFieldOfView()
        assert min(width, height) == pytest.approx(viewer_module.SAMPLE_FIELD_OF_VIEW_MM, rel=1e-6), name
    assert viewer.state.sample_notice == (sample_notice(sample) or "")
    assert sample in viewer.state.volume_text


def test_a_users_ct_opens_whole_on_its_middle_without_a_sample_attribution(viewer, tmp_path, lung_volume):
    viewer.load_sample(DEFAULT_SAMPLE)
    volume, ijk_to_ras = lung_volume  # 80 x 80 x 30 voxels of 1.5 x 1.5 x 2.5 mm around RAS (0, 0, 0)
    path = write_volume(volume, ijk_to_ras, tmp_path / "patient.nrrd")
    viewer.load_path(path)
    assert "patient" in viewer.state.volume_text and viewer.state.sample_notice == ""
    middle = (ijk_to_ras @ np.array([39.5, 39.5, 14.5, 1.0]))[:3]
    axial = slice_nodes(viewer)["axial"]
    np.testing.assert_allclose(view_centre_ras(axial)[:2], middle[:2], atol=1.0)
    width, height, _ = axial.GetFieldOfView()
    assert min(width, height) >= 80 * 1.5 - 1e-6  # the whole CT in view


def test_a_copy_of_the_sample_is_known_as_the_sample(viewer, tmp_path):
    import shutil

    copy = tmp_path / "ct.nrrd"
    shutil.copyfile(sample_volume_path(TCIA_SAMPLE), copy)
    viewer.load_path(copy)
    assert viewer.state.sample_notice == sample_notice(TCIA_SAMPLE)
    np.testing.assert_allclose(view_centre_ras(slice_nodes(viewer)["axial"]),
                               viewer_module.sample_nodule_ras(sample=TCIA_SAMPLE), atol=0.5)


def test_a_result_says_which_view_was_clicked_and_clearing_it_clears_its_status(viewer):
    viewer.load_sample(DEFAULT_SAMPLE)
    explain(viewer, viewer_module.sample_nodule_ras(), "coronal")
    assert viewer.state.has_result, viewer.state.error_text
    assert viewer.state.status_text == "Explained the point clicked in the coronal view."
    viewer.load_sample(SYNTHETIC_SAMPLE)  # another CT: the result and its status line go
    assert viewer.state.has_result is False and viewer.state.status_text == ""


def test_the_seed_marker_is_a_cross_with_an_open_centre_that_can_be_hidden(viewer):
    viewer.load_sample(DEFAULT_SAMPLE)
    explain(viewer, viewer_module.sample_nodule_ras())
    display = viewer.seed_node.GetDisplayNode()
    assert display.GetGlyphType() == display.Cross2D
    assert display.GetGlyphScale() == viewer_module.SEED_GLYPH_SCALE_PERCENT
    with viewer.state:
        viewer.state.seed_visible = False
    assert not display.GetVisibility()
    with viewer.state:
        viewer.state.seed_visible = True
    assert display.GetVisibility()
