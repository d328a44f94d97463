"""Reading NRRD/NIfTI/DICOM into Slicer's conventions, and refusing what is not a 3D CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from CycleGANExplainLib.volume_checks import NotCTError, check_ct_intensities
from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume, write_volume


def write_dicom_series(folder: Path, volume_hu: np.ndarray, spacing=(0.8, 0.8), thickness=2.0,
                       origin_lps=(-150.0, -170.0, -60.0), series_uid=None) -> str:
    """A real CT series: int16 stored values with rescale slope 1, intercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    for index, slice_hu in enumerate(volume_hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{index:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Synthetic", "SYNTH001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [origin_lps[0], origin_lps[1], origin_lps[2] + index * thickness]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = slice_hu.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (slice_hu + 1024).astype(np.int16).tobytes()
        ds.save_as(str(folder / f"{index:03d}.dcm"), enforce_file_format=True)
    return series_uid


def test_dicom_series_reads_in_hu_with_slicer_geometry(tmp_path):
    volume = np.full((6, 32, 40), -900, np.int16)
    volume[3, 10, 20] = 300
    write_dicom_series(tmp_path / "ct", volume)
    loaded = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(loaded.volume_kji, volume)
    # LPS origin (-150, -170, -60) is RAS (150, 170, -60); columns go to +L (= -R).
    np.testing.assert_allclose(loaded.ijk_to_ras @ [20, 10, 3, 1], [150 - 16.0, 170 - 8.0, -54.0, 1.0], atol=1e-4)
    assert "DICOM series of 6 files" == loaded.description


def test_folder_with_two_series_asks_which(tmp_path):
    volume = np.full((3, 8, 8), -900, np.int16)
    first = write_dicom_series(tmp_path / "mixed", volume)
    second = generate_uid()
    write_dicom_series(tmp_path / "other", volume, series_uid=second)
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b{path.name}")
    with pytest.raises(UnreadableVolumeError, match="holds 2 DICOM series; choose one with --series"):
        read_volume(tmp_path / "mixed")
    assert read_volume(tmp_path / "mixed", series_uid=first).volume_kji.shape == (3, 8, 8)


def test_nrrd_and_nifti_round_trip_geometry(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    ijk_to_ras = np.array([[0.0, 0.9, 0, 10.0], [-0.7, 0.0, 0, -5.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
    for suffix in (".nrrd", ".nii.gz"):
        loaded = read_volume(write_volume(array, ijk_to_ras, tmp_path / f"v{suffix}"))
        np.testing.assert_array_equal(loaded.volume_kji, array)
        np.testing.assert_allclose(loaded.ijk_to_ras, ijk_to_ras, atol=1e-5)


def test_unreadable_and_2d_inputs_get_specific_errors(tmp_path):
    with pytest.raises(UnreadableVolumeError, match="No such file"):
        read_volume(tmp_path / "missing.nrrd")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(UnreadableVolumeError, match="Cannot read .*garbage.nrrd"):
        read_volume(garbage)
    flat = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(flat))
    with pytest.raises(UnreadableVolumeError, match="is a 2D image; expected a 3D CT"):
        read_volume(flat)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableVolumeError, match="No DICOM series"):
        read_volume(tmp_path / "empty")


def test_ct_intensity_check(lung_volume):
    volume, _ = lung_volume
    check_ct_intensities(volume)
    with pytest.raises(NotCTError, match="contains air"):
        check_ct_intensities(np.abs(volume.astype(np.float32)) / 1000.0)  # an MR-like positive image
    with pytest.raises(NotCTError, match="NaN"):
        check_ct_intensities(np.where(volume > 0, np.nan, volume.astype(np.float32)))
    with pytest.raises(NotCTError, match="rescale slope"):
        check_ct_intensities(volume.astype(np.float32) * 100.0)
