"""Seeds files (seed_files): CSV and JSON in RAS or LPS, real DICOM SR and SEG made with highdicom, and
every bad file refused with the file and the line or entry named."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from CycleGANExplainLib.seed_files import (LabelledSeed, SeedFileError, check_unique_labels, dicom_reference,
                                           read_dicom_seeds, read_seeds_file)

hd = pytest.importorskip("highdicom")
from pydicom.sr.codedict import codes  # noqa: E402 - after highdicom's skip

SPACING, SLICE_MM, ORIGIN_XY = 1.0, 2.0, (-16.0, -20.0)
NODULE_LPS = np.array([-4.0, -6.0, 8.0])  # at column 12, row 14, slice 4


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --- CSV and JSON ---------------------------------------------------------------------------------


def test_csv_in_lps_is_converted_to_ras_and_keeps_labels(tmp_path):
    found = read_seeds_file(write(tmp_path / "s.csv", "\ufeffid, L ,P,S\nN1,10,-20.5,30\nN2,-1e1,0,.5\n"))
    assert [seed.label for seed in found.seeds] == ["N1", "N2"]
    np.testing.assert_allclose([seed.ras for seed in found.seeds], [[-10, 20.5, 30], [10, 0, 0.5]])
    assert found.seeds[1].origin.endswith("s.csv line 3")


def test_csv_in_ras_any_order_without_label(tmp_path):
    found = read_seeds_file(write(tmp_path / "s.csv", "s,a,r\n3,2,1\n\n"))
    assert found.seeds == [LabelledSeed((1.0, 2.0, 3.0), None, f"{tmp_path / 's.csv'} line 2")]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("R,A,S\n", "holds a header but no seed"),
    ("1,2,3\n4,5,6\n", "line 1: no header row"),
    ("R,A,L,P,S\n1,2,3,4,5\n", "columns of both systems (R, A, L, P)"),
    ("R,A\n1,2\n", "missing S"),
    ("x,y,z\n1,2,3\n", "must name the columns R,A,S (RAS) or L,P,S (LPS); found x, y, z"),
    ("R,A,S\n1,2,3\n4,five,6\n", "line 3, column A: 'five' is not a number"),
    ("R,A,S\n1,nan,3\n", "line 2, column A: 'nan' is not a finite number"),
    ("R,A,S\n1,2\n", "line 2: 2 values for the header's 3 columns"),
    ("id,label,R,A,S\na,b,1,2,3\n", "more than one label column"),
    ("R,r,A,S\n1,1,2,3\n", "the column(s) R appear more than once"),
])
def test_bad_csv_is_refused_with_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(SeedFileError) as error:
        read_seeds_file(path)
    assert message in str(error.value) and str(path) in str(error.value)


def slicer_markups(system="LPS", points=None) -> dict:
    """A point list as Slicer 5 writes it (.mrk.json)."""
    points = points if points is not None else [
        {"id": "1", "label": "F-1", "position": [-12.0, 8.0, 22.0], "positionStatus": "defined"},
        {"id": "2", "label": "F-2", "position": [0.0, 0.0, 0.0], "positionStatus": "undefined"},
        {"id": "3", "label": "F-3", "position": [1.0, 2.0, 3.0], "positionStatus": "defined"}]
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                       "Schema/markups-schema-v1.0.3.json#",
            "markups": [{"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
                         "controlPoints": points}]}


def test_slicer_markups_file_in_lps_skips_unplaced_points(tmp_path):
    found = read_seeds_file(write(tmp_path / "nodules.mrk.json", json.dumps(slicer_markups())))
    assert [seed.label for seed in found.seeds] == ["F-1", "F-3"]
    np.testing.assert_allclose(found.seeds[0].ras, [12.0, -8.0, 22.0])
    assert "1 control point(s) not placed" in found.notes[0]
    assert found.seeds[1].origin.endswith("markups[0].controlPoints[2]")


def test_plain_json_in_ras(tmp_path):
    document = {"coordinate_system": "ras", "seeds": [[1, 2, 3], {"id": "N7", "position": [4.5, 5, -6]}]}
    found = read_seeds_file(write(tmp_path / "s.json", json.dumps(document)))
    assert [(seed.ras, seed.label) for seed in found.seeds] == [((1.0, 2.0, 3.0), None), ((4.5, 5.0, -6.0), "N7")]


@pytest.mark.parametrize("document, message", [
    ("{", "is not valid JSON (line 1 column 2"),
    ([1, 2], "neither a Slicer markups file"),
    ({"seeds": [[1, 2, 3]]}, "no coordinate_system (RAS or LPS) is stated"),
    ({"coordinate_system": "XYZ", "seeds": [[1, 2, 3]]}, 'the coordinate system must be RAS or LPS, got "XYZ"'),
    ({"coordinate_system": "LPS", "seeds": []}, "'seeds' must be a non-empty list"),
    ({"coordinate_system": "LPS", "seeds": [[1, 2, 3], [1, "2", 3]]}, 'seeds[1]: a position must be three numbers'),
    ({"coordinate_system": "LPS", "seeds": [[1, 2, 3], [1, 2]]}, "seeds[1]: a position must be three numbers"),
    ({"coordinate_system": "LPS", "seeds": [{"id": "x"}]}, "seeds[0]: an entry needs a position"),
    ({"markups": [{"type": "Fiducial", "controlPoints": []}]}, "markups[0]: no coordinateSystem"),
    ({"markups": [{"type": "Line", "coordinateSystem": "LPS"}]}, "markups[0]: a Line markup"),
    (slicer_markups(points=[{"position": [1, 2, 3], "positionStatus": "undefined"}]), "no placed control point"),
    (slicer_markups(points=[{"label": "a"}]), "controlPoints[0]: a control point needs a position"),
])
def test_bad_json_is_refused_with_file_and_entry(tmp_path, document, message):
    path = write(tmp_path / "bad.json", document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(SeedFileError) as error:
        read_seeds_file(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_nan_in_json_is_refused(tmp_path):
    path = write(tmp_path / "nan.json", '{"coordinate_system": "LPS", "seeds": [[1, NaN, 3]]}')
    with pytest.raises(SeedFileError, match=r"seeds\[0\]: the position \[1, nan, 3\] is not finite"):
        read_seeds_file(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(SeedFileError, match=r"unknown type \.dcm; use \.csv or \.json"):
        read_seeds_file(write(tmp_path / "s.dcm", "x"))
    with pytest.raises(SeedFileError, match="no such file"):
        read_seeds_file(tmp_path / "missing.csv")


def test_repeated_labels_are_refused_naming_both():
    seeds = [LabelledSeed((0, 0, 0), "N1", "a.csv line 2"), LabelledSeed((1, 0, 0), None, "b"),
             LabelledSeed((2, 0, 0), "N1", "a.csv line 4")]
    with pytest.raises(SeedFileError, match=r"'N1' is given twice \(a.csv line 2 and a.csv line 4\)"):
        check_unique_labels(seeds)


# --- DICOM SR and SEG, made with highdicom from a real CT series -----------------------------------


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory, ct_series_writer):
    folder = tmp_path_factory.mktemp("ct")
    volume = np.full((10, 40, 32), -800, dtype=np.int16)
    volume[:, :, :6] = 40  # chest wall: the CT check wants tissue beside the lung
    ct_series_writer(folder, volume, SPACING, [k * SLICE_MM for k in range(10)], ORIGIN_XY, SLICE_MM)
    files = sorted(folder.glob("*.dcm"))
    frame = pydicom.uid.generate_uid()
    for name in files:  # what a scanner's series carries and highdicom copies into a SEG or SR
        image = pydicom.dcmread(str(name))
        image.FrameOfReferenceUID, image.PatientName, image.PatientBirthDate, image.PatientSex = frame, "", "", ""
        image.StudyDate, image.StudyTime, image.StudyID, image.AccessionNumber = "20240101", "120000", "1", ""
        image.ReferringPhysicianName = ""
        image.save_as(str(name))
    images = sorted((pydicom.dcmread(str(name)) for name in files), key=lambda d: float(d.ImagePositionPatient[2]))
    return files, images


def equipment() -> dict:
    return dict(series_number=7, instance_number=1, manufacturer="CycleGANExplain tests",
                sop_instance_uid=hd.UID(), series_instance_uid=hd.UID())


def write_seg(path, images, masks: dict, frame_of_reference=None):
    """A binary SEG of ``masks`` (label -> [slices, rows, columns] bool) on the CT images."""
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for number, label in enumerate(masks, start=1)]
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=np.stack(list(masks.values()), axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        manufacturer_model_name="test", software_versions="1", device_serial_number="1", **equipment())
    if frame_of_reference:
        seg.FrameOfReferenceUID = frame_of_reference
    seg.save_as(str(path))
    return path


def sphere(images, centre_lps, radius_mm) -> np.ndarray:
    k, j, i = np.mgrid[0:len(images), 0:images[0].Rows, 0:images[0].Columns]
    lps = np.stack([ORIGIN_XY[0] + i * SPACING, ORIGIN_XY[1] + j * SPACING, k * SLICE_MM])
    return np.linalg.norm(lps - np.asarray(centre_lps)[:, None, None, None], axis=0) <= radius_mm


def test_segmentation_gives_each_segment_centroid_in_ras(tmp_path, ct_series):
    files, images = ct_series
    second = np.array([6.0, 4.0, 12.0])
    path = write_seg(tmp_path / "seg.dcm", images, {"N1": sphere(images, NODULE_LPS, 3.0),
                                                    "N2": sphere(images, second, 2.5)})
    found = read_dicom_seeds(path, dicom_reference(files))
    assert [seed.label for seed in found.seeds] == ["N1", "N2"] and found.notes == []
    # Spheres on the voxel grid are symmetric about their centres: the centroid is the centre.
    np.testing.assert_allclose(found.seeds[0].ras, [4.0, 6.0, 8.0], atol=1e-6)
    np.testing.assert_allclose(found.seeds[1].ras, [-6.0, -4.0, 12.0], atol=1e-6)
    assert found.seeds[1].origin == f"{path}, segment 2"
    unchecked = read_dicom_seeds(path)
    assert "frame of reference not checked" in unchecked.notes[0]


def test_segmentation_of_another_frame_of_reference_is_refused(tmp_path, ct_series):
    files, images = ct_series
    path = write_seg(tmp_path / "seg.dcm", images, {"N1": sphere(images, NODULE_LPS, 3.0)},
                     frame_of_reference="1.2.3.4")
    with pytest.raises(SeedFileError, match=r"seg.dcm: its coordinates are in frame of reference 1.2.3.4, not the "
                                            r"CT's"):
        read_dicom_seeds(path, dicom_reference(files))


def test_empty_segment_is_refused(tmp_path, ct_series):
    files, images = ct_series
    empty = np.zeros((len(images), images[0].Rows, images[0].Columns), bool)
    path = write_seg(tmp_path / "seg.dcm", images, {"N1": sphere(images, NODULE_LPS, 3.0), "gone": empty})
    with pytest.raises(SeedFileError, match=r"segment 2 \('gone'\) has no voxels"):
        read_dicom_seeds(path, dicom_reference(files))


def write_sr(path, images, regions: list, frame_of_reference=None):
    """A Comprehensive 3D SR (TID 1500) with one planar ROI group per (tracking identifier, region)."""
    groups = [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label), referenced_region=region)
        for label, region in regions]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name="Reader^Test"))),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(evidence=images, content=report[0], **equipment())
    sr.save_as(str(path))
    return path


def test_sr_points_and_image_regions_become_seeds(tmp_path, ct_series):
    files, images = ct_series
    reference = dicom_reference(files)
    assert reference.frame_of_reference_uid == images[0].FrameOfReferenceUID and len(reference.images) == 10
    point = hd.sr.ImageRegion3D(graphic_type=hd.sr.GraphicTypeValues3D.POINT, graphic_data=NODULE_LPS[None],
                                frame_of_reference_uid=reference.frame_of_reference_uid)
    # A circle drawn on slice 6 (S = 12 mm) around pixel centre column 22, row 24 (SCOORD adds 0.5).
    circle = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
                               graphic_data=np.array([[22.5, 24.5], [25.5, 24.5]]),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(images[6]))
    path = write_sr(tmp_path / "sr.dcm", images, [("N1", point), ("N2", circle)])
    found = read_dicom_seeds(path, reference)
    assert [seed.label for seed in found.seeds] == ["N1", "N2"]
    np.testing.assert_allclose(found.seeds[0].ras, [4.0, 6.0, 8.0], atol=1e-6)
    np.testing.assert_allclose(found.seeds[1].ras, [-(ORIGIN_XY[0] + 22), -(ORIGIN_XY[1] + 24), 12.0], atol=1e-6)
    with pytest.raises(SeedFileError, match=r"measurement group 2: its region is drawn on a CT image \(pixel "
                                            r"coordinates\); give the CT as its DICOM series folder"):
        read_dicom_seeds(path)


def test_sr_of_another_frame_of_reference_is_refused(tmp_path, ct_series):
    files, images = ct_series
    point = hd.sr.ImageRegion3D(graphic_type=hd.sr.GraphicTypeValues3D.POINT, graphic_data=NODULE_LPS[None],
                                frame_of_reference_uid="1.2.3.4.5")
    reference = dicom_reference(files)._replace(frame_of_reference_uid="1.2.3.9")
    path = write_sr(tmp_path / "sr.dcm", images, [("N1", point)])
    with pytest.raises(SeedFileError, match=r"sr.dcm, measurement group 1: its coordinates are in frame of "
                                            r"reference 1.2.3.4.5, not the CT's \(1.2.3.9\)"):
        read_dicom_seeds(path, reference)


def test_a_dicom_file_that_is_neither_sr_nor_seg_and_a_non_dicom_file(tmp_path, ct_series):
    files, _ = ct_series
    with pytest.raises(SeedFileError, match=r"is a CT Image Storage object, not a DICOM SR \(TID 1500\) or "
                                            r"Segmentation"):
        read_dicom_seeds(files[0])
    with pytest.raises(SeedFileError, match=r"notdicom.dcm is not a DICOM file"):
        read_dicom_seeds(write(tmp_path / "notdicom.dcm", "R,A,S\n"))


# --- the command line with DICOM seeds ------------------------------------------------------------


def cli_run(ct, out, bundle, *extra):
    from CycleGANExplainLib.cli import main

    return main(["explain", str(ct), "--out", str(out), "--bundle", str(bundle), "--allow-unknown-bundle",
                 "--device", "cpu", "--no-figures", *extra])


def test_cli_explains_each_segment_of_a_seg_with_its_label(tmp_path, ct_series, tiny_bundle, capsys):
    files, images = ct_series
    path = write_seg(tmp_path / "seg.dcm", images, {"N1": sphere(images, NODULE_LPS, 3.0),
                                                    "N2": sphere(images, [6.0, 4.0, 12.0], 2.5)})
    out = tmp_path / "out"
    assert cli_run(files[0].parent, out, tiny_bundle, "--seed=0,0,6", "--seeds-from-dicom", str(path)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [seed["label"] for seed in summary["seeds"]] == [None, "N1", "N2"]
    np.testing.assert_allclose(summary["seeds"][1]["seed_ras_mm"], [4.0, 6.0, 8.0], atol=1e-3)
    assert "(N1)" in capsys.readouterr().out


def test_cli_refuses_a_seg_of_another_frame_of_reference(tmp_path, ct_series, tiny_bundle, capsys):
    files, images = ct_series
    path = write_seg(tmp_path / "seg.dcm", images, {"N1": sphere(images, NODULE_LPS, 3.0)},
                     frame_of_reference="1.2.3.4")
    assert cli_run(files[0].parent, tmp_path / "out", tiny_bundle, "--seeds-from-dicom", str(path)) == 2
    assert f"error: {path}: its coordinates are in frame of reference 1.2.3.4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
