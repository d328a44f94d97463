""""Explain all points": every placed point of a real markups point list explained in one request to the
explanation process, a table node of them all (labels from the points; saved with the scene) and the last
point's overlay; a seeds file loaded as a point list. Real MRML scene (slicer-core), real worker process."""

from __future__ import annotations

import time

import numpy as np
import pytest

from CycleGANExplainLib import mrml_case
from CycleGANExplainLib.explain_controller import ExplainController
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.package_installer import DependencyInstaller
from CycleGANExplainLib.patch_sampling import SeedOutsideVolumeError

from .qt_stand_ins import ManualTimer


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
    request = module.CycleGANExplainLogic().preparePointsRequest(volume, points, "cpu")
    assert request.labels == ["N1", "point 2", "N3"]
    np.testing.assert_allclose(request.request.seeds, [nodule_ras, nodule_ras + [8, 4, 0], nodule_ras + [-6, 0, 2]])
    assert request.request.central_index == 2  # the last point's overlay is shown


def test_a_point_outside_the_volume_is_named(module, scene_app, case, nodule_ras):
    volume, points = case
    points.SetNthControlPointLabel(3, "far")
    points.SetNthControlPointPosition(3, 0.0, 0.0, 500.0)
    with pytest.raises(SeedOutsideVolumeError, match=r"Point\(s\) far \(nodules point 4\) lie outside the volume"):
        module.CycleGANExplainLogic().preparePointsRequest(volume, points, "cpu")
    empty = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    with pytest.raises(ValueError, match="no placed point"):
        module.CycleGANExplainLogic().preparePointsRequest(volume, empty, "cpu")


def test_explain_all_points_fills_the_table_and_shows_the_last_point(module, scene_app, case, tmp_path):
    import slicer
    import vtk

    volume, points = case
    view, poll_timer = RecordingPanel(), ManualTimer()
    logic = module.CycleGANExplainLogic()
    installer = DependencyInstaller(view.ask, view.tell, view.show_status, pip_install=None)
    controller = ExplainController(logic, installer, view, ManualTimer(), poll_timer)
    parameters = logic.getParameterNode()
    parameters.device = "cpu"
    logic.completeParameters(parameters)
    parameters.inputVolume, parameters.seedNode = volume, points
    controller.set_parameters(parameters)
    try:
        controller.explain_all_points()
        deadline = time.monotonic() + 120
        while poll_timer.active:
            assert time.monotonic() < deadline, "the explanation did not finish"
            controller.poll()
            time.sleep(0.01)
    finally:
        controller.shutdown()
    assert not view.errors
    [result], [table] = view.results, view.tables
    assert len(result.batch) == 3 and result.central_index == 2  # one batch of every placed point
    assert parameters.caseTable is table and parameters.overlayVolume is result.overlay_node

    assert table.GetNumberOfRows() == 3
    keys = [table.GetTable().GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    assert keys[:3] == ["number", "label", "R_mm"]
    column = {key: index for index, key in enumerate(keys)}
    assert table.GetColumnTitle("p_G_neg") == "p(G-(x))"
    for row, (label, explanation) in enumerate(zip(["N1", "point 2", "N3"], result.batch)):
        assert table.GetCellText(row, column["label"]) == label
        assert table.GetCellText(row, column["p_x"]) == probability_text(explanation.p_x)
        assert table.GetCellText(row, column["p_G_pos"]) == probability_text(explanation.p_pos)
        assert table.GetCellText(row, column["G_neg_reached_benign"]) == ("yes" if explanation.p_neg < 0.5 else "no")
        assert float(table.GetCellText(row, column["S_mm"])) == pytest.approx(explanation.seed_ras[2], abs=0.05)

    # The overlay is the last point's patch, centred on it.
    matrix = vtk.vtkMatrix4x4()
    result.overlay_node.GetIJKToRASMatrix(matrix)
    centre = (slicer.util.arrayFromVTKMatrix(matrix) @ [31.5, 31.5, 0.0, 1.0])[:3]
    np.testing.assert_allclose(centre, result.batch[2].seed_ras, atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(result.overlay_node)[0], result.batch[2].relevance)

    # Saved with the scene: the table's storage writes it, and it reads back the same.
    storage = table.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "case.tsv"))
    assert storage.WriteData(table)
    again = scene_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "read back")
    assert storage.ReadData(again)
    assert [again.GetCellText(row, column["label"]) for row in range(3)] == ["N1", "point 2", "N3"]

    # Explaining the points again reuses the table node.
    rows = mrml_case.case_rows(mrml_case.PointsRequest(None, ["a"]), result.batch)
    assert mrml_case.update_case_table(scene_app.scene, rows) is table and table.GetNumberOfRows() == 1


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
