"""Checks of where an explanation acts: the share of |R| near the nodule, counterfactual pasting,
and the similarity floor of unrelated patches.

Regions come from nodule_regions (distance to the nodule's mask, in mm). Images are normalised
stacks [N, H, W]; nothing here runs a network.
"""

from __future__ import annotations

import numpy as np


def paste_within(x: np.ndarray, generated: np.ndarray, region: np.ndarray) -> np.ndarray:
    """x with the pixels of ``region`` [N, H, W] taken from ``generated``: G(x) inside, x outside.

    Pass ``~region`` to paste everywhere but the region. If the classifier's decision changes
    with G(x) pasted only near the nodule, the change there suffices; if it changes with G(x)
    pasted only away from it, the generators also act through the surround.
    """
    x, generated = np.asarray(x), np.asarray(generated)
    if x.shape != generated.shape or np.shape(region) != x.shape:
        raise ValueError(f"Shapes differ: x {x.shape}, G(x) {generated.shape}, region {np.shape(region)}.")
    return np.where(np.asarray(region, bool), generated, x).astype(x.dtype)


def share_of_magnitude(relevance: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per map [N, H, W]: the fraction of sum |R| that lies in ``region`` (NaN where R is all zero)."""
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64)).reshape(len(relevance), -1)
    inside = np.asarray(region, bool).reshape(len(relevance), -1)
    total = magnitude.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (magnitude * inside).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def area_share(region: np.ndarray) -> np.ndarray:
    """Per patch, the fraction of its pixels in ``region``: the share a uniform |R| would have."""
    region = np.asarray(region, bool)
    return region.reshape(len(region), -1).mean(axis=1)


def unrelated_partners(n: int, seed: int) -> np.ndarray:
    """A seeded random pairing of n patches in which no patch is paired with itself (n >= 2):
    partner[i] is the patch compared with patch i for the similarity floor."""
    if n < 2:
        raise ValueError("The similarity floor needs at least two patches.")
    order = np.random.default_rng(seed).permutation(n)
    partners = np.empty(n, dtype=np.int64)
    partners[order] = np.roll(order, 1)  # a cycle through the shuffled order: no fixed point
    return partners


# The realism checks' definitions, shared by the generators' validation and the test-split audit.
BRIGHT_CORE_HU = 200.0  # calcification-like: above solid soft tissue
BRIGHT_CORE_MIN_PIXELS = 2
UNCHANGED_BEYOND_BOX_HU = 10.0  # mean |G(x) - x| beyond the real image that still counts as unchanged


def inserted_bright_core(x_hu: np.ndarray, generated_hu: np.ndarray, masks: np.ndarray,
                         hu: float = BRIGHT_CORE_HU, min_pixels: int = BRIGHT_CORE_MIN_PIXELS) -> np.ndarray:
    """Per patch [N, H, W] (Hounsfield units): True where G(x) has at least ``min_pixels`` pixels
    >= ``hu`` inside the nodule mask that were below it in x: a bright core the nodule did not have."""
    new_bright = (np.asarray(generated_hu) >= hu) & (np.asarray(x_hu) < hu) & np.asarray(masks, bool)
    return new_bright.reshape(len(new_bright), -1).sum(axis=1) >= min_pixels


def mean_change_beyond_box(x_hu: np.ndarray, generated_hu: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per patch [N, H, W]: mean |G(x) - x| (HU) over the pixels that hold no image (``valid`` 0);
    NaN for a patch that is real image everywhere."""
    beyond = ~np.asarray(valid, bool)
    change = np.abs(np.asarray(generated_hu, np.float64) - np.asarray(x_hu, np.float64))
    counts = beyond.reshape(len(beyond), -1).sum(axis=1)
    sums = (change * beyond).reshape(len(beyond), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
