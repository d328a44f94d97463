"""A DICOM series' real slice geometry, and a regular grid when the series is not one.

SimpleITK (like ITK) reads a series as a regular grid: the first slice's position, the distance
between the first two slices as the spacing, and the slices stacked along that direction. A series
whose spacing changes (variable-pitch protocols, missing files) or whose slices are sheared
(gantry tilt) then puts anatomy tens of millimetres from where the files say it is, silently.
This module reads every slice's ImagePositionPatient and ImageOrientationPatient, refuses what
cannot be one volume (duplicate positions, mixed orientations, pixel spacings or
image sizes, direction cosines that are not perpendicular unit vectors), and otherwise resamples the
slices onto a regular grid along the slice normal, as Slicer's acquisition-geometry
regularisation does: linear between neighbouring slices, each slice first shifted in its own
plane by its tilt offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Spacing differences below this are rounding in the files, not a different grid.
SPACING_TOLERANCE_MM = 0.05
SPACING_TOLERANCE_FRACTION = 0.01
# In-plane drift between slices below this angle is rounding too; above it the series is sheared.
TILT_TOLERANCE_DEGREES = 0.5
# Two slices closer than this along the normal are the same slice twice.
DUPLICATE_DISTANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4
# Direction cosines are written to about six decimals; further from unit length or perpendicular than
# this, they are wrong, not rounded.
UNIT_TOLERANCE = 1e-3
AIR_HU = -1000.0

_POSITION_TAG = "0020|0032"
_ORIENTATION_TAG = "0020|0037"


class SeriesGeometryError(ValueError):
    """The series' slices cannot be put on one grid (the message says why and what to do)."""


@dataclass(frozen=True)
class SliceGeometry:
    """Where each file's slice lies, in LPS millimetres."""

    positions_lps: np.ndarray  # [slices, 3], ImagePositionPatient, in the files' order
    row_direction: np.ndarray  # along a row: the column index increases (DICOM's first cosine)
    column_direction: np.ndarray  # down a column: the row index increases
    pixel_spacing_mm: Tuple[float, float]  # (along a row, down a column)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    @property
    def distances_mm(self) -> np.ndarray:
        """Each slice's position along the normal."""
        return self.positions_lps @ self.normal


@dataclass(frozen=True)
class RegularVolume:
    volume_kji: np.ndarray
    ijk_to_ras: np.ndarray
    notes: Tuple[str, ...]  # what was done to the series, for the user (empty when nothing)


def _floats(text: str, count: int, name: str, file_name: str) -> np.ndarray:
    try:
        values = [float(value) for value in text.replace(",", "\\").split("\\") if value.strip()]
    except ValueError:
        values = []
    if len(values) != count or not np.isfinite(values).all():
        raise SeriesGeometryError(f"DICOM file {Path(file_name).name} has a malformed {name} ({text.strip()!r}); "
                                  f"expected {count} finite numbers.")
    return np.array(values)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_same(values: Sequence[Tuple[float, ...]], files: Sequence[str], what: str, tolerance: float,
                unit: str) -> None:
    """Refuse a series whose slices differ in ``what`` (pixel spacing, image size), naming the slices:
    SimpleITK would use the first slice's value for all of them."""
    first = np.array(values[0], dtype=float)
    odd = [index for index, value in enumerate(values) if np.abs(np.array(value, dtype=float) - first).max() > tolerance]
    if odd:
        shown = [f"{Path(files[index]).name} ({' x '.join(f'{v:g}' for v in values[index])}{unit})" for index in odd]
        raise SeriesGeometryError(
            f"the {what} changes between slices: {Path(files[0]).name} has {' x '.join(f'{v:g}' for v in first)}{unit} "
            f"but {_listed(shown)}; one volume needs one {what}. Remove the odd slices or load the series in 3D "
            "Slicer and resample it first.")


def _check_orientation(row: np.ndarray, column: np.ndarray, file_name: str) -> None:
    """Refuse direction cosines that are not two perpendicular unit vectors: resampled as they are, they
    put the slices on a wrong grid (and a false gantry tilt)."""
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(column)))
    if max(abs(length - 1.0) for length in lengths) > UNIT_TOLERANCE or abs(float(row @ column)) > UNIT_TOLERANCE:
        raise SeriesGeometryError(
            f"DICOM file {Path(file_name).name}'s ImageOrientationPatient ({' '.join(f'{v:g}' for v in (*row, *column))}) "
            f"is not two perpendicular unit vectors (lengths {lengths[0]:.3f} and {lengths[1]:.3f}, cosine between "
            f"them {float(row @ column):.3f}); the slices cannot be placed in the patient. Fix the files' header.")


def read_slice_geometry(files: Sequence[str]) -> SliceGeometry:
    """Read position, orientation, pixel spacing and size of every file (headers only, no pixels)."""
    positions, orientations, spacings, sizes = [], [], [], []
    for file_name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(file_name)
        reader.ReadImageInformation()
        for tag, name in ((_POSITION_TAG, "ImagePositionPatient"), (_ORIENTATION_TAG, "ImageOrientationPatient")):
            if not reader.HasMetaDataKey(tag):
                raise SeriesGeometryError(
                    f"DICOM file {Path(file_name).name} has no {name}; its slice cannot be placed in the patient.")
        positions.append(_floats(reader.GetMetaData(_POSITION_TAG), 3, "ImagePositionPatient", file_name))
        orientations.append(_floats(reader.GetMetaData(_ORIENTATION_TAG), 6, "ImageOrientationPatient", file_name))
        spacings.append(tuple(float(value) for value in reader.GetSpacing()[:2]))
        sizes.append(tuple(int(value) for value in reader.GetSize()[:2]))
    _check_same(sizes, files, "image size (columns x rows)", 0, " pixels")
    _check_same(spacings, files, "pixel spacing (PixelSpacing)", SPACING_TOLERANCE_MM / 10, " mm")
    orientations_array = np.array(orientations)
    _check_orientation(orientations_array[0, :3], orientations_array[0, 3:], files[0])
    if np.abs(orientations_array - orientations_array[0]).max() > ORIENTATION_TOLERANCE:
        raise SeriesGeometryError(
            "The series' slices have different orientations (ImageOrientationPatient); it is not one "
            "volume. Choose another series, or load it in 3D Slicer and resample it first.")
    return SliceGeometry(np.array(positions), orientations_array[0, :3], orientations_array[0, 3:], spacings[0])


def _check_no_duplicates(distances: np.ndarray) -> None:
    gaps = np.diff(distances)
    duplicate = np.flatnonzero(gaps < DUPLICATE_DISTANCE_MM)
    if duplicate.size:
        raise SeriesGeometryError(
            f"{duplicate.size} slice(s) of the series lie at the same position as another (first at "
            f"{distances[duplicate[0]]:.2f} mm along the slice normal): duplicate files or two acquisitions "
            "in one series. Remove the duplicates or choose another series.")


def regularise(volume_kji: np.ndarray, geometry: SliceGeometry) -> Optional[RegularVolume]:
    """None when the files form a regular grid (SimpleITK's geometry is then right); otherwise
    ``volume_kji`` (stacked in the files' order) resampled onto a regular grid, with notes."""
    order = np.argsort(geometry.distances_mm, kind="stable")
    distances = geometry.distances_mm[order]
    _check_no_duplicates(distances)
    if len(distances) < 2:
        return None
    positions = geometry.positions_lps[order]
    steps = np.diff(distances)
    shifts = positions - positions[0] - np.outer(distances - distances[0], geometry.normal)  # in-plane drift
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(np.diff(shifts, axis=0), axis=1), steps)).max())
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * float(np.median(steps)))
    uneven = float(steps.max() - steps.min()) > tolerance
    tilted = tilt > TILT_TOLERANCE_DEGREES
    if not (tilted or uneven):
        return None
    notes: List[str] = []
    if tilted:
        notes.append(f"the slices are sheared by a gantry tilt of {tilt:.1f}°")
    if uneven:
        notes.append(f"the slice spacing varies from {steps.min():.2f} to {steps.max():.2f} mm "
                     "(variable spacing or missing slices)")
    volume = np.asarray(volume_kji)[order].astype(np.float32)
    if tilted:
        volume = _undo_in_plane_shifts(volume, shifts, geometry)
    spacing = float(steps.min())
    count = int(np.floor((distances[-1] - distances[0]) / spacing + 1e-6)) + 1
    resampled = _interpolate_along_normal(volume, distances - distances[0], spacing, count)
    notes.append(f"resampled onto a regular grid of {count} slices {spacing:.2f} mm apart from the files' "
                 "slice positions (linear interpolation), as 3D Slicer's acquisition-geometry regularisation does")
    return RegularVolume(resampled, _ijk_to_ras(positions[0], geometry, spacing), tuple(notes))


def _undo_in_plane_shifts(volume: np.ndarray, shifts: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Each slice moved in its own plane so that its pixels line up with the first slice's."""
    aligned = np.empty(volume.shape, np.float32)
    column_mm, row_mm = geometry.pixel_spacing_mm
    for k, (slice_pixels, shift) in enumerate(zip(volume, shifts)):
        # Pixel (i, j) of the regular grid is pixel (i - a, j - b) of slice k, whose origin has
        # drifted by (a, b) pixels; Resample reads the input at T(x) = x + offset.
        a = float(shift @ geometry.row_direction) / column_mm
        b = float(shift @ geometry.column_direction) / row_mm
        image = sitk.GetImageFromArray(slice_pixels)
        transform = sitk.TranslationTransform(2, (-a, -b))
        aligned[k] = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, AIR_HU))
    return aligned


def _interpolate_along_normal(volume: np.ndarray, distances: np.ndarray, spacing: float, count: int) -> np.ndarray:
    targets = np.arange(count) * spacing
    upper = np.clip(np.searchsorted(distances, targets, side="right"), 1, len(distances) - 1)
    lower = upper - 1
    weight = ((targets - distances[lower]) / (distances[upper] - distances[lower])).astype(np.float32)
    weight = np.clip(weight, 0.0, 1.0)[:, None, None]
    return volume[lower] * (1.0 - weight) + volume[upper] * weight


def _ijk_to_ras(first_position_lps: np.ndarray, geometry: SliceGeometry, slice_spacing: float) -> np.ndarray:
    column_mm, row_mm = geometry.pixel_spacing_mm
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = geometry.row_direction * column_mm
    ijk_to_lps[:3, 1] = geometry.column_direction * row_mm
    ijk_to_lps[:3, 2] = geometry.normal * slice_spacing
    ijk_to_lps[:3, 3] = first_position_lps
    return LPS_TO_RAS @ ijk_to_lps
