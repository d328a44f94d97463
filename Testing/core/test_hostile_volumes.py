"""Volumes that would give a wrong answer without a word (issue 23): files that end early, spacings
that mirror or shrink the volume, DICOM series whose slices disagree or whose orientation is not a
rotation, non-CT modalities and sheared NIfTI geometry. Each is written for real (SimpleITK,
pydicom) and read through ``read_volume``, the reader of the command line, the web viewer and
training's VOIs."""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.volume_checks import NotCTError, check_ct_volume, check_voxel_spacing
from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume, write_volume

SPACING_RAS = np.array([[-0.7, 0, 0, 20.0], [0, -0.7, 0, 10.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def ct_volume() -> np.ndarray:
    volume = np.full((12, 40, 40), -850, np.int16)
    volume[4:8, 15:25, 15:25] = 40
    return volume


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz", "ct.mha", "ct_raw.mha"])
def test_a_file_shorter_than_its_header_declares_is_refused(tmp_path, name):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(ct_volume()), str(path), useCompression=not name.startswith("ct_raw"))
    read_volume(path)  # whole: reads
    truncate(path, 0.8)
    with pytest.raises(UnreadableVolumeError, match=rf"{re.escape(name)} is truncated") as raised:
        read_volume(path)
    assert "No such file or directory" not in str(raised.value)


def test_a_nifti_whose_gzip_stream_is_whole_but_short_is_refused(tmp_path):
    """A .nii.gz compressed from an already-truncated .nii: the gzip stream ends properly."""
    path = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.GetImageFromArray(ct_volume()), str(path))
    data = path.read_bytes()
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(data[: len(data) - 3200]))
    with pytest.raises(UnreadableVolumeError, match=r"short.nii.gz is truncated: its header declares 38,400 bytes of "
                                                    r"voxel data but the file decompresses to 35,200"):
        read_volume(tmp_path / "short.nii.gz")


@pytest.mark.parametrize("spelling", [b"ElementSpacing = -0.7 0.7 2.5", b"ElementSize = -0.7 0.7 2.5",
                                      b"ElementSpacing: -0.7 0.7 2.5", b"ElementSpacing = 0.7 0.7 -2.5"])
def test_a_negative_metaimage_spacing_is_refused_however_it_is_spelt(tmp_path, spelling):
    path = write_volume(ct_volume(), SPACING_RAS, tmp_path / "ct.mha")
    header = path.read_bytes()
    path.write_bytes(re.sub(rb"ElementSpacing = [^\n]*", spelling, header, count=1))
    with pytest.raises(UnreadableVolumeError, match="declares a voxel spacing of .*-.* mm; spacings must be positive"):
        read_volume(path)


def test_voxel_sizes_no_ct_has_are_refused_with_the_range(tmp_path):
    micrometres = SPACING_RAS.copy()
    micrometres[:3, :3] *= 1000.0  # 700 x 700 x 2500 "mm": micrometres written as millimetres
    path = write_volume(ct_volume(), micrometres, tmp_path / "ct.nrrd")
    loaded = read_volume(path)
    with pytest.raises(NotCTError, match=r"voxels are 700 x 700 x 2500 mm; a CT's lie between 0.1 and 10 mm"):
        check_ct_volume(loaded.volume_kji, loaded.ijk_to_ras)
    check_voxel_spacing(SPACING_RAS)
    with pytest.raises(NotCTError, match="0.05 x 0.7 x 2.5 mm"):
        check_voxel_spacing(np.diag([0.05, 0.7, 2.5, 1.0]))


def test_an_mr_metaimage_is_refused_naming_the_modality(tmp_path):
    path = write_volume(ct_volume(), SPACING_RAS, tmp_path / "head.mha")
    path.write_bytes(path.read_bytes().replace(b"ObjectType = Image\n", b"ObjectType = Image\nModality = MET_MOD_MR\n", 1))
    with pytest.raises(UnreadableVolumeError, match=r"head.mha is a MR image \(its header's Modality\), not a CT"):
        read_volume(path)


def sheared_nifti(tmp_path: Path) -> Path:
    path = tmp_path / "sheared.nii"
    image = sitk.GetImageFromArray(ct_volume())
    image.SetSpacing((0.7, 0.7, 2.5))
    sitk.WriteImage(image, str(path))
    header = bytearray(path.read_bytes())
    assert struct.unpack_from("<hh", header, 252) == (1, 1)  # qform and sform both set by ITK
    rows = list(struct.unpack_from("<12f", header, 280))
    rows[1] = 0.3  # x moves with the row index: a sheared sform
    struct.pack_into("<12f", header, 280, *rows)
    path.write_bytes(bytes(header))
    return path


def test_a_sheared_sform_replaced_by_the_qform_is_said(tmp_path):
    loaded = read_volume(sheared_nifti(tmp_path))
    assert len(loaded.notes) == 1
    assert "sheared.nii's sform (its scanner-space geometry) is sheared" in loaded.notes[0]
    assert "qform was used instead, as 3D Slicer does; the two place voxels up to 11.7 mm apart" in loaded.notes[0]
    whole = write_volume(ct_volume(), SPACING_RAS, tmp_path / "plain.nii")
    assert read_volume(whole).notes == ()


def dicom_series(tmp_path: Path, writer, count: int = 6) -> Path:
    volume = np.full((count, 32, 32), -850, np.int16)
    volume[:, 10:20, 10:20] = 40
    writer(tmp_path / "ct", volume, 0.7, [2.5 * k for k in range(count)], (-11.0, -11.0), 2.5)
    return tmp_path / "ct"


def edit_slice(folder: Path, name: str, **tags) -> None:
    dataset = pydicom.dcmread(folder / name)
    for tag, value in tags.items():
        setattr(dataset, tag, value)
    dataset.save_as(folder / name)


def test_pixel_spacing_that_changes_between_slices_is_refused_naming_them(tmp_path, ct_series_writer):
    folder = dicom_series(tmp_path, ct_series_writer)
    edit_slice(folder, "0003.dcm", PixelSpacing=[0.8, 0.8])
    edit_slice(folder, "0004.dcm", PixelSpacing=[0.8, 0.8])
    with pytest.raises(UnreadableVolumeError, match=r"the pixel spacing \(PixelSpacing\) changes between slices: "
                                                    r"0000.dcm has 0.7 x 0.7 mm but 0003.dcm \(0.8 x 0.8 mm\), "
                                                    r"0004.dcm \(0.8 x 0.8 mm\)"):
        read_volume(folder)


def test_one_odd_sized_slice_is_named(tmp_path, ct_series_writer):
    folder = dicom_series(tmp_path, ct_series_writer)
    odd = pydicom.dcmread(folder / "0002.dcm")
    odd.Rows = odd.Columns = 16
    odd.PixelData = odd.PixelData[: 16 * 16 * 2]
    odd.save_as(folder / "0002.dcm")
    with pytest.raises(UnreadableVolumeError, match=r"image size \(columns x rows\) changes between slices: 0000.dcm "
                                                    r"has 32 x 32 pixels but 0002.dcm \(16 x 16 pixels\)"):
        read_volume(folder)


@pytest.mark.parametrize("orientation, problem", [
    ([2, 0, 0, 0, 1, 0], "lengths 2.000 and 1.000"),
    ([1, 0, 0, 0.5, 0.866025, 0], "cosine between them 0.500"),
])
def test_orientation_that_is_not_a_rotation_is_refused(tmp_path, ct_series_writer, orientation, problem):
    folder = dicom_series(tmp_path, ct_series_writer)
    for name in sorted(os.listdir(folder)):
        edit_slice(folder, name, ImageOrientationPatient=orientation)
    with pytest.raises(UnreadableVolumeError, match="is not two perpendicular unit vectors") as raised:
        read_volume(folder)
    assert problem in str(raised.value) and "gantry tilt" not in str(raised.value)


@pytest.mark.parametrize("value", ["abc", "inf"])
def test_a_malformed_image_position_is_named(tmp_path, ct_series_writer, value):
    folder = dicom_series(tmp_path, ct_series_writer)
    data = (folder / "0001.dcm").read_bytes()  # the bytes themselves: pydicom would refuse to write them
    assert data.count(b"-11.0\\-11.0\\2.5 ") == 1
    (folder / "0001.dcm").write_bytes(data.replace(b"-11.0\\-11.0\\2.5 ", b"-11.0\\-11.0\\" + value.encode() + b" ", 1))
    with pytest.raises(UnreadableVolumeError, match=rf"0001.dcm has a malformed ImagePositionPatient .*{value}.*"
                                                    r"expected 3 finite numbers"):
        read_volume(folder)


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_a_non_ct_dicom_series_is_refused_naming_the_modality(tmp_path, ct_series_writer, modality):
    folder = dicom_series(tmp_path, ct_series_writer)
    for name in sorted(os.listdir(folder)):
        edit_slice(folder, name, Modality=modality)
    with pytest.raises(UnreadableVolumeError, match=rf"is a {modality} image \(its header's Modality\), not a CT"):
        read_volume(folder)


def test_a_path_that_is_not_utf8_is_refused_not_a_crash(tmp_path):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/ct\xff.nrrd"))
    with open(os.fsencode(path), "wb") as stream:
        stream.write(write_volume(ct_volume(), SPACING_RAS, tmp_path / "ct.nrrd").read_bytes())
    with pytest.raises(UnreadableVolumeError, match=r"ct\\xff.nrrd is not valid UTF-8"):
        read_volume(path)


def test_a_whole_nifti_in_two_gzip_members_reads(tmp_path):
    """Its trailing size is only the last member's: the whole stream is counted, and it is whole."""
    path = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.GetImageFromArray(ct_volume()), str(path))
    data = path.read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(data[:20000]) + gzip.compress(data[20000:]))
    np.testing.assert_array_equal(read_volume(tmp_path / "two.nii.gz").volume_kji, ct_volume())


def test_a_dicom_file_whose_name_is_not_utf8_is_refused_not_a_crash(tmp_path, ct_series_writer):
    folder = dicom_series(tmp_path, ct_series_writer)
    os.rename(folder / "0002.dcm", os.fsencode(folder) + b"/\xff.dcm")
    with pytest.raises(UnreadableVolumeError, match=r"\\xff.dcm is not valid UTF-8"):
        read_volume(folder)
