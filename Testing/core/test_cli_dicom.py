"""`cyclegan-explain explain --dicom`: DICOM objects in --out/dicom/ for a DICOM series, with the
explanation's numbers and the overlay's values, no patient identifier outside them, replaced with the
run, refused (exit 2) for a CT that is not a DICOM series."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.cli import EXIT_BAD_INPUT, main
from CycleGANExplainLib.volume_io import ijk_to_ras_of, write_volume

PATIENT_NAME = "ZZPHINAME^QUENTIN"
PATIENT_ID = "PHIID-77310-XQ"
IDENTIFIERS = (PATIENT_ID.encode(), b"ZZPHINAME", b"QUENTIN")
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def dicom_ct(lung_volume, tmp_path, ct_series_writer):
    volume, ijk_to_ras = lung_volume  # 1.5 mm pixels, 2.5 mm slices, LPS-aligned
    origin_lps = LPS @ ijk_to_ras[:3, 3]
    z = [origin_lps[2] + 2.5 * k for k in range(volume.shape[0])]
    ct_series_writer(tmp_path / "ct", volume, 1.5, z, origin_lps[:2], 2.5, patient_id=PATIENT_ID,
                     patient_name=PATIENT_NAME)
    return tmp_path / "ct"


def run(*arguments) -> int:
    return main(["explain", *map(str, arguments), "--device", "cpu", "--half-extent-mm", "5"])


def test_dicom_objects_hold_the_overlay_and_the_numbers_and_nothing_else_names_the_patient(dicom_ct, tmp_path,
                                                                                              capsys):
    out = tmp_path / "out"
    assert run(dicom_ct, "--seed=0,0,0", "--out", out, "--dicom") == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["seeds"]
    assert entry["dicom"] == ["dicom/relevance_map_01.dcm", "dicom/relevance_regions_01.dcm",
                              "dicom/explanation_report_01.dcm"]
    assert sorted(p.name for p in (out / "dicom").iterdir()) == sorted(name.split("/")[1] for name in entry["dicom"])
    assert str(out / "dicom") in captured.out

    # The parametric map holds the NRRD overlay's slices through the nodule, each where the overlay has it.
    overlay = sitk.ReadImage(str(out / entry["overlay"]))
    overlay_values, overlay_to_ras = sitk.GetArrayFromImage(overlay), ijk_to_ras_of(overlay)
    parametric_map = pydicom.dcmread(out / entry["dicom"][0])
    assert parametric_map.NumberOfFrames == overlay_values.shape[0] == 5  # -5 .. +5 mm in 2.5 mm slices
    for frame, item in enumerate(parametric_map.PerFrameFunctionalGroupsSequence):
        position_ras = LPS @ np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = int(np.rint((position_ras - overlay_to_ras[:3, 3])[2] / 2.5))
        np.testing.assert_allclose(position_ras, (overlay_to_ras @ [0, 0, k, 1])[:3], atol=1e-3)
        np.testing.assert_allclose(parametric_map.pixel_array[frame], overlay_values[k], atol=1e-6)

    # The report's numbers are the summary's (the seed's own slice).
    report = pydicom.dcmread(out / entry["dicom"][2])
    numbers = {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
               for item in report.ContentSequence if item.ValueType == "NUM"}
    probabilities = entry["malignancy_probability"]
    assert numbers["Malignancy probability of x"] == pytest.approx(probabilities["x"], abs=1e-6)
    assert numbers["Malignancy probability of G-(x)"] == pytest.approx(probabilities["G_neg(x)"], abs=1e-6)
    assert numbers["Malignancy probability of G+(x)"] == pytest.approx(probabilities["G_pos(x)"], abs=1e-6)
    assert numbers["Relevance display limit"] == pytest.approx(entry["through_nodule"]["relevance"]["display_limit"])

    # The identifiers are in the DICOM objects (they must be, to file with the study) and nowhere else.
    assert str(parametric_map.PatientName) == PATIENT_NAME and report.PatientID == PATIENT_ID
    for identifier in IDENTIFIERS:
        assert identifier.decode() not in captured.out + captured.err
    for path in out.rglob("*"):
        assert not any(identifier.decode() in path.name for identifier in IDENTIFIERS)
        if path.is_file() and path.parent.name != "dicom":
            content = path.read_bytes()
            assert not any(identifier in content for identifier in IDENTIFIERS), path.name


def test_a_second_run_replaces_the_dicom_folder_and_a_strangers_file_there_stops_it(dicom_ct, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(dicom_ct, "--seed=0,0,0", "--seed=5,5,0", "--out", out, "--dicom", "--no-figures") == 0
    assert len(list((out / "dicom").iterdir())) == 6
    assert run(dicom_ct, "--seed=0,0,0", "--out", out, "--dicom", "--no-figures") == 0
    assert "replacing the earlier run" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "dicom").iterdir()) == [
        "explanation_report_01.dcm", "relevance_map_01.dcm", "relevance_regions_01.dcm"]
    (out / "dicom" / "notes.txt").write_text("mine")
    assert run(dicom_ct, "--seed=0,0,0", "--out", out, "--dicom") == EXIT_BAD_INPUT
    assert "dicom/notes.txt" in capsys.readouterr().err
    assert (out / "dicom" / "notes.txt").read_text() == "mine"
    # Without --dicom, the earlier run's dicom folder goes with it.
    (out / "dicom" / "notes.txt").unlink()
    assert run(dicom_ct, "--seed=0,0,0", "--out", out, "--no-figures") == 0
    assert not (out / "dicom").exists()


def test_dicom_for_a_ct_that_is_not_a_dicom_series_is_refused_before_any_work(lung_volume, tmp_path, capsys):
    volume, ijk_to_ras = lung_volume
    ct = write_volume(volume, ijk_to_ras, tmp_path / "ct.nrrd")
    out = tmp_path / "out"
    assert run(ct, "--seed=0,0,0", "--out", out, "--dicom") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "--dicom needs the CT as a DICOM series folder: ct.nrrd is a NRRD file" in error
    assert "Without --dicom the relevance is written as NRRD" in error
    assert not out.exists()
