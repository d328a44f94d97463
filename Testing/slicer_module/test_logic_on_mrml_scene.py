"""The module's Logic on a real MRML scene (slicer-core): overlay geometry, nodes, errors, pixels."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from CycleGANExplainLib import mrml_overlay
from CycleGANExplainLib.model_bundle import BundleIntegrityError, default_bundle_dir
from CycleGANExplainLib.mrml_explain import NoInputVolumeError, volume_array_and_geometry
from CycleGANExplainLib.overlay import COLOUR_TABLE_LEVELS, TRANSPARENT_BELOW, relevance_to_rgba
from CycleGANExplainLib.patch_sampling import SeedOutsideVolumeError, extract_patch
from CycleGANExplainLib.volume_checks import NotCTError


def overlay_ijk_to_ras(node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def role_nodes(scene, role: str) -> list:
    return [
        scene.GetNthNode(index)
        for index in range(scene.GetNumberOfNodes())
        if scene.GetNthNode(index).GetAttribute(mrml_overlay.ROLE_ATTRIBUTE) == role
    ]


def test_overlay_slices_lie_on_extract_patch_geometry(module, scene_app, synthetic_ct, nodule_ras):
    import slicer

    volume = scene_app.load_volume(synthetic_ct)
    seed_node = scene_app.seed_node(nodule_ras)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, logic.seedPosition(seed_node), device="cpu", halfExtentMm=4.0)

    voxels, ijk_to_ras = volume_array_and_geometry(volume)
    overlay_matrix = overlay_ijk_to_ras(result.overlay_node)
    relevance = slicer.util.arrayFromVolume(result.overlay_node)
    assert relevance.shape == (5, 64, 64)  # the seed and two slices either side, all inside
    column, row = np.meshgrid([0, 17, 63], [0, 40, 63])
    for k, explanation in enumerate(result.batch):
        patch = extract_patch(voxels, ijk_to_ras, explanation.seed_ras)
        index = np.stack([column.ravel(), row.ravel(), np.zeros(column.size), np.ones(column.size)])
        expected = patch.patch_to_ras @ index
        index[2] = k
        np.testing.assert_allclose(overlay_matrix @ index, expected, atol=1e-6)
        np.testing.assert_array_equal(explanation.patch_hu, patch.pixels)
        np.testing.assert_allclose(relevance[k], explanation.relevance, atol=1e-7)
    np.testing.assert_allclose(result.batch[result.central_index].seed_ras, nodule_ras, atol=1e-9)
    # Neighbours are one CT slice (2 mm along S) apart at the seed's R and A.
    seeds = np.array([explanation.seed_ras for explanation in result.batch])
    np.testing.assert_allclose(np.diff(seeds, axis=0), [[0.0, 0.0, 2.0]] * 4, atol=1e-9)


def test_self_test_checks_pass_on_synthetic_ct(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    seed_node = scene_app.seed_node(nodule_ras)
    # A sphere in synthetic lung, not a documented nodule of the sample: no probability-order check.
    result = module.CycleGANExplainTest().checkExplanation(volume, seed_node, halfExtentMm=2.0,
                                                           documentedNodule=False)
    composites = [scene_app.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(0)]
    assert composites[0].GetForegroundVolumeID() == result.overlay_node.GetID()
    assert composites[0].GetBackgroundVolumeID() == volume.GetID()


def test_seed_near_the_top_drops_neighbours_outside_the_volume(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    top_slice_ras = np.array([nodule_ras[0], nodule_ras[1], 46.0])  # last slice of 24 at 2 mm
    result = module.CycleGANExplainLogic().explain(volume, top_slice_ras, device="cpu", halfExtentMm=4.0)
    assert len(result.batch) == 3
    assert result.central_index == 2


def test_saved_and_reloaded_overlay_keeps_its_geometry(module, scene_app, synthetic_ct, nodule_ras, tmp_path):
    import slicer

    volume = scene_app.load_volume(synthetic_ct)
    result = module.CycleGANExplainLogic().explain(volume, nodule_ras, device="cpu", halfExtentMm=2.0)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene_app.scene.AddNode(storage)
    path = tmp_path / "relevance.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(result.overlay_node) == 1
    reloaded = scene_app.load_volume(path, "reloaded")
    np.testing.assert_allclose(overlay_ijk_to_ras(reloaded), overlay_ijk_to_ras(result.overlay_node), atol=1e-6)
    np.testing.assert_array_equal(
        slicer.util.arrayFromVolume(reloaded), slicer.util.arrayFromVolume(result.overlay_node)
    )


def test_closing_the_scene_removes_the_overlay_and_the_next_explain_recreates_it(
    module, scene_app, synthetic_ct, nodule_ras
):
    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    logic.explain(volume, nodule_ras, device="cpu")
    assert len(role_nodes(scene_app.scene, mrml_overlay.OVERLAY_ROLE)) == 1
    scene_app.scene.Clear(0)
    assert role_nodes(scene_app.scene, mrml_overlay.OVERLAY_ROLE) == []
    assert role_nodes(scene_app.scene, mrml_overlay.COLOUR_ROLE) == []
    volume = scene_app.load_volume(synthetic_ct)
    second = logic.explain(volume, nodule_ras, device="cpu")
    assert len(role_nodes(scene_app.scene, mrml_overlay.OVERLAY_ROLE)) == 1
    assert second.overlay_node.GetScene() is scene_app.scene


def test_errors_name_what_is_wrong(module, scene_app, synthetic_ct, nodule_ras, tmp_path):
    import slicer

    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    with pytest.raises(NoInputVolumeError, match="Select an input CT volume"):
        logic.explain(None, nodule_ras)
    with pytest.raises(SeedOutsideVolumeError, match=r"\(R, A, S\) = \(12\.0, -8\.0, 300\.0\) mm lies outside"):
        logic.explain(volume, [nodule_ras[0], nodule_ras[1], 300.0])
    with pytest.raises(ValueError, match="Place the seed"):
        logic.seedPosition(scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))

    voxels, ijk_to_ras = volume_array_and_geometry(volume)
    mr_like = slicer.util.addVolumeFromArray((voxels.astype(np.float32) + 1000.0) / 2000.0, ijk_to_ras, "MR-like")
    with pytest.raises(NotCTError, match="contains air"):
        logic.explain(mr_like, nodule_ras)

    tampered = tmp_path / "tampered"
    shutil.copytree(default_bundle_dir(), tampered)
    weights = bytearray((tampered / "generator_pos.pt").read_bytes())
    weights[-100] ^= 0xFF
    (tampered / "generator_pos.pt").write_bytes(bytes(weights))
    with pytest.raises(BundleIntegrityError, match="generator_pos.pt does not match its SHA-256"):
        module.CycleGANExplainLogic(tampered).explain(volume, nodule_ras, device="cpu")
    assert role_nodes(scene_app.scene, mrml_overlay.OVERLAY_ROLE) == []  # nothing half-made


def test_composited_slice_shows_relevance_where_r_is_large(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, nodule_ras, device="cpu")
    logic.showOverlay(result.overlay_node, volume, opacity=1.0)
    image, xy_to_ras = scene_app.composite_axial_slice(nodule_ras)

    explanation = result.stack.centre  # the slice the axial view shows: the seed's
    relevance = explanation.relevance
    limit = mrml_overlay.overlay_limit(result.overlay_node)
    # Where |R| is largest, and the strongest pixel of the other sign, if any is strong enough.
    strongest = np.unravel_index(np.argmax(np.abs(relevance)), relevance.shape)
    opposite = np.unravel_index(np.argmin(relevance * np.sign(relevance[strongest])), relevance.shape)
    checked = 0
    for row, column in (strongest, opposite):
        value = float(relevance[row, column])
        if abs(value) < 0.5 * limit:  # strong enough to tell red from blue at a glance
            continue
        ras = (explanation.patch_to_ras @ [column, row, 0.0, 1.0])[:3]
        x, y = scene_app.ras_to_slice_xy(xy_to_ras, ras)
        red, _, blue = image[y, x, :3].astype(int)
        expected = relevance_to_rgba(np.array(value), limit)
        if value > 0:
            assert red - blue > 60, (value, image[y, x], expected)
        else:
            assert blue - red > 60, (value, image[y, x], expected)
        checked += 1
    assert checked >= 1


def test_colour_table_paints_red_blue_and_lets_near_zero_through(scene_app, synthetic_ct, nodule_ras):
    """A designed relevance map (left half benign, centre zero, right half malignant) on the view."""
    from CycleGANExplainLib.patch_sampling import patch_to_ras_matrix

    volume = scene_app.load_volume(synthetic_ct)
    relevance = np.zeros((64, 64), dtype=np.float32)
    relevance[:, :24] = -0.5  # columns run towards patient left
    relevance[:, 40:] = 0.5
    explanation = SimpleNamespace(relevance=relevance, patch_to_ras=patch_to_ras_matrix(nodule_ras))
    overlay = mrml_overlay.update_overlay_node(scene_app.scene, explanation.relevance[None], explanation.patch_to_ras,
                                               source_volume=volume)
    mrml_overlay.show_in_slice_views(scene_app.scene, overlay, volume, opacity=1.0)
    image, xy_to_ras = scene_app.composite_axial_slice(nodule_ras)

    def pixel_at(column: int, row: int) -> np.ndarray:
        x, y = scene_app.ras_to_slice_xy(xy_to_ras, (explanation.patch_to_ras @ [column, row, 0.0, 1.0])[:3])
        return image[y, x, :3].astype(int)

    benign, zero, malignant = pixel_at(10, 32), pixel_at(32, 20), pixel_at(54, 32)
    assert benign[2] - benign[0] > 60, benign
    assert malignant[0] - malignant[2] > 60, malignant
    assert np.ptp(zero) <= 2, zero  # the grey CT shows through


def test_slicers_display_pipeline_draws_the_shared_colour_table_and_alpha(scene_app, synthetic_ct, nodule_ras):
    """Every entry of the colour table through vtkMRMLScalarVolumeDisplayNode's own pipeline, fed as
    vtkMRMLSliceLayerLogic feeds it (the resliced image and the reslice's stencil output): the RGBA
    Slicer draws is relevance_to_rgba's, which the CLI and the web viewer draw and the legend describes."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    from CycleGANExplainLib.patch_sampling import patch_to_ras_matrix

    volume = scene_app.load_volume(synthetic_ct)
    levels = COLOUR_TABLE_LEVELS
    # One value a quarter of an entry past each entry's start: the same entry however an index is rounded.
    entries = np.resize(np.arange(levels - 1), 64 * 64)
    fraction = (entries + 0.25) / (levels - 1) * 2.0 - 1.0
    relevance = (fraction * 0.4).reshape(64, 64).astype(np.float32)
    relevance[0, ::2], relevance[0, 1::2] = -0.4, 0.4  # over 0.5 % of the map: the display limit is 0.4
    explanation = SimpleNamespace(relevance=relevance, patch_to_ras=patch_to_ras_matrix(nodule_ras))
    overlay = mrml_overlay.update_overlay_node(scene_app.scene, explanation.relevance[None], explanation.patch_to_ras,
                                               source_volume=volume)
    limit = mrml_overlay.overlay_limit(overlay)
    assert limit == pytest.approx(0.4, rel=1e-6)

    reslice = vtk.vtkImageReslice()  # identity: the axial slice lies on the overlay's own grid
    reslice.SetInputConnection(overlay.GetImageDataConnection())
    reslice.GenerateStencilOutputOn()
    display = overlay.GetScalarVolumeDisplayNode()
    display.SetInputImageDataConnection(reslice.GetOutputPort(0))
    display.SetBackgroundImageStencilDataConnection(reslice.GetOutputPort(1))
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    drawn = vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars()).reshape(64, 64, 4)

    expected = relevance_to_rgba(relevance, limit)
    np.testing.assert_array_equal(drawn[..., 3], expected[..., 3])
    assert np.abs(drawn[..., :3].astype(int) - expected[..., :3]).max() <= 1
    shown = drawn[..., 3] > 0
    assert set(np.unique(drawn[..., 3])) == {0, 255}
    entry = 2.0 * limit / (levels - 1)  # the width of one table entry, in R
    assert np.abs(relevance[~shown]).max() < TRANSPARENT_BELOW * limit + entry
    assert np.abs(relevance[shown]).min() > TRANSPARENT_BELOW * limit - entry
    # The faintest colour drawn is a tint, not near-white: weak relevance is no white haze over the CT.
    assert np.ptp(drawn[shown][:, :3].astype(int), axis=1).min() > 40


def test_reexplaining_updates_the_same_nodes(module, scene_app, synthetic_ct, nodule_ras):
    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    first = logic.explain(volume, nodule_ras, device="cpu", halfExtentMm=2.0)
    count = scene_app.scene.GetNumberOfNodes()
    moved = nodule_ras + np.array([3.0, -2.0, 0.0])
    second = logic.explain(volume, moved, device="cpu", halfExtentMm=0.0)
    assert second.overlay_node is first.overlay_node
    assert scene_app.scene.GetNumberOfNodes() == count
    centre = overlay_ijk_to_ras(second.overlay_node) @ [31.5, 31.5, 0.0, 1.0]
    np.testing.assert_allclose(centre[:3], moved, atol=1e-6)


def test_a_new_click_moves_the_seed_instead_of_adding_a_point(module, scene_app, nodule_ras):
    logic = module.CycleGANExplainLogic()
    seed = logic.createSeedNode()
    assert seed.GetMaximumNumberOfControlPoints() < 1, "a maximum would disable Place once the seed is placed"
    logic.placeSeed(seed, nodule_ras)
    assert not logic.keepNewestSeed(seed)
    seed.AddControlPointWorld(1.0, 2.0, 3.0)  # what a click with Place adds
    assert logic.keepNewestSeed(seed)
    assert seed.GetNumberOfControlPoints() == 1
    np.testing.assert_allclose(logic.seedPosition(seed), [1.0, 2.0, 3.0])
    assert not logic.keepNewestSeed(seed)


def test_a_users_point_list_is_never_edited(module, scene_app, nodule_ras):
    logic = module.CycleGANExplainLogic()
    users = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my nodules")
    for offset in range(5):
        users.AddControlPointWorld(*map(float, nodule_ras + [0.0, 0.0, float(offset)]))
    assert not logic.ownsSeedNode(users) and logic.ownsSeedNode(logic.createSeedNode())
    assert not logic.keepNewestSeed(users)
    with pytest.raises(ValueError, match="not the module's seed list"):
        logic.placeSeed(users, nodule_ras)
    assert users.GetNumberOfControlPoints() == 5
    np.testing.assert_allclose(logic.seedPosition(users, users.GetNthControlPointID(3)), nodule_ras + [0.0, 0.0, 3.0])
    made_in_the_selector = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CycleGANExplain seed")
    logic.adoptSeedNode(made_in_the_selector)  # the seed selector's "Create new" (nodeAddedByUser)
    assert logic.ownsSeedNode(made_in_the_selector)


def test_a_new_seed_list_is_not_left_as_the_active_place_list(module, scene_app):
    selection = scene_app.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    users = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my nodules")
    assert selection.GetActivePlaceNodeID() == users.GetID()  # the Markups logic makes a new list active
    module.CycleGANExplainLogic.createSeedNode()
    assert selection.GetActivePlaceNodeID() == users.GetID()


def test_panel_changes_keep_the_views_layers_and_another_volume_drops_the_overlay(module, scene_app, synthetic_ct,
                                                                                nodule_ras):
    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    result = logic.explain(volume, nodule_ras, device="cpu")
    logic.showOverlay(result.overlay_node, volume, opacity=0.6)
    composite = scene_app.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(0)
    other = scene_app.load_volume(synthetic_ct, "another CT")
    composite.SetBackgroundVolumeID(other.GetID())  # the user shows another volume in this view

    assert logic.updateOverlayDisplay(result.overlay_node, volume, opacity=0.25)
    assert composite.GetBackgroundVolumeID() == other.GetID()
    assert composite.GetForegroundVolumeID() == result.overlay_node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.25)
    assert logic.updateOverlayDisplay(result.overlay_node, volume, opacity=0.25, visible=False)
    assert composite.GetForegroundOpacity() == 0.0

    # The panel's volume is now the other CT: the overlay, which explains the first, leaves the views.
    assert not logic.updateOverlayDisplay(result.overlay_node, other, opacity=0.6)
    assert composite.GetForegroundVolumeID() is None
    assert composite.GetBackgroundVolumeID() == other.GetID()


def test_a_seed_outside_gets_the_samplers_message_in_the_module_too(module, scene_app, synthetic_ct):
    volume = scene_app.load_volume(synthetic_ct)
    voxels, ijk_to_ras = volume_array_and_geometry(volume)
    outside = [300.0, 0.0, 10.0]
    with pytest.raises(SeedOutsideVolumeError) as sampler_error:
        extract_patch(voxels, ijk_to_ras, outside)
    with pytest.raises(SeedOutsideVolumeError) as module_error:
        module.CycleGANExplainLogic().explain(volume, outside, device="cpu", halfExtentMm=2.0)
    assert str(module_error.value) == str(sampler_error.value)
    assert "(R, A, S) = (300.0, 0.0, 10.0) mm lies outside the volume" in str(module_error.value)
