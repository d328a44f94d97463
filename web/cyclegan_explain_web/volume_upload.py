"""Turning files uploaded from the browser into a CT volume and into a volume node.

Reading goes through ``CycleGANExplainLib.volume_io`` (SimpleITK, Slicer's RAS convention), as in
the command line, so the browser gets the same formats and the same error messages:
one NRRD / NIfTI / MHA file, a detached header (.nhdr, .mhd) with its data file, or a DICOM
series uploaded as several files, a folder or a .zip. Nothing but the uploaded files is read: a
header may name its data file anywhere, so that name must be one of the files uploaded with it.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

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
    # A .zip's entries: a CT series is a few thousand slices; each entry costs a file on the server.
    max_zip_members: int = 20_000

    @property
    def unpacked_limit(self) -> int:
        return self.max_unpacked_bytes if self.max_unpacked_bytes is not None else 2 * self.max_upload_bytes


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB"


def _flat_name(number: int, name: str) -> str:
    """A file name that stays inside the upload folder and unique (a DICOM folder may repeat names)."""
    return f"{number:05d}_{Path(name.replace(chr(92), '/')).name or 'upload'}"


def uploaded_bytes(files: Iterable[Mapping]) -> int:
    """The bytes of trame's uploaded file dicts (a large file's content arrives as a list of parts)."""
    total = 0
    for file in files:
        content = file.get("content") or b""
        total += sum(map(len, content)) if isinstance(content, list) else len(content)
    return total


def check_upload_size(total: int, limits: UploadLimits) -> None:
    """UnreadableVolumeError when ``total`` bytes exceed ``limits.max_upload_bytes``."""
    if total > limits.max_upload_bytes:
        raise UnreadableVolumeError(f"The upload is {_megabytes(total)}, more than the limit of "
                                    f"{_megabytes(limits.max_upload_bytes)} (cyclegan-explain-web --max-upload-mb).")


def write_uploaded_files(files: Iterable[Mapping], upload_dir: Path, limits: UploadLimits = UploadLimits()) -> None:
    """Write trame's uploaded file dicts (name, content) into the empty folder ``upload_dir``;
    UnreadableVolumeError when together they exceed ``limits.max_upload_bytes``."""
    files = list(files)
    check_upload_size(uploaded_bytes(files), limits)
    chunks = [file.get("content") or b"" for file in files]
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
            entries = zipped.infolist()  # the central directory only: nothing is extracted yet
            if len(entries) > limits.max_zip_members:
                raise UnreadableVolumeError(f"{name} holds {len(entries):,} entries, more than the limit of "
                                            f"{limits.max_zip_members:,}; upload the series' files or a folder.")
            members = [member for member in entries if not member.is_dir()]
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


# Formats whose header may name another file as its voxel data (NRRD's "data file:", MetaImage's
# "ElementDataFile ="): ITK opens whatever path is written there, the server's own files included.
_NRRD_SUFFIXES = (".nrrd", ".nhdr")
_HEADER_SUFFIXES = _NRRD_SUFFIXES + (".mha", ".mhd")
_HEADER_BYTES = 1 << 16  # headers are a few hundred bytes; the data-file field is searched for here
_FIELD = re.compile(r"\s*([A-Za-z][A-Za-z ]*?)\s*[:=]\s*(.*?)\s*$")


def _uploaded_name(path: Path) -> str:
    """The name the file had in the browser (write_uploaded_files prefixes a number)."""
    return path.name[6:]


def _data_file_field(header: Path) -> Optional[Tuple[int, int, str]]:
    """Where the header names its voxel data's file: (start, end, value) in its bytes; None when
    the data is in the header's own file (no such field, or MetaImage's LOCAL)."""
    with open(header, "rb") as stream:
        head = stream.read(_HEADER_BYTES)
    nrrd = header.suffix.lower() in _NRRD_SUFFIXES
    found: List[Tuple[int, int, str]] = []
    start = 0
    for number, line in enumerate(head.split(b"\n")):
        text = line.decode("latin-1").rstrip("\r")
        line_start, start = start, start + len(line) + 1
        if nrrd and number > 0 and not text.strip():
            break  # NRRD: a blank line ends the header
        match = _FIELD.match(text)
        if not match or match.group(1).lower().replace(" ", "") not in ("datafile", "elementdatafile"):
            continue
        value = match.group(2)
        found.append((line_start + match.start(2), line_start + match.end(2), value))
        if not nrrd:
            break  # MetaImage: ElementDataFile is the last field; the data may follow
    if len(found) > 1:
        raise UnreadableVolumeError(f"{_uploaded_name(header)} names its data file more than once.")
    if not found or (not nrrd and found[0][2].upper() == "LOCAL"):
        return None
    return found[0]


def _confine_data_file(header: Path, uploads: Dict[str, Path]) -> Optional[Path]:
    """The uploaded file holding ``header``'s voxel data, with the header rewritten to name it in the
    upload folder; None when the data is in the header's own file. The data file must be named by
    its file name alone and be one of ``uploads`` (names as in the browser): a path is refused
    before anything is opened, with a message that is the same whether or not that path exists."""
    field = _data_file_field(header)
    if field is None:
        return None
    start, end, value = field
    name = _uploaded_name(header)
    if value.upper() == "LIST" or " " in value or "%" in value:
        raise UnreadableVolumeError(
            f"{name} spreads its voxel data over several files (a list or a numbered pattern); upload one "
            "NRRD or MHA file, or one header with a single data file.")
    if "/" in value or "\\" in value or value in ("", ".", "..") or re.match(r"[A-Za-z]:", value):
        raise UnreadableVolumeError(
            f"{name} names its voxel data file by a path. The viewer reads a header's data only from a file "
            "uploaded with it and named in the header by its file name alone (for example 'data file: ct.raw').")
    data = uploads.get(value)
    if data is None:
        raise UnreadableVolumeError(f"{name} names its voxel data file {value!r}, which was not uploaded with it; "
                                    "upload the header and its data file together.")
    if data.resolve().parent != header.resolve().parent:  # never: uploads are written flat in one folder
        raise UnreadableVolumeError(f"{name}'s data file is not in the upload.")
    content = header.read_bytes()
    header.write_bytes(content[:start] + data.name.encode("latin-1") + content[end:])  # its name on disk
    return data


def _read_header_upload(files: List[Path], limits: UploadLimits) -> LoadedVolume:
    """An upload holding a NRRD or MetaImage header: the header, and its data file when detached."""
    headers = [path for path in files if path.suffix.lower() in _HEADER_SUFFIXES]
    if len(headers) > 1:
        raise UnreadableVolumeError("Upload one NRRD or MetaImage volume at a time (the upload holds "
                                    f"{len(headers)} headers: {', '.join(_uploaded_name(path) for path in headers)}).")
    header = headers[0]
    others = [path for path in files if path != header]
    data = _confine_data_file(header, {_uploaded_name(path): path for path in others})
    extra = [_uploaded_name(path) for path in others if path != data]
    if extra:
        raise UnreadableVolumeError(f"{_uploaded_name(header)} was uploaded with files it does not use "
                                    f"({', '.join(extra[:5])}); upload the header and its data file alone.")
    return read_ct_volume(header, limits.max_voxels)


def read_uploaded_volume(upload_dir: Path, limits: UploadLimits = UploadLimits()) -> LoadedVolume:
    """Read the files of ``upload_dir`` as one CT volume and check that it is a CT in HU.

    One file is read as an image (a .zip as the DICOM series it holds); a NRRD or MetaImage header
    with the data file it names; several other files as one DICOM series. Raises UnreadableVolumeError, InvalidVolumeError or NotCTError.
    """
    files = sorted(path for path in Path(upload_dir).iterdir() if path.is_file())
    if not files:
        raise UnreadableVolumeError("No file was uploaded.")
    try:
        if any(path.suffix.lower() in _HEADER_SUFFIXES for path in files):
            return _read_header_upload(files, limits)
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
