"""The web viewer's "Download DICOM results", in-process on a real viewer (trame server not started): a DICOM
series uploaded as trame hands it over, explained, and the zip the page would download opened and read back
with pydicom; a CT that is not DICOM gets a sentence instead of the button; nothing stays on disk."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import tempfile
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.uid import ParametricMapStorage, SegmentationStorage

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib.dicom_results import DicomResultsError, require_highdicom
from CycleGANExplainLib.mrml_explain import volume_array_and_geometry
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE

LPS = np.diag([-1.0, -1.0, 1.0])
PATIENT_ID = "PHIID-77031-WEB"
PATIENT_NAME = "ZZWEBDOWNLOAD^PATIENT"
EXPECTED_MEMBERS = ["relevance_map_01.dcm", "relevance_regions_01.dcm", "explanation_report_01.dcm"]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The process's temporary folder, here: what the viewer leaves in it can be seen."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def dicom_upload(tmp_path, ct_series_writer, lung_volume):
    """The lung volume (its nodule at RAS 0, 0, 0) as a real CT series, as trame hands uploaded files over
    (name and bytes), and each instance's SOPInstanceUID."""
    volume, ijk_to_ras = lung_volume
    origin_lps = LPS @ ijk_to_ras[:3, 3]
    folder = tmp_path / "ct"
    ct_series_writer(folder, volume, 1.5, [origin_lps[2] + 2.5 * k for k in range(volume.shape[0])], origin_lps[:2],
                     2.5, patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    paths = sorted(folder.glob("*.dcm"))
    uploads = [{"name": path.name, "content": path.read_bytes()} for path in paths]
    return uploads, {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in paths}


def download(viewer) -> "bytes | None":
    """What the page's button receives from the server."""
    return asyncio.run(viewer.download_dicom_results())


def test_an_uploaded_series_explained_downloads_as_dicom_in_its_study(synthetic_viewer, explain_in, dicom_upload,
                                                                      private_tmp, caplog):
    import slicer

    viewer = synthetic_viewer
    uploads, instances = dicom_upload
    caplog.set_level(logging.DEBUG)
    asyncio.run(viewer._load_uploaded(uploads))
    assert viewer.state.error_text == "" and viewer.state.dicom_note == ""
    assert list(private_tmp.iterdir()) == []  # the upload's folder is gone; its headers are in memory
    assert download(viewer) is None  # no result yet
    assert viewer.state.error_text == "Could not write the DICOM results: explain a point first."

    explain_in(viewer, (0.0, 0.0, 0.0))
    assert viewer.state.has_result, viewer.state.error_text
    zipped = download(viewer)
    assert viewer.state.error_text == "" and not viewer.state.dicom_writing
    assert list(private_tmp.iterdir()) == []  # the objects' folder too

    archive = zipfile.ZipFile(io.BytesIO(zipped))
    assert archive.namelist() == EXPECTED_MEMBERS
    parametric_map, regions, report = (pydicom.dcmread(io.BytesIO(archive.read(name))) for name in EXPECTED_MEMBERS)
    assert (parametric_map.SOPClassUID, regions.SOPClassUID) == (ParametricMapStorage, SegmentationStorage)
    assert (regions.Modality, report.Modality) == ("SEG", "SR")
    for dataset in (parametric_map, regions):
        referenced = {item.ReferencedSOPInstanceUID
                      for item in dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert referenced == instances
    evidence = {item.ReferencedSOPInstanceUID for study in report.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == instances | {parametric_map.SOPInstanceUID, regions.SOPInstanceUID}
    # In the patient's study, as DICOM requires, and nowhere else: not in a name, the page or the log.
    for dataset in (parametric_map, regions, report):
        assert (str(dataset.PatientName), dataset.PatientID) == (PATIENT_NAME, PATIENT_ID)
    for identifier in (PATIENT_NAME, PATIENT_ID, "ZZWEBDOWNLOAD"):
        assert not any(identifier in name for name in archive.namelist())
        assert identifier not in caplog.text
        assert identifier not in str(viewer.state.to_dict())

    # The map is the overlay the page shows, slice by slice, where the overlay lies (in the frames' own order).
    relevance = slicer.util.arrayFromVolume(viewer.overlay_node)
    _, overlay_to_ras = volume_array_and_geometry(viewer.overlay_node)
    assert parametric_map.NumberOfFrames == relevance.shape[0] > 1
    slices = []
    for frame, item in enumerate(parametric_map.PerFrameFunctionalGroupsSequence):
        position_ras = LPS @ np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = int(np.rint((position_ras - overlay_to_ras[:3, 3])[2] / overlay_to_ras[2, 2]))
        np.testing.assert_allclose(position_ras, (overlay_to_ras @ [0, 0, k, 1])[:3], atol=1e-3)
        np.testing.assert_allclose(parametric_map.pixel_array[frame], relevance[k], atol=1e-7)
        slices.append(k)
    assert sorted(slices) == list(range(relevance.shape[0]))
    numbers = {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
               for item in report.ContentSequence if item.ValueType == "NUM"}
    assert numbers["Malignancy probability of x"] == pytest.approx(float(viewer.state.p_x), abs=5e-4)


def test_a_ct_that_is_not_dicom_gets_a_sentence_instead_of_the_button(synthetic_viewer, explain_in, private_tmp):
    viewer = synthetic_viewer
    viewer.load_sample(SYNTHETIC_SAMPLE)  # a NRRD file
    explain_in(viewer, viewer_module.sample_nodule_ras("N2", SYNTHETIC_SAMPLE))
    assert viewer.state.has_result, viewer.state.error_text
    note = viewer.state.dicom_note
    assert note.startswith("No DICOM download: this CT is a NRRD file, not a DICOM series")
    assert note.endswith("cyclegan-explain explain --dicom.")
    # The page shows the button only without a note, and the note in its place.
    html = viewer.ui.html
    assert 'id="download-dicom"' in html and 'v-if="!dicom_note"' in html and 'id="dicom-note"' in html
    assert download(viewer) is None
    assert viewer.state.error_text == f"Could not write the DICOM results: {note}"
    assert list(private_tmp.iterdir()) == []


def test_without_highdicom_the_page_says_how_to_install_it(synthetic_viewer, dicom_upload, monkeypatch):
    viewer = synthetic_viewer
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom fails, as when it is not installed
    with pytest.raises(DicomResultsError) as missing:
        require_highdicom()
    asyncio.run(viewer._load_uploaded(dicom_upload[0]))
    assert viewer.state.error_text == ""  # the CT opens; only its DICOM results are unavailable
    assert viewer.state.dicom_note == f"No DICOM results for this series: {missing.value}"
    assert "pip install 'highdicom>=0.22'" in viewer.state.dicom_note
