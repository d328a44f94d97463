"""Checks that an input volume is a CT in Hounsfield units before anything is explained."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .patch_sampling import validate_volume_geometry


class NotCTError(ValueError):
    """The volume does not look like a CT: intensities not in Hounsfield units, or voxel sizes no CT has."""


# Voxel edges of clinical CT: 0.2-1 mm in plane, 0.5-5 mm between slices (10 mm on old scanners). A
# size outside this range is a unit error (micrometres written as millimetres: 1400 mm voxels) or a
# wrong header, and the 45 mm patch would cover a fraction of a voxel or many centimetres of body.
PLAUSIBLE_SPACING_MM = (0.1, 10.0)


# A chest CT always contains air (about -1000 HU) in and around the lungs; MR, PET and
# rescaled-to-[0, 1] images contain nothing that low.
_AIR_THRESHOLD_HU = -500.0
# ... and tissue denser than lung (chest wall, vessels, the nodule): a volume with nothing above
# this is blank (air everywhere), and the classifier's answer on it would mean nothing.
_TISSUE_THRESHOLD_HU = -500.0
_PLAUSIBLE_HU_RANGE = (-3100.0, 35000.0)
# Voxels checked at a time: every voxel is checked, in slabs, so memory stays small.
_SLAB_VOXELS = 4_000_000


def _finite_range(volume: np.ndarray) -> Tuple[float, float]:
    """(min, max) of every voxel; NotCTError at the first non-finite one."""
    flat = volume.reshape(-1)
    low, high = np.inf, -np.inf
    check_finite = np.issubdtype(volume.dtype, np.floating)
    for start in range(0, flat.size, _SLAB_VOXELS):
        slab = flat[start:start + _SLAB_VOXELS]
        if check_finite and not np.isfinite(slab).all():
            raise NotCTError("Volume contains NaN or infinite values; expected CT in Hounsfield units.")
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    return low, high


def check_ct_intensities(volume_kji: np.ndarray) -> None:
    """Raise NotCTError with a specific reason unless the values look like chest-CT HU.

    Every voxel is checked (a single NaN or absurd value poisons the patch that contains it);
    integer volumes need no finiteness check, so a 512x512x600 int16 series takes a few
    hundred milliseconds.
    """
    volume = np.asarray(volume_kji)
    if not np.issubdtype(volume.dtype, np.number) or np.issubdtype(volume.dtype, np.complexfloating):
        raise NotCTError(f"Volume has non-numeric voxels ({volume.dtype}); expected CT in Hounsfield units.")
    if volume.ndim == 4:
        raise NotCTError("Volume has several components per voxel (colour or vector image); expected a CT.")
    if volume.size == 0:
        raise NotCTError("Volume has no voxels.")
    low, high = _finite_range(volume)
    if low < _PLAUSIBLE_HU_RANGE[0] or high > _PLAUSIBLE_HU_RANGE[1]:
        raise NotCTError(
            f"Volume intensities range from {low:.4g} to {high:.4g}, outside any CT in Hounsfield "
            "units; is the rescale slope/intercept applied?"
        )
    if low > _AIR_THRESHOLD_HU:
        raise NotCTError(
            f"Volume's lowest intensity is {low:.0f}, but a chest CT in Hounsfield units contains air "
            f"(about -1000 HU). This looks like a non-CT image (MR, PET) or a CT not in HU."
        )
    if high < _TISSUE_THRESHOLD_HU:
        raise NotCTError(
            f"Volume's highest intensity is {high:.0f} HU: it holds nothing denser than air or lung "
            "(no chest wall, vessels or nodule). Is it blank, or the wrong series?"
        )


def check_voxel_spacing(ijk_to_ras: np.ndarray) -> None:
    """Raise NotCTError unless every voxel edge is within PLAUSIBLE_SPACING_MM."""
    spacing = np.linalg.norm(np.asarray(ijk_to_ras, dtype=float)[:3, :3], axis=0)
    low, high = PLAUSIBLE_SPACING_MM
    if not ((spacing >= low) & (spacing <= high)).all():
        raise NotCTError(
            f"The volume's voxels are {' x '.join(f'{value:.4g}' for value in spacing)} mm; a CT's lie between "
            f"{low:g} and {high:g} mm. Is the spacing in another unit (micrometres, centimetres) or the header wrong?")


def check_ct_volume(volume_kji: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """What every front end checks of a volume before explaining in it: a 3D image with an invertible
    geometry (InvalidVolumeError), CT-sized voxels and voxels that look like CT (NotCTError)."""
    validate_volume_geometry(volume_kji, ijk_to_ras)
    check_voxel_spacing(ijk_to_ras)
    check_ct_intensities(volume_kji)
