"""The web viewer's parts that need no browser: uploaded files to a CT, the CT to a volume node,
and a slice-view pixel to RAS through the view's own XY-to-RAS."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cyclegan_explain_web.slice_clicks import slice_xy_to_ras
from cyclegan_explain_web.volume_upload import (
    LUNG_WINDOW,
    add_volume_node,
    read_uploaded_volume,
    write_uploaded_files,
)

from CycleGANExplainLib.volume_checks import NotCTError
from CycleGANExplainLib.volume_io import LoadedVolume, UnreadableVolumeError, read_volume, write_volume

def _as_uploads(paths, names=None) -> list:
    """What trame hands the server for uploaded files: dicts with the name and the bytes."""
    names = names or [path.name for path in paths]
    return [{"name": name, "content": path.read_bytes()} for name, path in zip(names, paths)]


@pytest.fixture
def dicom_series(tmp_path, lung_volume, ct_series_writer):
    volume, _ = lung_volume
    folder = tmp_path / "series"
    # The slices through the nodule: a slab of lung alone is refused as holding no tissue.
    ct_series_writer(folder, volume[11:19], 0.8, [2.0 * k for k in range(8)], (-150.0, -170.0), 2.0)
    return folder


def test_dicom_series_as_several_files_or_zip_reads_like_the_folder(tmp_path, dicom_series):
    expected = read_volume(dicom_series)
    files = sorted(dicom_series.iterdir())

    # A folder upload: the same names in different subfolders must not overwrite each other.
    several = tmp_path / "several"
    several.mkdir()
    write_uploaded_files(_as_uploads(files, [f"series/{i % 2}/{f.name[-5:]}" for i, f in enumerate(files)]), several)
    assert len(list(several.iterdir())) == len(files)
    from_files = read_uploaded_volume(several)

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in files:
            zipped.write(file, f"exam/ct/{file.name}")
    zipped_dir = tmp_path / "zipped"
    zipped_dir.mkdir()
    write_uploaded_files(_as_uploads([archive]), zipped_dir)
    from_zip = read_uploaded_volume(zipped_dir)

    for loaded in (from_files, from_zip):
        np.testing.assert_array_equal(loaded.volume_kji, expected.volume_kji)
        np.testing.assert_allclose(loaded.ijk_to_ras, expected.ijk_to_ras, atol=1e-6)


def test_uploaded_names_cannot_leave_the_upload_folder(tmp_path, lung_volume):
    volume, ijk_to_ras = lung_volume
    source = write_volume(volume, ijk_to_ras, tmp_path / "ct.nrrd")
    upload = tmp_path / "deep" / "upload"
    upload.mkdir(parents=True)
    write_uploaded_files(_as_uploads([source], ["../../escaped.nrrd"]), upload)
    assert not (tmp_path / "escaped.nrrd").exists()
    np.testing.assert_array_equal(read_uploaded_volume(upload).volume_kji, volume)


def test_bad_uploads_get_messages_without_server_paths(tmp_path):
    garbage = tmp_path / "upload_garbage"
    garbage.mkdir()
    write_uploaded_files([{"name": "scan.nrrd", "content": b"not an image at all"}], garbage)
    with pytest.raises(UnreadableVolumeError, match="Cannot read 00000_scan.nrrd") as caught:
        read_uploaded_volume(garbage)
    assert str(garbage) not in str(caught.value)

    bad_zip = tmp_path / "upload_zip"
    bad_zip.mkdir()
    write_uploaded_files([{"name": "series.zip", "content": b"PK but not really"}], bad_zip)
    with pytest.raises(UnreadableVolumeError, match="series.zip is not a readable zip archive"):
        read_uploaded_volume(bad_zip)

    empty = tmp_path / "upload_empty"
    empty.mkdir()
    with pytest.raises(UnreadableVolumeError, match="No file was uploaded"):
        read_uploaded_volume(empty)

    mr_like = tmp_path / "upload_mr"
    mr_like.mkdir()
    write_volume(np.full((6, 16, 16), 300, np.int16), np.eye(4), mr_like / "mr.nii.gz")
    with pytest.raises(NotCTError, match="air"):
        read_uploaded_volume(mr_like)


def test_volume_node_holds_the_voxels_and_geometry(lung_volume):
    import slicer
    import vtk

    volume, ijk_to_ras = lung_volume
    scene = slicer.vtkMRMLScene()
    node = add_volume_node(scene, LoadedVolume(volume, ijk_to_ras, "test"), "CT")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), volume)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijk_to_ras)
    display = node.GetScalarVolumeDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == LUNG_WINDOW


def test_slice_view_pixel_to_ras_follows_the_axial_view():
    """Centre pixel = the point the view is centred on; screen right = patient left; up = anterior."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    logic = slicer.vtkMRMLSliceLogic()  # as trame-slicer's SliceView makes its slice node
    logic.SetMRMLScene(scene)
    node = logic.AddSliceNode("Red")
    node.SetOrientation("Axial")  # what the viewer's layout asks of its "Red" view
    node.SetDimensions(200, 100, 1)
    node.SetFieldOfView(400.0, 200.0, 1.0)  # 2 mm per pixel
    node.JumpSliceByCentering(-85.0, -20.0, -20.0)

    np.testing.assert_allclose(slice_xy_to_ras(node, (100, 50)), [-85.0, -20.0, -20.0], atol=1e-6)
    np.testing.assert_allclose(slice_xy_to_ras(node, (110, 50)), [-105.0, -20.0, -20.0], atol=1e-6)
    np.testing.assert_allclose(slice_xy_to_ras(node, (100, 60)), [-85.0, 0.0, -20.0], atol=1e-6)


def test_uploads_over_the_limits_are_refused_before_they_cost_memory(tmp_path, lung_volume):
    from cyclegan_explain_web.volume_upload import UploadLimits

    limits = UploadLimits(max_upload_bytes=10_000, max_voxels=50_000)
    too_big = tmp_path / "too_big"
    too_big.mkdir()
    with pytest.raises(UnreadableVolumeError, match="The upload is 0 MB, more than the limit of 0 MB"):
        write_uploaded_files([{"name": "a.nrrd", "content": [b"x" * 6000, b"y" * 6000]}], too_big, limits)
    assert list(too_big.iterdir()) == []

    # A zip bomb: a few kB that unpack to far more than the limit, its sizes declared or understated.
    for declared_honestly in (True, False):
        folder = tmp_path / f"bomb_{declared_honestly}"
        folder.mkdir()
        archive = folder / "00000_series.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("slice.dcm", b"\0" * 5_000_000)
        if not declared_honestly:  # rewrite the central directory's size: reading stops there
            data = bytearray(archive.read_bytes())
            at = data.rfind(b"PK\x01\x02")
            data[at + 24:at + 28] = (100).to_bytes(4, "little")
            archive.write_bytes(bytes(data))
        expected = "declares 5 MB of files, more than the limit of 2 MB" if declared_honestly else "Bad CRC-32"
        with pytest.raises(UnreadableVolumeError, match=f"series.zip .*{expected}"):
            read_uploaded_volume(folder, UploadLimits(max_upload_bytes=1_000_000))

    # A tiny header claiming a huge volume: refused from the header, before any pixel is allocated.
    header = tmp_path / "claims"
    header.mkdir()
    (header / "00000_huge.nrrd").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 768\nencoding: raw\nendian: little\n\n" + b"\0" * 64)
    with pytest.raises(UnreadableVolumeError, match="declares 2048 x 2048 x 768 = 3,221,225,472 voxels, more than "
                                                    "the limit of 629,145,600"):
        read_uploaded_volume(header)
    volume, ijk_to_ras = lung_volume
    fine = tmp_path / "fine"
    fine.mkdir()
    write_volume(volume, ijk_to_ras, fine / "00000_ct.nrrd")
    with pytest.raises(UnreadableVolumeError, match="more than the limit of 50,000"):
        read_uploaded_volume(fine, limits)
    assert read_uploaded_volume(fine).volume_kji.shape == volume.shape


def test_error_messages_never_show_the_server_folder(tmp_path):
    from cyclegan_explain_web.volume_upload import without_server_paths

    upload = tmp_path / "cyclegan-explain-upload-abc"
    message = f"Cannot use {upload} as one CT volume: No DICOM series found in folder {upload / 'unzipped'}."
    cleaned = without_server_paths(message, upload)
    assert str(tmp_path) not in cleaned and cleaned.count("the uploaded files") == 2
