"""Turning files uploaded from the browser into a CT volume and into a volume node.

Reading goes through ``CycleGANExplainLib.volume_io`` (SimpleITK, Slicer's RAS convention), as in
the command line, so the browser gets the same formats and the same error messages:
one NRRD / NIfTI / MHA file, or a DICOM series uploaded as several files, a folder or a .zip.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Union

import numpy as np

from CycleGANExplainLib.patch_sampling import validate_volume_geometry
from CycleGANExplainLib.volume_checks import check_ct_intensities
from CycleGANExplainLib.volume_io import LoadedVolume, UnreadableVolumeError, read_volume

# Lung window (W 1500, L -600): what a reader uses to look at lung nodules.
LUNG_WINDOW = (1500.0, -600.0)


def _flat_name(number: int, name: str) -> str:
    """A file name that stays inside the upload folder and unique (a DICOM folder may repeat names)."""
    return f"{number:05d}_{Path(name.replace(chr(92), '/')).name or 'upload'}"


def write_uploaded_files(files: Iterable[Mapping], upload_dir: Path) -> None:
    """Write trame's uploaded file dicts (name, content) into the empty folder ``upload_dir``."""
    for number, file in enumerate(files):
        content = file.get("content") or b""
        if isinstance(content, list):  # large files arrive in chunks
            content = b"".join(content)
        (upload_dir / _flat_name(number, str(file.get("name", "")))).write_bytes(content)


def _extract_zip(archive: Path) -> Path:
    folder = archive.parent / "unzipped"
    folder.mkdir()
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [member for member in zipped.infolist() if not member.is_dir()]
            for number, member in enumerate(members):
                (folder / _flat_name(number, member.filename)).write_bytes(zipped.read(member))
    except zipfile.BadZipFile as error:
        raise UnreadableVolumeError(f"{archive.name[6:]} is not a readable zip archive: {error}") from error
    return folder


def read_uploaded_volume(upload_dir: Path) -> LoadedVolume:
    """Read the files of ``upload_dir`` as one CT volume and check that it is a CT in HU.

    One file is read as an image (a .zip as the DICOM series it holds); several files are read
    as one DICOM series. Raises UnreadableVolumeError, InvalidVolumeError or NotCTError.
    """
    files = sorted(path for path in Path(upload_dir).iterdir() if path.is_file())
    if not files:
        raise UnreadableVolumeError("No file was uploaded.")
    try:
        if len(files) > 1:
            return read_ct_volume(upload_dir)
        if files[0].suffix.lower() == ".zip":
            return read_ct_volume(_extract_zip(files[0]))
        return read_ct_volume(files[0])
    except UnreadableVolumeError as error:
        raise UnreadableVolumeError(without_server_paths(str(error), Path(upload_dir))) from error


def without_server_paths(message: str, upload_dir: Path) -> str:
    """``message`` without the server's temporary folder: its paths mean nothing to the person in
    the browser, and they tell a stranger how the server's disk is laid out."""
    for folder in (upload_dir / "unzipped", upload_dir):
        message = message.replace(f"{folder}/", "").replace(str(folder), "the uploaded files")
    return message


def read_ct_volume(path: Union[str, Path]) -> LoadedVolume:
    """``volume_io.read_volume``, refused unless it is a 3D image of a CT in Hounsfield units."""
    loaded = read_volume(path)
    validate_volume_geometry(loaded.volume_kji, loaded.ijk_to_ras)
    check_ct_intensities(loaded.volume_kji)
    return loaded


def add_volume_node(scene, loaded: LoadedVolume, name: str):
    """A scalar volume node holding ``loaded`` (voxels and IJK-to-RAS), shown in the lung window."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(loaded.ijk_to_ras, dtype=float)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(loaded.volume_kji))
    node.CreateDefaultDisplayNodes()
    display = node.GetScalarVolumeDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(*LUNG_WINDOW)
    return node
