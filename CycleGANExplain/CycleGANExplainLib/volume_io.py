"""Reading CT volumes and writing overlays with SimpleITK, in Slicer's RAS conventions.

Used by the command line and the web viewer; the Slicer module reads volumes through Slicer.
SimpleITK works in LPS; Slicer's IJK-to-RAS is the LPS geometry with the first two axes negated.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .dicom_series import SeriesGeometryError, read_slice_geometry, regularise

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class UnreadableVolumeError(ValueError):
    """The path cannot be read as a CT volume."""


# 512 x 512 x 2400: a whole-body CT at 0.6 mm is about a fifth of this. A header claiming more is
# refused before any pixel is read, because reading it would take gigabytes (and minutes).
DEFAULT_MAX_VOXELS = 629_145_600


def _check_voxel_count(path: Path, size_ijk: Sequence[int], slices: int, max_voxels: Optional[int]) -> None:
    count = int(np.prod([int(v) for v in size_ijk[:2]], dtype=np.int64)) * int(slices)
    if max_voxels is not None and count > max_voxels:
        shape = " x ".join(str(int(v)) for v in (*size_ijk[:2], slices))
        raise UnreadableVolumeError(
            f"{path.name} declares {shape} = {count:,} voxels, more than the limit of {max_voxels:,}; "
            "if it really is one CT, raise the limit with --max-voxels.")


def _declared_size(file_name: str) -> Tuple[int, ...]:
    """The image size from the file's header alone (no pixels read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()
    return tuple(int(v) for v in reader.GetSize())


class LoadedVolume(NamedTuple):
    volume_kji: np.ndarray
    ijk_to_ras: np.ndarray
    description: str
    notes: Tuple[str, ...] = ()  # what reading changed (a DICOM series resampled onto a regular grid)


def ijk_to_ras_of(image: sitk.Image) -> np.ndarray:
    """Slicer-style 4x4 IJK-to-RAS matrix of a SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ ijk_to_lps


def image_from_array(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    """A SimpleITK image of ``array_kji`` placed by a Slicer-style IJK-to-RAS matrix."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return image


def _dicom_series_files(folder: Path, series_uid: Optional[str]) -> List[str]:
    reader = sitk.ImageSeriesReader
    series_ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise UnreadableVolumeError(f"No DICOM series found in folder {folder}.")
    if series_uid is None:
        if len(series_ids) > 1:
            listing = "\n  ".join(
                f"{uid} ({len(reader.GetGDCMSeriesFileNames(str(folder), uid))} files)" for uid in series_ids
            )
            raise UnreadableVolumeError(
                f"Folder {folder} holds {len(series_ids)} DICOM series; choose one with --series:\n  {listing}"
            )
        series_uid = series_ids[0]
    elif series_uid not in series_ids:
        raise UnreadableVolumeError(f"Series {series_uid} is not in folder {folder}.")
    return list(reader.GetGDCMSeriesFileNames(str(folder), series_uid))


_METAIMAGE_SUFFIXES = (".mha", ".mhd")
_METAIMAGE_HEADER_BYTES = 1 << 16


def _check_metaimage_spacing(path: Path) -> None:
    """Refuse a MetaImage header whose ElementSpacing is zero or negative.

    ITK turns a negative spacing into a flipped direction without a word, which mirrors the
    volume; MetaIO does not define negative spacings, so the file is wrong, not the reader.
    """
    with open(path, "rb") as stream:
        header = stream.read(_METAIMAGE_HEADER_BYTES).decode("latin-1")
    for line in header.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementSpacing":
            try:
                spacing = [float(item) for item in value.split()]
            except ValueError as error:
                raise UnreadableVolumeError(f"{path.name} has a malformed ElementSpacing ({value.strip()!r}).") from error
            if any(not item > 0 for item in spacing):
                raise UnreadableVolumeError(
                    f"{path.name} declares a voxel spacing of {value.strip()} mm; spacings must be positive "
                    "(a negative one would silently mirror the volume). Fix the file's ElementSpacing.")
        if key.strip() == "ElementDataFile":
            return


def read_volume(path: Union[str, Path], series_uid: Optional[str] = None,
                max_voxels: Optional[int] = DEFAULT_MAX_VOXELS) -> LoadedVolume:
    """Read NRRD, NIfTI, MHA or a DICOM series folder as (volume_kji, ijk_to_ras).

    DICOM rescale slope and intercept are applied by SimpleITK, so CT arrives in HU. A DICOM series
    whose slices are not a regular grid (variable spacing, missing slices, gantry tilt) is resampled
    onto one from the files' own slice positions, and ``notes`` says so. A header that declares
    more than ``max_voxels`` voxels (None: no limit) is refused before any pixel is read.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"No such file or folder: {path}")
    try:
        if path.is_dir():
            files = _dicom_series_files(path, series_uid)
            _check_voxel_count(path, _declared_size(files[0]), len(files), max_voxels)
            geometry = read_slice_geometry(files)
            image = sitk.ReadImage(files)
            description = f"DICOM series of {len(files)} files"
        else:
            if path.suffix.lower() in _METAIMAGE_SUFFIXES:
                _check_metaimage_spacing(path)
            size = _declared_size(str(path))
            _check_voxel_count(path, size, int(np.prod(size[2:], dtype=np.int64)) if len(size) > 2 else 1, max_voxels)
            image = sitk.ReadImage(str(path))
            description = f"{path.suffix.lstrip('.').upper() or 'image'} file"
    except SeriesGeometryError as error:
        raise UnreadableVolumeError(f"Cannot use {path} as one CT volume: {error}") from error
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise UnreadableVolumeError(f"Cannot read {path} as a medical image: {first_line}") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableVolumeError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a greyscale CT."
        )
    if image.GetDimension() != 3:
        raise UnreadableVolumeError(f"{path} is a {image.GetDimension()}D image; expected a 3D CT volume.")
    if path.is_dir():
        try:
            regular = regularise(sitk.GetArrayFromImage(image), geometry)
        except SeriesGeometryError as error:
            raise UnreadableVolumeError(f"Cannot use {path} as one CT volume: {error}") from error
        if regular is not None:
            return LoadedVolume(regular.volume_kji, regular.ijk_to_ras, description, regular.notes)
    return LoadedVolume(sitk.GetArrayFromImage(image), ijk_to_ras_of(image), description)


def write_volume(array_kji: np.ndarray, ijk_to_ras: np.ndarray, path: Union[str, Path]) -> Path:
    """Write an array with Slicer-style geometry (NRRD, NIfTI, … by the file's suffix)."""
    path = Path(path)
    sitk.WriteImage(image_from_array(array_kji, ijk_to_ras), str(path), useCompression=True)
    return path
