"""The module's "Save as DICOM" (Logic.saveDicomResults) on a real MRML scene: a CT series loaded from
its DICOM files, explained, the overlay volume written as DICOM objects that lie where the overlay lies."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from CycleGANExplainLib.dicom_results import DicomResultsError
from CycleGANExplainLib.mrml_explain import DICOM_INSTANCE_UIDS_ATTRIBUTE, volume_array_and_geometry

LPS = np.diag([-1.0, -1.0, 1.0])
PATIENT_ID = "PHIID-55120-SLICER"


@pytest.fixture
def dicom_ct(tmp_path, ct_series_writer, lung_volume):
    volume, ijk_to_ras = lung_volume
    origin_lps = LPS @ ijk_to_ras[:3, 3]
    folder = tmp_path / "ct"
    ct_series_writer(folder, volume, 1.5, [origin_lps[2] + 2.5 * k for k in range(volume.shape[0])], origin_lps[:2],
                     2.5, patient_id=PATIENT_ID, patient_name="ZZSLICER^PATIENT")
    files = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: str(path)
             for path in sorted(folder.glob("*.dcm"))}
    return folder, files


def load_as_dicom_module_does(scene_app, folder, files):
    """The series read by the volumes logic (ITK's GDCM reader), with the instance UIDs Slicer's DICOM
    plugin records on the node; ``files.get`` stands in for slicer.dicomDatabase.fileForInstance."""
    node = scene_app.load_volume(sorted(folder.glob("*.dcm"))[0])
    node.SetAttribute(DICOM_INSTANCE_UIDS_ATTRIBUTE, " ".join(files))
    return node


def test_saved_map_lies_on_the_overlay_and_holds_its_values(module, scene_app, dicom_ct, tmp_path):
    import slicer

    folder, files = dicom_ct
    volume = load_as_dicom_module_does(scene_app, folder, files)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, [0.0, 0.0, 0.0], device="cpu", halfExtentMm=3.0)  # the seed and one CT slice (2.5 mm) either side
    written = logic.saveDicomResults(result, volume, tmp_path / "results", files.get)
    assert [path.name for path in written] == ["relevance_map_01.dcm", "relevance_regions_01.dcm",
                                               "explanation_report_01.dcm"]
    parametric_map = pydicom.dcmread(written[0])
    relevance = slicer.util.arrayFromVolume(result.overlay_node)
    _, overlay_to_ras = volume_array_and_geometry(result.overlay_node)
    assert (parametric_map.NumberOfFrames, relevance.shape[0]) == (3, 3)
    for frame, item in enumerate(parametric_map.PerFrameFunctionalGroupsSequence):
        position_ras = LPS @ np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = int(np.rint((position_ras - overlay_to_ras[:3, 3])[2] / overlay_to_ras[2, 2]))
        np.testing.assert_allclose(position_ras, (overlay_to_ras @ [0, 0, k, 1])[:3], atol=1e-3)
        np.testing.assert_allclose(parametric_map.pixel_array[frame], relevance[k], atol=1e-7)
    referenced = {item.ReferencedSOPInstanceUID
                  for item in parametric_map.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(files)
    report = pydicom.dcmread(written[2])
    numbers = {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
               for item in report.ContentSequence if item.ValueType == "NUM"}
    assert numbers["Malignancy probability of x"] == pytest.approx(result.batch[result.central_index].p_x, abs=1e-6)


def test_a_ct_not_from_the_dicom_database_is_refused_saying_what_to_do(module, scene_app, synthetic_ct, nodule_ras,
                                                                      tmp_path):
    volume = scene_app.load_volume(synthetic_ct)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, nodule_ras, device="cpu")
    with pytest.raises(DicomResultsError, match="not loaded from Slicer's DICOM database.*File > Save Data"):
        logic.saveDicomResults(result, volume, tmp_path / "results", lambda uid: "")
    assert not (tmp_path / "results").exists()


def test_files_gone_from_the_database_are_reported(module, scene_app, dicom_ct, tmp_path):
    folder, files = dicom_ct
    volume = load_as_dicom_module_does(scene_app, folder, files)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, [0.0, 0.0, 0.0], device="cpu")
    first = next(iter(files))
    with pytest.raises(DicomResultsError, match=f"1 of the CT's {len(files)} DICOM files are no longer"):
        logic.saveDicomResults(result, volume, tmp_path / "results", lambda uid: "" if uid == first else files[uid])


def test_the_installer_asks_nothing_when_highdicom_is_there():
    from CycleGANExplainLib.package_installer import DependencyInstaller

    asked = []
    installer = DependencyInstaller(lambda question, title: asked.append(question) or False, None, None, None)
    assert installer.ensure_dicom_writer() is True and asked == []


def test_a_chosen_point_of_a_case_is_saved_as_its_own_stack(module, scene_app, dicom_ct, tmp_path):
    """After "Explain all points" the overlay holds every point; the DICOM objects hold the chosen point's stack."""
    from CycleGANExplainLib import mrml_case
    from CycleGANExplainLib.explain_worker import run_job

    folder, files = dicom_ct
    volume = load_as_dicom_module_does(scene_app, folder, files)
    points = scene_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "nodules")
    for ras in ([0.0, 0.0, 0.0], [-20.0, 10.0, 5.0]):
        points.AddControlPoint(*ras)
    logic = module.CycleGANExplainLogic()
    request = logic.preparePointsRequest(volume, points, "cpu", halfExtentMm=3.0)
    case = logic.showPointsExplanation(request, run_job(mrml_case.worker_job(request)))
    result = logic.showCasePoint(case, 0)
    stack = case.stacks[0]
    written = logic.saveDicomResults(result, volume, tmp_path / "results", files.get)
    parametric_map = pydicom.dcmread(written[0])
    assert parametric_map.NumberOfFrames == len(stack) == 3
    for frame, item in enumerate(parametric_map.PerFrameFunctionalGroupsSequence):
        position_ras = LPS @ np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = int(np.rint((position_ras - stack.stack_to_ras[:3, 3])[2] / stack.stack_to_ras[2, 2]))
        np.testing.assert_allclose(position_ras, (stack.stack_to_ras @ [0, 0, k, 1])[:3], atol=1e-3)
        np.testing.assert_allclose(parametric_map.pixel_array[frame], stack.relevance[k], atol=1e-7)
    report = pydicom.dcmread(written[2])
    numbers = {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
               for item in report.ContentSequence if item.ValueType == "NUM"}
    assert numbers["Malignancy probability of x"] == pytest.approx(stack.centre.p_x, abs=1e-6)
