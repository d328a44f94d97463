"""Reading NRRD/NIfTI/DICOM into Slicer's conventions, and refusing what is not a 3D CT."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from CycleGANExplainLib.volume_checks import NotCTError, check_ct_intensities
from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume, write_volume


def write_series(writer, folder, volume, series_uid=None):
    """0.8 mm pixels, 2 mm slices from z = -60, LPS origin (-150, -170)."""
    z = [-60.0 + 2.0 * k for k in range(len(volume))]
    return writer(folder, volume, 0.8, z, (-150.0, -170.0), 2.0, series_uid=series_uid, reverse_file_order=True)


def test_dicom_series_reads_in_hu_with_slicer_geometry(tmp_path, ct_series_writer):
    volume = np.full((6, 32, 40), -900, np.int16)
    volume[3, 10, 20] = 300
    write_series(ct_series_writer, tmp_path / "ct", volume)
    loaded = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(loaded.volume_kji, volume)
    # LPS origin (-150, -170, -60) is RAS (150, 170, -60); columns go to +L (= -R).
    np.testing.assert_allclose(loaded.ijk_to_ras @ [20, 10, 3, 1], [150 - 16.0, 170 - 8.0, -54.0, 1.0], atol=1e-4)
    assert "DICOM series of 6 files" == loaded.description


def test_folder_with_two_series_asks_which(tmp_path, ct_series_writer):
    volume = np.full((3, 8, 8), -900, np.int16)
    first = write_series(ct_series_writer, tmp_path / "mixed", volume)
    write_series(ct_series_writer, tmp_path / "other", volume, series_uid=generate_uid())
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


def test_every_voxel_of_a_large_volume_is_checked():
    """Volumes over the old subsampling threshold: one bad voxel at an odd index is found."""
    volume = np.full((60, 512, 512), -900.0, np.float32)
    volume[30, 200:240, 200:240] = 40.0
    check_ct_intensities(volume)
    for bad, reason in ((np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (1e30, "range from -900 to 1e\\+30")):
        spoiled = volume.copy()
        spoiled[31, 101, 301] = bad
        with pytest.raises(NotCTError, match=reason):
            check_ct_intensities(spoiled)


def test_blank_air_volume_is_refused():
    with pytest.raises(NotCTError, match="highest intensity is -1000 HU: it holds nothing denser than air"):
        check_ct_intensities(np.full((20, 64, 64), -1000, np.int16))
