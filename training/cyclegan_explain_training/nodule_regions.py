"""Regions of a patch defined by distance in millimetres: around the nodule mask, around the centre.

The one place that turns "within d mm of the nodule" into pixels, for the evaluation (share of
|R| near the nodule, SSIM near the nodule, counterfactual pasting) and the method comparison
(localisation at mask dilations). Distances are Euclidean, on the patch's pixel grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from CycleGANExplainLib.patch_sampling import PATCH_EXTENT_MM, PATCH_SIZE_PX

PIXEL_MM = PATCH_EXTENT_MM / PATCH_SIZE_PX


def distance_from_masks_mm(masks: np.ndarray) -> np.ndarray:
    """Per pixel, the distance (mm) to the nearest mask pixel: 0 inside; [N, H, W] or [H, W].

    A patch whose mask is empty gets +inf everywhere (no pixel is near a nodule it cannot see).
    """
    masks = np.asarray(masks).astype(bool)
    if masks.ndim == 2:
        return distance_from_masks_mm(masks[None])[0]
    distances = np.full(masks.shape, np.inf, dtype=np.float32)
    for index, mask in enumerate(masks):
        if mask.any():
            distances[index] = ndimage.distance_transform_edt(~mask) * PIXEL_MM
    return distances


def within_mm_of_masks(masks: np.ndarray, distance_mm: float) -> np.ndarray:
    """True where a pixel lies within ``distance_mm`` of the mask (the mask itself at 0 mm)."""
    return distance_from_masks_mm(masks) <= distance_mm


def within_mm_of_centre(radius_mm: float, size_px: int = PATCH_SIZE_PX) -> np.ndarray:
    """True within ``radius_mm`` of the patch centre (the seed, continuous index 31.5, 31.5)."""
    centre = (size_px - 1) / 2.0
    rows, columns = np.mgrid[0:size_px, 0:size_px]
    return np.hypot(rows - centre, columns - centre) * PIXEL_MM <= radius_mm
