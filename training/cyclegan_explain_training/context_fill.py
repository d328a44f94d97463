"""What lies beyond a nodule sub-volume: fills for the pixels of a patch that hold no image.

Real nodule sub-volumes (VOIs) are tight boxes, so a 45 mm patch cut from one is real CT only in
its middle; the rest (``valid == 0``) is whatever the sampler puts outside a volume (-1000 HU).
A user's CT has real anatomy there instead. So that the networks behave the same whatever the
surround, training draws a new surround for every sample and every step (``random_context``),
and evaluation reports every figure under several fixed surrounds (``EVALUATION_FILLS``):

- ``air``: -1000 HU, the patch exactly as the command line samples a VOI;
- ``lung``: smooth parenchyma-like texture around -850 HU (the lung's typical density).

(Reflecting the VOI across its edges was tried as a "real anatomy" fill and left out: it copies
the nodule itself into the surround, which no real CT does.)

Training also shrinks the visible box at random (never onto the nodule): the VOI box grows with
the nodule, so without that the visible area would be a second, spurious size cue.

All functions work in Hounsfield units on arrays [N, H, W] (or [H, W]) and never modify their
inputs.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from CycleGANExplainLib.patch_sampling import OUTSIDE_HU, PATCH_EXTENT_MM, PATCH_SIZE_PX

LUNG_HU = -850.0
EVALUATION_FILLS = ("air", "lung")
PIXEL_MM = PATCH_EXTENT_MM / PATCH_SIZE_PX
# Training keeps at least this margin (mm) of real image around the nodule's mask when it
# shrinks the visible box, so the nodule and its edge are always real.
SHRINK_MARGIN_MM = 2.0


def valid_box(valid: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(row0, row1, col0, col1), end-exclusive, of the valid pixels of one patch [H, W]; None if none."""
    rows, columns = np.nonzero(valid)
    if len(rows) == 0:
        return None
    return int(rows.min()), int(rows.max()) + 1, int(columns.min()), int(columns.max()) + 1


def lung_texture(shape: Tuple[int, ...], rng: np.random.Generator, mean_hu: float = LUNG_HU,
                 noise_hu: float = 35.0, smoothing_px: float = 1.2) -> np.ndarray:
    """Parenchyma-like texture: smoothed Gaussian noise around ``mean_hu`` (float32, ``shape``)."""
    noise = rng.normal(0.0, 1.0, shape)
    sigma = (0.0,) * (len(shape) - 2) + (smoothing_px, smoothing_px)
    noise = ndimage.gaussian_filter(noise, sigma)
    noise /= max(float(noise.std()), 1e-6)
    return (mean_hu + noise_hu * noise).astype(np.float32)


def fill_outside(images_hu: np.ndarray, valid: np.ndarray, fill: str, seed: int = 0) -> np.ndarray:
    """The patches with every pixel where ``valid`` is 0 replaced by the named fill."""
    images_hu = np.asarray(images_hu, dtype=np.float32)
    valid = np.asarray(valid).astype(bool)
    if fill == "air":
        surround = np.full(images_hu.shape, OUTSIDE_HU, dtype=np.float32)
    elif fill == "lung":
        surround = lung_texture(images_hu.shape, np.random.default_rng(seed))
    else:
        raise ValueError(f"Unknown fill {fill!r}; expected one of {EVALUATION_FILLS}.")
    return np.where(valid, images_hu, surround).astype(np.float32)


def shrink_valid(valid: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One patch's valid box [H, W], each side moved inwards by a random amount that keeps
    ``SHRINK_MARGIN_MM`` of real image around the nodule mask (and at least 8 pixels across)."""
    box = valid_box(valid)
    if box is None:
        return valid
    row0, row1, col0, col1 = box
    nodule = valid_box(mask & valid) if (mask & valid).any() else (32 - 4, 32 + 4, 32 - 4, 32 + 4)
    margin = int(np.ceil(SHRINK_MARGIN_MM / PIXEL_MM))
    limits = (max(row0, min(nodule[0] - margin, 28)), min(row1, max(nodule[1] + margin, 36)),
              max(col0, min(nodule[2] - margin, 28)), min(col1, max(nodule[3] + margin, 36)))
    new_row0 = int(rng.integers(row0, max(row0, limits[0]) + 1))
    new_row1 = int(rng.integers(min(row1, limits[1]), row1 + 1))
    new_col0 = int(rng.integers(col0, max(col0, limits[2]) + 1))
    new_col1 = int(rng.integers(min(col1, limits[3]), col1 + 1))
    shrunk = np.zeros_like(valid)
    shrunk[new_row0:new_row1, new_col0:new_col1] = valid[new_row0:new_row1, new_col0:new_col1]
    return shrunk


def random_context(images_hu: np.ndarray, valid: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                   shrink_probability: float = 0.5) -> np.ndarray:
    """Training surround for a batch [N, H, W]: per patch, maybe a smaller visible box, then air
    or lung texture of random density and grain, with equal chance."""
    return random_context_and_visible(images_hu, valid, masks, rng, shrink_probability)[0]


def random_context_and_visible(images_hu: np.ndarray, valid: np.ndarray, masks: np.ndarray,
                               rng: np.random.Generator, shrink_probability: float = 0.5
                               ) -> Tuple[np.ndarray, np.ndarray]:
    """``random_context``'s patches and, per patch, where they still show real image (bool [N, H, W]):
    the CycleGAN-AM's locality term forbids change everywhere else."""
    images_hu = np.asarray(images_hu, dtype=np.float32)
    valid = np.asarray(valid).astype(bool)
    masks = np.asarray(masks).astype(bool)
    result = np.empty_like(images_hu)
    shown = valid.copy()
    for index in range(len(images_hu)):
        visible = valid[index]
        if visible.all():  # full-context patch: nothing to fill
            result[index] = images_hu[index]
            continue
        if rng.random() < shrink_probability:
            visible = shrink_valid(visible, masks[index], rng)
            shown[index] = visible
        if rng.random() < 0.5:
            surround = np.full(images_hu.shape[1:], OUTSIDE_HU, dtype=np.float32)
        else:
            surround = lung_texture(images_hu.shape[1:], rng, mean_hu=float(rng.uniform(-920, -780)),
                                    noise_hu=float(rng.uniform(10, 60)), smoothing_px=float(rng.uniform(0.7, 2.0)))
        result[index] = np.where(visible, images_hu[index], surround)
    return result, shown
