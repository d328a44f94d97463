"""Checks that an input volume is a CT in Hounsfield units before anything is explained."""

from __future__ import annotations

import numpy as np


class NotCTError(ValueError):
    """The volume's intensities do not look like a CT in Hounsfield units."""


# A chest CT always contains air (about -1000 HU) in and around the lungs; MR, PET and
# rescaled-to-[0, 1] images contain nothing that low.
_AIR_THRESHOLD_HU = -500.0
_PLAUSIBLE_HU_RANGE = (-3100.0, 35000.0)
_MAX_SAMPLES = 2_000_000


def check_ct_intensities(volume_kji: np.ndarray) -> None:
    """Raise NotCTError with a specific reason unless the values look like chest-CT HU.

    Looks at a regular subsample so that a 512x512x600 series is checked in milliseconds.
    """
    volume = np.asarray(volume_kji)
    if not np.issubdtype(volume.dtype, np.number) or np.issubdtype(volume.dtype, np.complexfloating):
        raise NotCTError(f"Volume has non-numeric voxels ({volume.dtype}); expected CT in Hounsfield units.")
    if volume.ndim == 4:
        raise NotCTError("Volume has several components per voxel (colour or vector image); expected a CT.")
    step = max(1, int(round((volume.size / _MAX_SAMPLES) ** (1.0 / max(volume.ndim, 1)))))
    sample = volume[tuple(slice(None, None, step) for _ in range(volume.ndim))].astype(np.float64)
    if not np.all(np.isfinite(sample)):
        raise NotCTError("Volume contains NaN or infinite values; expected CT in Hounsfield units.")
    low, high = float(sample.min()), float(sample.max())
    if low < _PLAUSIBLE_HU_RANGE[0] or high > _PLAUSIBLE_HU_RANGE[1]:
        raise NotCTError(
            f"Volume intensities range from {low:.0f} to {high:.0f}, outside any CT in Hounsfield "
            "units; is the rescale slope/intercept applied?"
        )
    if low > _AIR_THRESHOLD_HU:
        raise NotCTError(
            f"Volume's lowest intensity is {low:.0f}, but a chest CT in Hounsfield units contains air "
            f"(about -1000 HU). This looks like a non-CT image (MR, PET) or a CT not in HU."
        )
