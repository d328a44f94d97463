"""What a NIfTI or MetaImage header declares, checked against the file before ITK reads it.

ITK reads a NIfTI file that ends early (an interrupted copy) without an error and fills the
missing slices with 0, which is soft tissue in HU: a nodule's malignancy probability changes
silently. It reports a MetaImage that ends early as "No such file or directory". Both are caught
here by comparing the bytes of voxel data the header declares with the bytes the file holds (for
a compressed file, the bytes it decompresses to). NRRD needs nothing: teem says "expected N bytes".

ITK also replaces a NIfTI sform it cannot represent (a sheared one) by the qform without a word;
3D Slicer reads NIfTI through the same ITK reader and does the same, so the qform is kept and
``sform_note`` says so.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Dict, NamedTuple, Optional

import numpy as np

_CHUNK = 1 << 20
_NIFTI1_SIZE, _NIFTI2_SIZE = 348, 540
# MetaIO's element types and their sizes in bytes (metaTypes.h).
_META_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
_META_HEADER_LIMIT = 1 << 16
# A sform is replaced when it places any voxel corner further than this from the qform's place.
SFORM_TOLERANCE_MM = 0.01


class TruncatedFileError(ValueError):
    """The file holds fewer bytes of voxel data than its header declares."""


class NiftiHeader(NamedTuple):
    data_bytes: int  # voxel data the header declares
    vox_offset: int  # where it starts in the (decompressed) file
    sform_code: int
    sform_ras: np.ndarray  # 4x4 voxel-to-RAS of the sform (meaningful when sform_code > 0)
    shape_ijk: tuple


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def is_metaimage(path: Path) -> bool:
    return path.suffix.lower() in (".mha", ".mhd")


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def read_nifti_header(path: Path) -> Optional[NiftiHeader]:
    """The header of a NIfTI-1 or NIfTI-2 file; None when it is not one (ITK then says what it is)."""
    try:
        with _open(path) as stream:
            raw = stream.read(_NIFTI2_SIZE)
    except (OSError, EOFError, zlib.error):
        return None  # not gzip, or shorter than a header: ITK's own message names it
    for endian in "<>":
        if len(raw) >= _NIFTI1_SIZE and struct.unpack_from(endian + "i", raw, 0)[0] == _NIFTI1_SIZE:
            dims = struct.unpack_from(endian + "8h", raw, 40)
            bitpix = struct.unpack_from(endian + "h", raw, 72)[0]
            vox_offset = int(struct.unpack_from(endian + "f", raw, 108)[0])
            sform_code = struct.unpack_from(endian + "h", raw, 254)[0]
            rows = struct.unpack_from(endian + "12f", raw, 280)
            break
        if len(raw) >= _NIFTI2_SIZE and struct.unpack_from(endian + "i", raw, 0)[0] == _NIFTI2_SIZE:
            bitpix = struct.unpack_from(endian + "h", raw, 14)[0]
            dims = struct.unpack_from(endian + "8q", raw, 16)
            vox_offset = struct.unpack_from(endian + "q", raw, 168)[0]
            sform_code = struct.unpack_from(endian + "i", raw, 348)[0]
            rows = struct.unpack_from(endian + "12d", raw, 400)
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or any(size < 1 for size in dims[1:dims[0] + 1]) or bitpix < 1:
        return None  # a malformed header: ITK refuses it with its own message
    voxels = int(np.prod([int(size) for size in dims[1:dims[0] + 1]], dtype=object))
    sform = np.eye(4)
    sform[:3, :] = np.array(rows, dtype=float).reshape(3, 4)
    return NiftiHeader(voxels * bitpix // 8, vox_offset, int(sform_code), sform,
                       tuple(int(size) for size in dims[1:dims[0] + 1]))


def _decompressed_bytes(path: Path, stream_factory) -> int:
    """Bytes a compressed stream decompresses to; TruncatedFileError when it ends mid-stream."""
    total = 0
    try:
        with stream_factory() as stream:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    return total
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise TruncatedFileError(
            f"{path.name} is truncated or damaged: its compressed data ends after {total:,} bytes without the "
            f"end-of-stream marker ({error}); an interrupted copy? Copy the file again.") from error


def check_nifti_complete(path: Path, header: NiftiHeader) -> None:
    """TruncatedFileError when the file holds less voxel data than ``header`` declares."""
    if path.name.lower().endswith(".gz"):
        # A gzip file ends with its uncompressed size modulo 2**32 (ISIZE). Where that is the size the
        # header implies, the file is whole (a cut file ends in compressed data, which matches by a
        # 1 in 2**32 chance), and the decompression, as long as ITK's own read, is spared.
        with open(path, "rb") as stream:
            stream.seek(-4, os.SEEK_END)
            if struct.unpack("<I", stream.read(4))[0] == (header.vox_offset + header.data_bytes) % 2**32:
                return
        held = _decompressed_bytes(path, lambda: gzip.open(path, "rb"))
    else:
        held = path.stat().st_size
    _compare(path, header.data_bytes, held - header.vox_offset, "decompresses to" if path.name.lower().endswith(".gz") else "holds")


def _compare(path: Path, declared: int, held: int, verb: str) -> None:
    if held < declared:
        raise TruncatedFileError(
            f"{path.name} is truncated: its header declares {declared:,} bytes of voxel data but the file {verb} "
            f"{max(held, 0):,} ({100 * max(held, 0) / declared:.0f} %); an interrupted copy? Copy the file again.")


def _metaimage_fields(path: Path) -> Optional[tuple]:
    """(fields, where the voxel data starts) of a MetaImage header, or None when the header is not
    readable as one (ITK then reports it)."""
    with open(path, "rb") as stream:
        head = stream.read(_META_HEADER_LIMIT)
    fields: Dict[str, str] = {}
    offset = 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        key, separator, value = line.decode("latin-1").replace(":", "=", 1).partition("=")
        if not separator:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    return None


def check_metaimage_complete(path: Path) -> None:
    """TruncatedFileError when a MetaImage that holds its own data (ElementDataFile = LOCAL) has
    less than its header declares. Detached data files are left to ITK."""
    parsed = _metaimage_fields(path)
    if parsed is None:
        return
    fields, data_start = parsed
    if fields.get("ElementDataFile", "").upper() != "LOCAL":
        return
    held = path.stat().st_size - data_start
    if fields.get("CompressedData", "False").lower() == "true":
        declared_text = fields.get("CompressedDataSize", "")
        if declared_text.isdigit():  # ITK always writes it; without it ITK reports the stream itself
            _compare(path, int(declared_text), held, "holds")
        return
    try:
        sizes = [int(value) for value in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return  # ITK names the malformed field
    element = _META_ELEMENT_BYTES.get(fields.get("ElementType", ""))
    if element is None or not sizes or fields.get("BinaryData", "True").lower() != "true":
        return
    _compare(path, int(np.prod(sizes, dtype=object)) * channels * element, held, "holds")


def sform_note(path: Path, header: NiftiHeader, ijk_to_ras: np.ndarray) -> Optional[str]:
    """A note when the geometry ITK gave (``ijk_to_ras``) is not the file's sform: ITK keeps the qform
    when the sform is sheared, and 3D Slicer (the same reader) does the same."""
    if header.sform_code <= 0:
        return None
    corners = np.array([[i, j, k, 1.0] for i in (0, header.shape_ijk[0] - 1) for j in (0, header.shape_ijk[1] - 1)
                        for k in (0, (header.shape_ijk + (1,))[2] - 1)])
    # NIfTI's sform is voxel-to-RAS in millimetres already, as Slicer's IJK-to-RAS is.
    apart = float(np.linalg.norm((corners @ header.sform_ras.T - corners @ np.asarray(ijk_to_ras).T)[:, :3],
                                 axis=1).max())
    if apart <= SFORM_TOLERANCE_MM:
        return None
    return (f"{path.name}'s sform (its scanner-space geometry) is sheared (not a rotation and scaling), which ITK "
            f"cannot represent, so its qform was used instead, as 3D Slicer does; the two place voxels up to "
            f"{apart:.1f} mm apart. Check the seeds against the volume as Slicer shows it.")
