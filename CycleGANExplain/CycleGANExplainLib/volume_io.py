"""Reading CT volumes and writing overlays with SimpleITK, in Slicer's RAS conventions.

Used by the command line and the web viewer; the Slicer module reads volumes through Slicer.
SimpleITK works in LPS; Slicer's IJK-to-RAS is the LPS geometry with the first two axes negated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .dicom_series import SeriesGeometryError, read_slice_geometry, regularise
from .volume_headers import (NiftiHeader, TruncatedFileError, check_metaimage_complete, check_nifti_complete, is_metaimage,
                             is_nifti, read_nifti_header, sform_note)

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


def _library_path(path: Union[str, Path]) -> str:
    """``path`` as SimpleITK takes it. A name that is not UTF-8 (Python keeps its bytes as
    surrogates) aborts the whole process inside SimpleITK's C++, so it is refused here."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnreadableVolumeError(
            f"The path {os.fsencode(text).decode('utf-8', 'backslashreplace')} is not "
            "valid UTF-8, which the image reader cannot open; rename the file or folder.") from None
    return text


def _spacing_text(spacing: Sequence[float]) -> str:
    return " ".join(f"{value:g}" for value in spacing)


def _image_information(path: Path, file_name: str) -> sitk.ImageFileReader:
    """The file's header as the image library parsed it (no pixels read), refused when a spacing
    is zero or negative: ITK turns a negative spacing into a flipped axis without a word, which
    mirrors the volume, whichever way the header spells it. No format defines negative spacings,
    so the file is wrong, not the reader."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(_library_path(file_name))
    reader.ReadImageInformation()
    spacing = reader.GetSpacing()
    if any(not value > 0 for value in spacing):
        raise UnreadableVolumeError(
            f"{Path(file_name).name} declares a voxel spacing of {_spacing_text(spacing)} mm; spacings must be "
            "positive (a negative one would silently mirror the volume). Fix the file's header.")
    return reader


# DICOM's Modality (0008,0060) and MetaImage's Modality field; other formats do not say.
_MODALITY_KEYS = ("0008|0060", "Modality")
_CT_MODALITIES = ("CT", "MET_MOD_CT", "MET_MOD_UNKNOWN")


def _check_modality(path: Path, reader: sitk.ImageFileReader) -> None:
    """Refuse an image whose header names another modality than CT: the classifier, the HU window
    and the intensity checks are a CT's, and an MR with an air-dark background can pass the latter."""
    for key in _MODALITY_KEYS:
        if reader.HasMetaDataKey(key):
            modality = reader.GetMetaData(key).strip()
            if modality and modality.upper() not in _CT_MODALITIES:
                raise UnreadableVolumeError(
                    f"{path.name} is a {modality.replace('MET_MOD_', '')} image (its header's Modality), not a CT; "
                    "the classifier and its explanations are for CT in Hounsfield units only.")


class LoadedVolume(NamedTuple):
    volume_kji: np.ndarray
    ijk_to_ras: np.ndarray
    description: str
    notes: Tuple[str, ...] = ()  # what reading changed (a DICOM series resampled onto a regular grid)
    # A DICOM series' files (their headers place and reference DICOM results: dicom_results); () for other formats.
    source_files: Tuple[str, ...] = ()


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


def dicom_series_files(folder: Path, series_uid: Optional[str]) -> List[str]:
    """The files of the folder's one DICOM series, or of ``series_uid``: the series read_volume reads
    (and the CLI checks a DICOM SR's or SEG's seeds against)."""
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


def _check_file_complete(path: Path) -> Optional[NiftiHeader]:
    """TruncatedFileError (as UnreadableVolumeError) when the file ends before the voxel data its
    header declares; the NIfTI header, for the sform note."""
    try:
        if is_metaimage(path):
            check_metaimage_complete(path)
        elif is_nifti(path):
            header = read_nifti_header(path)
            if header is not None:
                check_nifti_complete(path, header)
            return header
    except TruncatedFileError as error:
        raise UnreadableVolumeError(str(error)) from error
    return None


def read_volume(path: Union[str, Path], series_uid: Optional[str] = None,
                max_voxels: Optional[int] = DEFAULT_MAX_VOXELS) -> LoadedVolume:
    """Read NRRD, NIfTI, MHA or a DICOM series folder as (volume_kji, ijk_to_ras).

    The one reader of CT files for the command line, the web viewer and training's VOIs. DICOM
    rescale slope and intercept are applied by SimpleITK, so CT arrives in HU. A DICOM series
    whose slices are not a regular grid (variable spacing, missing slices, gantry tilt) is resampled
    onto one from the files' own slice positions, and ``notes`` says so. A header that declares
    more than ``max_voxels`` voxels (None: no limit) is refused before any pixel is read, and so are
    a file shorter than its header declares, a non-positive spacing and a modality other than CT.
    """
    path = Path(path)
    _library_path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"No such file or folder: {path}")
    notes: Tuple[str, ...] = ()
    try:
        if path.is_dir():
            files = [_library_path(name) for name in dicom_series_files(path, series_uid)]
            information = _image_information(path, files[0])
            _check_modality(path, information)
            # A multi-frame file holds NumberOfFrames slices (the header's third size): counted per file.
            size = information.GetSize()
            _check_voxel_count(path, size, len(files) * int(np.prod(size[2:], dtype=np.int64)), max_voxels)
            geometry = read_slice_geometry(files)
            image = sitk.ReadImage(files)
            description = f"DICOM series of {len(files)} files"
        else:
            information = _image_information(path, str(path))
            _check_modality(path, information)
            size = information.GetSize()
            _check_voxel_count(path, size, int(np.prod(size[2:], dtype=np.int64)) if len(size) > 2 else 1, max_voxels)
            nifti = _check_file_complete(path)
            image = sitk.ReadImage(str(path))
            description = f"{path.suffix.lstrip('.').upper() or 'image'} file"
            note = sform_note(path, nifti, ijk_to_ras_of(image)) if nifti is not None else None
            notes = (note,) if note else ()
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
            return LoadedVolume(regular.volume_kji, regular.ijk_to_ras, description, regular.notes, tuple(files))
        return LoadedVolume(sitk.GetArrayFromImage(image), ijk_to_ras_of(image), description, notes, tuple(files))
    return LoadedVolume(sitk.GetArrayFromImage(image), ijk_to_ras_of(image), description, notes)


def write_volume(array_kji: np.ndarray, ijk_to_ras: np.ndarray, path: Union[str, Path]) -> Path:
    """Write an array with Slicer-style geometry (NRRD, NIfTI, … by the file's suffix)."""
    path = Path(path)
    sitk.WriteImage(image_from_array(array_kji, ijk_to_ras), _library_path(path), useCompression=True)
    return path
