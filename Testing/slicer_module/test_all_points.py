""""Explain all points": every placed point of a real markups point list explained through its nodule (the
panel's half-extent) in one request to the explanation process, one overlay of every point's stack, a table
node of them all (labels from the points; saved with the scene), a row choosing the shown point; a seeds file
loaded as a point list. Real MRML scene (slicer-core), the sample CT, real worker process."""

from __future__ import annotations

import time

import numpy as np
import pytest

from CycleGANExplainLib import mrml_case
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD
from CycleGANExplainLib.explain_controller import ExplainController
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.nodule_stack import HalfExtentError, stack_seeds
from CycleGANExplainLib.overlay import TRANSPARENT_BELOW, display_limit
from CycleGANExplainLib.package_installer import DependencyInstaller
from CycleGANExplainLib.patch_sampling import SeedOutsideVolumeError
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path

from .qt_stand_ins import ManualTimer
from .test_overlay_through_nodule import overlay_pixels


class RecordingPanel:
    """STAND-IN for the widget's dialogs, labels and table view (explain_controller.PanelView)."""

    def __init__(self) -> None:
        self.errors, self.results, self.tables = [], [], []
        self.busy = False

    def ask(self, question: str, title: str) -> bool:
        return True

    def tell(self, message: str, title: str) -> None:
        pass

    def show_error(self, message: str, error: BaseException) -> None:
        self.errors.append(str(error))

    def show_status(self, message: str, duration_ms: int = 0) -> None:
        pass

    def set_busy(self, busy: bool) -> None:
        self.busy = busy

    def clear_result(self) -> None:
        pass

    def show_result(self, result) -> None:
        self.results.append(result)

    def show_case_table(self, table_node) -> None:
        self.tables.append(table_node)


def point_list(scene, points):
    """A user's point list: (label, RAS, placed) each."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "nodules")
    for label, ras, placed in points:
        index = node.AddControlPoint(*map(float, ras))
        node.SetNthControlPointLabel(index, label)
        if not placed:
            node.UnsetNthControlPointPosition(index)
    return node


@pytest.fixture
def case(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    points = point_list(scene_app.scene, [("N1", nodule_ras, True), ("", nodule_ras + [8.0, 4.0, 0.0], True),
                                          ("unplaced", nodule_ras, False), ("N3", nodule_ras + [-6.0, 0.0, 2.0], True)])
    return volume, points


def test_the_placed_points_become_one_request_labelled_as_the_points(module, case, nodule_ras):
    volume, points = case
    request = module.CycleGANExplainLogic().preparePointsRequest(volume, points, "cpu", halfExtentMm=2.0)
    assert request.labels == ["N1", "point 2", "N3"]
    centres = [nodule_ras, nodule_ras + [8, 4, 0], nodule_ras + [-6, 0, 2]]
    np.testing.assert_allclose([plan.seed_ras for plan in request.plans], centres)
    # Each point's slices within 2 mm (the synthetic CT's 2 mm slices: three each), point after point.
    assert [len(plan) for plan in request.plans] == [3, 3, 3]
    np.testing.assert_allclose(request.request.seeds, stack_seeds(request.plans))
    np.testing.assert_allclose(request.request.seeds[request.request.central_index], centres[2])  # the last point
    assert mrml_case.worker_job(request).warn_outside is False  # each stack warns once, not each slice


def test_a_point_outside_the_volume_is_named(module, scene_app, case, nodule_ras):
    volume, points = case
    points.SetNthControlPointLabel(3, "far")
    points.SetNthControlPointPosition(3, 0.0, 0.0, 500.0)
    with pytest.raises(SeedOutsideVolumeError, match=r"Point\(s\) far \(nodules point 4\) lie outside the volume"):
        module.CycleGANExplainLogic().preparePointsRequest(volume, points, "cpu")
    empty = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    with pytest.raises(ValueError, match="no placed point"):
        module.CycleGANExplainLogic().preparePointsRequest(volume, empty, "cpu")


def run_all_points(module, volume, points, half_extent_mm: float):
    """"Explain all points" through the real controller and explanation process, as the panel runs it."""
    view, poll_timer = RecordingPanel(), ManualTimer()
    logic = module.CycleGANExplainLogic()
    installer = DependencyInstaller(view.ask, view.tell, view.show_status, pip_install=None)
    controller = ExplainController(logic, installer, view, ManualTimer(), poll_timer)
    parameters = logic.getParameterNode()
    parameters.device = "cpu"
    logic.completeParameters(parameters)
    parameters.inputVolume, parameters.seedNode, parameters.halfExtentMm = volume, points, half_extent_mm
    controller.set_parameters(parameters)
    controller.explain_all_points()
    deadline = time.monotonic() + 120
    while poll_timer.active:
        assert time.monotonic() < deadline, "the explanation did not finish"
        controller.poll()
        time.sleep(0.01)
    return controller, view, parameters


def overlay_ijk_to_ras(overlay_node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    overlay_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.fixture
def sample_case(module, scene_app):
    """Two documented nodules of the synthetic sample CT (160 mm apart in R, 10 mm in S) as a user's point list."""
    volume = scene_app.load_volume(sample_volume_path(SYNTHETIC_SAMPLE), SYNTHETIC_SAMPLE)
    nodules = [sample_nodule(nodule_id, SYNTHETIC_SAMPLE) for nodule_id in ("N2", "N3")]
    points = point_list(scene_app.scene, [(nodule.id, nodule.centre_ras_mm, True) for nodule in nodules])
    return volume, points, np.array([nodule.centre_ras_mm for nodule in nodules])


def test_explain_all_points_shows_every_point_through_its_nodule(module, scene_app, sample_case, tmp_path):
    import slicer

    volume, points, seeds = sample_case
    controller, view, parameters = run_all_points(module, volume, points, half_extent_mm=5.0)
    try:
        assert not view.errors
        [result], [table] = view.results, view.tables
        stacks = controller._case.stacks
        # The panel's half-extent: 5 mm at the CT's 2.5 mm slices is five slices a point, one batch of them all.
        assert [len(stack) for stack in stacks] == [5, 5] and len(result.batch) == 10
        for stack, seed in zip(stacks, seeds):
            np.testing.assert_allclose(stack.offsets_mm, [-5.0, -2.5, 0.0, 2.5, 5.0])
            np.testing.assert_allclose(stack.centre.seed_ras, seed)
        assert result.stack is stacks[1] and result.batch[result.central_index] is stacks[1].centre  # the last point
        assert parameters.caseTable is table and parameters.overlayVolume is result.overlay_node

        # One overlay of both stacks, in the CT's patient space: the patch's pixels across, the CT's slices along S.
        overlay = slicer.util.arrayFromVolume(result.overlay_node)
        ijk_to_ras = overlay_ijk_to_ras(result.overlay_node)
        covered = np.zeros(overlay.shape, dtype=bool)
        np.testing.assert_allclose(ijk_to_ras[:3, :3], np.diag([-45.0 / 64, -45.0 / 64, 2.5]), atol=1e-9)
        for number, (stack, tolerance) in enumerate(zip(stacks, (0.5 * 45.0 / 64, 1e-6))):
            first = np.linalg.solve(ijk_to_ras, np.append(stack.stack_to_ras[:3, 3], 1.0))[:3]
            start = np.rint(first).astype(int)
            # Each point's voxels where its patches are: the last exactly, the other within half a pixel.
            placed = (ijk_to_ras @ np.append(start + [31.5, 31.5, stack.centre_index], 1.0))[:3]
            assert np.abs(placed - seeds[number]).max() <= tolerance
            assert np.abs(placed[2] - seeds[number][2]) < 1e-6  # both points lie on the same slice grid
            region = tuple(slice(s, s + n) for s, n in zip(start[::-1], stack.relevance.shape))
            np.testing.assert_array_equal(overlay[region], stack.relevance)
            # Every slice of the point's stack holds its map (the deadband leaves unchanged pixels exactly 0).
            assert all(np.count_nonzero(plane) > 0.01 * plane.size for plane in overlay[region])
            covered[region] = True
        assert not overlay[~covered].any()  # nothing anywhere else
        limit = float(result.overlay_node.GetAttribute("CycleGANExplain.SymmetricLimit"))
        assert limit == pytest.approx(display_limit(np.concatenate([s.relevance.ravel() for s in stacks]), DEFAULT_METHOD))

        # Scrolling: the axial view draws each point's map on its slices, within its patch, and none beyond.
        for seed, stack in zip(seeds, stacks):
            for offset in (0.0, 5.0, 7.5):
                changed, ras = overlay_pixels(scene_app, scene_app.red_logic, result, volume, seed + [0, 0, offset])
                if offset > 5.0:
                    assert not changed.any(), (seed, offset)
                    continue
                opaque = np.abs(stack.relevance[stack.centre_index + round(offset / 2.5)]) >= TRANSPARENT_BELOW * limit
                assert changed.sum() > 0.5 * opaque.sum() > 0, (seed, offset)
                assert np.abs(ras[changed][:, :2] - seed[:2]).max() <= 22.5 + 0.5  # its own patch only

        # One row per point, from its own slice of the stack.
        assert table.GetNumberOfRows() == 2
        keys = [table.GetTable().GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
        column = {key: index for index, key in enumerate(keys)}
        assert table.GetColumnTitle("p_G_neg") == "p(G-(x))"
        for row, (label, stack) in enumerate(zip(["N2", "N3"], stacks)):
            centre = stack.centre
            assert centre is result.batch[mrml_case.centre_batch_index([s.plan for s in stacks], row)]
            assert table.GetCellText(row, column["label"]) == label
            assert table.GetCellText(row, column["p_x"]) == probability_text(centre.p_x)
            assert table.GetCellText(row, column["p_G_neg"]) == probability_text(centre.p_neg)
            assert table.GetCellText(row, column["p_G_pos"]) == probability_text(centre.p_pos)
            assert table.GetCellText(row, column["G_neg_reached_benign"]) == ("yes" if centre.p_neg < 0.5 else "no")
            assert float(table.GetCellText(row, column["S_mm"])) == pytest.approx(seeds[row][2], abs=0.05)

        # Choosing the first row shows that point: its probabilities and stack, the views centred on it.
        controller.show_case_point(0)
        chosen = view.results[-1]
        assert chosen.stack is stacks[0] and chosen.batch[chosen.central_index] is stacks[0].centre
        assert chosen.overlay_node is result.overlay_node
        assert scene_app.red_logic.GetSliceNode().GetSliceOffset() == pytest.approx(seeds[0][2])
        controller.show_case_point(2)  # a row the case lacks: nothing changes
        assert view.results[-1] is chosen
    finally:
        controller.shutdown()

    # Saved with the scene: the table's storage writes it, and it reads back the same.
    storage = table.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "case.tsv"))
    assert storage.WriteData(table)
    again = scene_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "read back")
    assert storage.ReadData(again)
    assert [again.GetCellText(row, column["label"]) for row in range(2)] == ["N2", "N3"]

    # Explaining the points again reuses the table node.
    rows = mrml_case.case_rows(["a"], stacks[:1], DEFAULT_METHOD)
    assert mrml_case.update_case_table(scene_app.scene, rows) is table and table.GetNumberOfRows() == 1


def test_the_half_extent_is_checked_before_any_work(module, sample_case):
    volume, points, _ = sample_case
    with pytest.raises(HalfExtentError, match="from 0 to 40 mm"):
        module.CycleGANExplainLogic().preparePointsRequest(volume, points, "cpu", halfExtentMm=41.0)


def test_a_seeds_file_becomes_a_labelled_point_list(module, scene_app, tmp_path):
    seeds = tmp_path / "case 7.csv"
    seeds.write_text("id,L,P,S\nN1,-12,8,22\nN2,1,2,3\n", encoding="utf-8")
    node = module.CycleGANExplainLogic.loadSeedsFile(seeds)
    assert node.GetName() == "case 7" and node.GetNumberOfControlPoints() == 2
    assert [node.GetNthControlPointLabel(i) for i in range(2)] == ["N1", "N2"]
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(0, position)
    np.testing.assert_allclose(position, [12.0, -8.0, 22.0])
    assert [seed.label for seed in mrml_case.markups_seeds(node)] == ["N1", "N2"]
