"""Uploads that would give a wrong answer without a word (issue 23, items 1, 6, 8): the web viewer reads
them through the core's read_volume and check_ct_volume, so it refuses what the command line refuses.
Files are written for real (SimpleITK, pydicom) and handed over as trame hands uploads."""

from __future__ import annotations

import os

import pydicom
import pytest

from cyclegan_explain_web.volume_upload import read_uploaded_volume, write_uploaded_files

from CycleGANExplainLib.volume_checks import NotCTError
from CycleGANExplainLib.volume_io import UnreadableVolumeError, write_volume


def upload(tmp_path, files) -> object:
    folder = tmp_path / "upload"
    folder.mkdir()
    write_uploaded_files([{"name": name, "content": content} for name, content in files], folder)
    return read_uploaded_volume(folder)


def test_a_truncated_nifti_upload_is_refused(tmp_path, lung_volume):
    volume, ijk_to_ras = lung_volume
    data = write_volume(volume, ijk_to_ras, tmp_path / "ct.nii.gz").read_bytes()
    with pytest.raises(UnreadableVolumeError, match="ct.nii.gz is truncated"):
        upload(tmp_path, [("ct.nii.gz", data[: len(data) * 3 // 4])])


def test_micrometre_voxels_are_refused(tmp_path, lung_volume):
    volume, ijk_to_ras = lung_volume
    scaled = ijk_to_ras.copy()
    scaled[:3, :3] *= 1000.0
    data = write_volume(volume, scaled, tmp_path / "ct.nrrd").read_bytes()
    with pytest.raises(NotCTError, match="a CT's lie between 0.1 and 10 mm"):
        upload(tmp_path, [("ct.nrrd", data)])


def test_an_mr_series_is_refused(tmp_path, lung_volume, ct_series_writer):
    volume, _ = lung_volume
    folder = tmp_path / "series"
    ct_series_writer(folder, volume[11:19], 0.8, [2.0 * k for k in range(8)], (-150.0, -170.0), 2.0)
    for name in sorted(os.listdir(folder)):
        dataset = pydicom.dcmread(folder / name)
        dataset.Modality = "MR"
        dataset.save_as(folder / name)
    with pytest.raises(UnreadableVolumeError, match=r"is a MR image \(its header's Modality\), not a CT"):
        upload(tmp_path, [(f"series/{name}", (folder / name).read_bytes()) for name in sorted(os.listdir(folder))])
