"""Uploads read nothing of the server's (issue 23, item 11): a NRRD or MetaImage header may name its
voxel data file anywhere, so the viewer reads a detached header only with the data file uploaded
beside it, named by its file name alone, and its refusals read the same whether or not a named
server path exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cyclegan_explain_web.volume_upload import read_uploaded_volume, write_uploaded_files

from CycleGANExplainLib.volume_io import UnreadableVolumeError, write_volume

DATA_FIELD = {".nhdr": "data file: ", ".mhd": "ElementDataFile = "}


def detached(folder: Path, volume, ijk_to_ras, suffix: str) -> "tuple[Path, Path]":
    """A real detached header and data file, as SimpleITK writes them (compressed data)."""
    folder.mkdir(parents=True)
    header = write_volume(volume, ijk_to_ras, folder / f"ct{suffix}")
    (data,) = [path for path in folder.iterdir() if path != header]
    return header, data


def name_data_file(header: Path, value: str) -> None:
    field = DATA_FIELD[header.suffix]
    lines = [field + value if line.startswith(field) else line for line in header.read_text().splitlines()]
    header.write_text("\n".join(lines) + "\n")


def upload(tmp_path: Path, paths, name: str = "upload") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_uploaded_files([{"name": path.name, "content": path.read_bytes()} for path in paths], folder)
    return folder


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_detached_header_is_read_with_the_data_file_uploaded_beside_it(tmp_path, lung_volume, suffix):
    volume, ijk_to_ras = lung_volume
    header, data = detached(tmp_path / "made", volume, ijk_to_ras, suffix)
    loaded = read_uploaded_volume(upload(tmp_path, [header, data]))
    np.testing.assert_array_equal(loaded.volume_kji, volume)
    np.testing.assert_allclose(loaded.ijk_to_ras, ijk_to_ras, atol=1e-6)

    with pytest.raises(UnreadableVolumeError, match=f"ct{suffix} names its voxel data file '{data.name}', which "
                                                    "was not uploaded with it"):
        read_uploaded_volume(upload(tmp_path, [header], "header_alone"))


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_header_naming_a_server_path_is_refused_alike_whether_it_exists_or_not(tmp_path, lung_volume, suffix):
    """The server's file here is a readable CT, so reading it would succeed: it must not be read."""
    volume, ijk_to_ras = lung_volume
    header, data = detached(tmp_path / "server_files", volume, ijk_to_ras, suffix)
    messages = set()
    # Absolute and relative (from an upload folder beside server_files), existing and not.
    values = (str(data), str(tmp_path / "no_such_file.raw"), f"../server_files/{data.name}", "../no_such_file.raw",
              f"./{data.name}", f"C:\\{data.name}")
    for number, value in enumerate(values):
        name_data_file(header, value)
        folder = upload(tmp_path, [header], f"upload_{number}")
        with pytest.raises(UnreadableVolumeError) as caught:
            read_uploaded_volume(folder)
        assert str(tmp_path) not in str(caught.value)
        messages.add(str(caught.value))
    assert messages == {f"ct{suffix} names its voxel data file by a path. The viewer reads a header's data only "
                        "from a file uploaded with it and named in the header by its file name alone (for example "
                        "'data file: ct.raw')."}


def test_an_attached_nrrd_naming_a_data_file_is_refused_too(tmp_path, lung_volume):
    volume, ijk_to_ras = lung_volume
    header, data = detached(tmp_path / "server_files", volume, ijk_to_ras, ".nhdr")
    name_data_file(header, str(data))
    as_nrrd = header.with_suffix(".nrrd")
    header.rename(as_nrrd)
    with pytest.raises(UnreadableVolumeError, match="ct.nrrd names its voxel data file by a path"):
        read_uploaded_volume(upload(tmp_path, [as_nrrd]))


@pytest.mark.parametrize("value", ["LIST", "slice%03d.raw 1 10 1"])
def test_data_spread_over_several_files_is_refused(tmp_path, lung_volume, value):
    volume, ijk_to_ras = lung_volume
    header, data = detached(tmp_path / "made", volume, ijk_to_ras, ".nhdr")
    name_data_file(header, value)
    with pytest.raises(UnreadableVolumeError, match="spreads its voxel data over several files"):
        read_uploaded_volume(upload(tmp_path, [header, data]))


def test_a_header_uploaded_with_other_files_says_which_it_does_not_use(tmp_path, lung_volume):
    volume, ijk_to_ras = lung_volume
    header, data = detached(tmp_path / "made", volume, ijk_to_ras, ".mhd")
    stray = tmp_path / "notes.txt"
    stray.write_text("not a volume")
    with pytest.raises(UnreadableVolumeError, match=r"ct.mhd was uploaded with files it does not use \(notes.txt\)"):
        read_uploaded_volume(upload(tmp_path, [header, data, stray]))
