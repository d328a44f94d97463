"""Turning files uploaded from the browser into a CT volume and into a volume node.

Reading goes through ``CycleGANExplainLib.volume_io`` (SimpleITK, Slicer's RAS convention), as in
the command line, so the browser gets the same formats and the same error messages:
one NRRD / NIfTI / MHA file, or a DICOM series uploaded as several files, a folder or a .zip.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import numpy as np

from CycleGANExplainLib.volume_checks import check_ct_volume
from CycleGANExplainLib.volume_io import DEFAULT_MAX_VOXELS, LoadedVolume, UnreadableVolumeError, read_volume

# Lung window (W 1500, L -600): what a reader uses to look at lung nodules.
LUNG_WINDOW = (1500.0, -600.0)


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may cost the server: its bytes, a .zip's unpacked bytes, the voxels its
    header declares (checked before any pixel is read). ``cyclegan-explain-web`` has flags for each."""

    max_upload_bytes: int = 1_024_000_000
    max_unpacked_bytes: Optional[int] = None  # None: twice max_upload_bytes
    max_voxels: Optional[int] = DEFAULT_MAX_VOXELS

    @property
    def unpacked_limit(self) -> int:
        return self.max_unpacked_bytes if self.max_unpacked_bytes is not None else 2 * self.max_upload_bytes


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB"


def _flat_name(number: int, name: str) -> str:
    """A file name that stays inside the upload folder and unique (a DICOM folder may repeat names)."""
    return f"{number:05d}_{Path(name.replace(chr(92), '/')).name or 'upload'}"


def write_uploaded_files(files: Iterable[Mapping], upload_dir: Path, limits: UploadLimits = UploadLimits()) -> None:
    """Write trame's uploaded file dicts (name, content) into the empty folder ``upload_dir``;
    UnreadableVolumeError when together they exceed ``limits.max_upload_bytes``."""
    files = list(files)
    chunks = [file.get("content") or b"" for file in files]
    total = sum(sum(map(len, chunk)) if isinstance(chunk, list) else len(chunk) for chunk in chunks)
    if total > limits.max_upload_bytes:
        raise UnreadableVolumeError(f"The upload is {_megabytes(total)}, more than the limit of "
                                    f"{_megabytes(limits.max_upload_bytes)} (cyclegan-explain-web --max-upload-mb).")
    for number, (file, content) in enumerate(zip(files, chunks)):
        with open(upload_dir / _flat_name(number, str(file.get("name", ""))), "wb") as stream:
            for part in content if isinstance(content, list) else [content]:  # large files arrive in chunks
                stream.write(part)


def _extract_zip(archive: Path, limits: UploadLimits) -> Path:
    folder = archive.parent / "unzipped"
    folder.mkdir()
    name = archive.name[6:]
    limit = limits.unpacked_limit
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [member for member in zipped.infolist() if not member.is_dir()]
            declared = sum(member.file_size for member in members)
            if declared > limit:
                raise UnreadableVolumeError(f"{name} declares {_megabytes(declared)} of files, more than the limit of "
                                            f"{_megabytes(limit)} (cyclegan-explain-web --max-upload-mb).")
            # zipfile reads no member beyond its declared size (a larger one fails its CRC check), so
            # the declared total bounds what is written, and members are streamed, not held in memory.
            for number, member in enumerate(members):
                with zipped.open(member) as source, open(folder / _flat_name(number, member.filename), "wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
    except (zipfile.BadZipFile, NotImplementedError) as error:  # NotImplementedError: an unknown compression
        raise UnreadableVolumeError(f"{name} is not a readable zip archive: {error}") from error
    return folder


def read_uploaded_volume(upload_dir: Path, limits: UploadLimits = UploadLimits()) -> LoadedVolume:
    """Read the files of ``upload_dir`` as one CT volume and check that it is a CT in HU.

    One file is read as an image (a .zip as the DICOM series it holds); several files are read
    as one DICOM series. Raises UnreadableVolumeError, InvalidVolumeError or NotCTError.
    """
    files = sorted(path for path in Path(upload_dir).iterdir() if path.is_file())
    if not files:
        raise UnreadableVolumeError("No file was uploaded.")
    try:
        if len(files) > 1:
            return read_ct_volume(upload_dir, limits.max_voxels)
        if files[0].suffix.lower() == ".zip":
            return read_ct_volume(_extract_zip(files[0], limits), limits.max_voxels)
        return read_ct_volume(files[0], limits.max_voxels)
    except UnreadableVolumeError as error:
        raise UnreadableVolumeError(without_server_paths(str(error), Path(upload_dir))) from error


def without_server_paths(message: str, upload_dir: Path) -> str:
    """``message`` without the server's temporary folder: its paths mean nothing to the person in
    the browser, and they tell a stranger how the server's disk is laid out."""
    for folder in (upload_dir / "unzipped", upload_dir):
        message = message.replace(f"{folder}/", "").replace(str(folder), "the uploaded files")
    return message


def read_ct_volume(path: Union[str, Path], max_voxels: Optional[int] = DEFAULT_MAX_VOXELS) -> LoadedVolume:
    """``volume_io.read_volume``, refused unless it is a 3D image of a CT in Hounsfield units."""
    loaded = read_volume(path, max_voxels=max_voxels)
    check_ct_volume(loaded.volume_kji, loaded.ijk_to_ras)
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
