"""The real sample's converter (sample_tcia_ct) on a real pydicom series with identifiers in its
header and PASCAL VOC annotations named by SOPInstanceUID: the crop, the boxes in RAS, nothing of
the header in the outputs, and each bad input refused with exit 2 and a message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.volume_io import read_volume
from cyclegan_explain_training import sample_tcia_ct

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-SECRET-4711"
SPACING = 2.0
ORIGIN_XY_LPS = (-64.0, -80.0)
SLICES_Z = [100.0 + 5.0 * k for k in range(10)]  # k = 0..9, S = 100..145 mm
# The box (columns 20..36, rows 24..40) on slices k = 4, 5, 6: a bright block there.
BOX = (20, 24, 36, 40)
ANNOTATED_K = (4, 5, 6)


def _voc(box, label: str = "A") -> str:
    xmin, ymin, xmax, ymax = box
    return (f"<annotation><size><width>64</width><height>64</height></size><object><name>{label}</name>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
            "</object></annotation>")


@pytest.fixture
def source(tmp_path, ct_series_writer):
    volume = np.full((10, 64, 64), -850, dtype=np.int16)
    for k in ANNOTATED_K:
        volume[k, BOX[1]:BOX[3] + 1, BOX[0]:BOX[2] + 1] = 30
    dicom = tmp_path / "dicom"
    ct_series_writer(dicom, volume, SPACING, SLICES_Z, ORIGIN_XY_LPS, 5.0, patient_id=PATIENT_ID,
                     patient_name=PATIENT_NAME)
    uid_at_z = {}
    for path in dicom.iterdir():
        header = pydicom.dcmread(str(path), stop_before_pixels=True)
        uid_at_z[float(header.ImagePositionPatient[2])] = str(header.SOPInstanceUID)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for k in ANNOTATED_K:
        (annotations / f"{uid_at_z[SLICES_Z[k]]}.xml").write_text(_voc(BOX))
    (annotations / "1.2.3.999.xml").write_text(_voc((1, 1, 5, 5)))  # another series' image: ignored
    return dicom, annotations, volume


def test_the_sample_is_the_annotated_slices_and_a_margin_with_boxes_in_ras_and_no_header(source, tmp_path, capsys):
    dicom, annotations, volume = source
    out = tmp_path / "out"
    code = sample_tcia_ct.main(["--dicom", str(dicom), "--annotations", str(annotations), "--out", str(out),
                                "--centre-slice-s", "125"])
    assert code == 0, capsys.readouterr().err
    nrrd, description_path = out / sample_tcia_ct.NRRD_NAME, out / sample_tcia_ct.JSON_NAME
    description = json.loads(description_path.read_text())

    # Slices 3..7: the annotated 4..6 and one on either side, whole slices, the same HU.
    loaded = read_volume(nrrd)
    np.testing.assert_array_equal(loaded.volume_kji, volume[3:8])
    assert loaded.volume_kji.dtype == np.int16
    np.testing.assert_allclose(loaded.ijk_to_ras, description["ijk_to_ras"], atol=1e-6)
    np.testing.assert_allclose(loaded.ijk_to_ras[:3, 3], [64.0, 80.0, 115.0])
    assert description["size_ijk"] == [64, 64, 5] and description["file_sha256"] == sample_tcia_ct.sha256_file(nrrd)

    nodule = description["nodules"][0]
    assert [box["slice_k"] for box in nodule["boxes"]] == [1, 2, 3]
    # Box centre: column 28, row 32 -> LPS (-64 + 56, -80 + 64) = (-8, -16); RAS (8, 16); S of k = 5.
    np.testing.assert_allclose(nodule["centre_ras_mm"], [8.0, 16.0, 125.0], atol=1e-6)
    np.testing.assert_allclose(nodule["centre_lps_mm"], [-8.0, -16.0, 125.0], atol=1e-6)
    np.testing.assert_allclose(nodule["boxes"][1]["size_mm"], [32.0, 32.0])
    assert nodule["diameter_mm"] == 32.0 and nodule["kind"].startswith("lung adenocarcinoma")
    # The documented centre is in the bright block, in the shipped file's own voxels.
    ijk = np.linalg.inv(loaded.ijk_to_ras) @ np.array([*nodule["centre_ras_mm"], 1.0])
    assert loaded.volume_kji[int(round(ijk[2])), int(round(ijk[1])), int(round(ijk[0]))] == 30

    # Nothing of the DICOM header: the NRRD holds geometry alone, the JSON neither name nor ID nor UID.
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(nrrd))
    reader.ReadImageInformation()
    assert not [key for key in reader.GetMetaDataKeys() if key not in ("ITK_InputFilterName", "NRRD_kinds[0]",
                                                                        "NRRD_kinds[1]", "NRRD_kinds[2]", "NRRD_space")]
    for text in (nrrd.read_bytes()[:2000].decode("latin-1"), description_path.read_text()):
        assert PATIENT_NAME.split("^")[0] not in text and PATIENT_ID not in text
    uids = {str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID) for path in dicom.iterdir()}
    assert not any(uid in description_path.read_text() for uid in uids)
    assert "CC BY 4.0" in description["licence"] and "10.7937/TCIA.2020.NNC2-0461" in description["citations"][0]


@pytest.mark.parametrize("change, message", [
    ("no_annotations_of_this_series", "belong to another series"),
    ("centre_slice_not_annotated", "must be a slice with exactly one annotated box"),
    ("malformed_box", "an object without numeric xmin"),
    ("missing_folder", "does not exist or is not a folder"),
])
def test_bad_inputs_exit_2_with_a_message(source, tmp_path, capsys, change, message):
    dicom, annotations, _ = source
    centre = "125"
    if change == "no_annotations_of_this_series":
        for path in annotations.glob("*.xml"):
            if path.name != "1.2.3.999.xml":
                path.unlink()
    elif change == "centre_slice_not_annotated":
        centre = "100"
    elif change == "malformed_box":
        next(path for path in annotations.glob("*.xml") if path.name != "1.2.3.999.xml").write_text(
            "<annotation><object><name>A</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    elif change == "missing_folder":
        annotations = tmp_path / "nowhere"
    out = tmp_path / "out"
    code = sample_tcia_ct.main(["--dicom", str(dicom), "--annotations", str(annotations), "--out", str(out),
                                "--centre-slice-s", centre])
    assert code == 2
    assert message in capsys.readouterr().err


def test_the_shipped_sample_was_made_with_the_recorded_crop():
    """The committed JSON's crop and centre slice are the converter's defaults (its command)."""
    from CycleGANExplainLib.sample_data import TCIA_SAMPLE, sample_description

    description = sample_description(TCIA_SAMPLE)
    assert description["command"].endswith("--out CycleGANExplain/CycleGANExplainLib/resources/sample_data")
    nodule = description["nodules"][0]
    boxes_k = [box["slice_k"] for box in nodule["boxes"]]
    assert boxes_k[0] == sample_tcia_ct.MARGIN_SLICES
    assert boxes_k[-1] == description["size_ijk"][2] - 1 - sample_tcia_ct.MARGIN_SLICES
    assert nodule["centre_ras_mm"][2] == sample_tcia_ct.CENTRE_SLICE_S_MM
