"""Checks of where an explanation acts: the share of |R| near the nodule, counterfactual pasting,
and the similarity floor of unrelated patches.

Regions come from nodule_regions (distance to the nodule's mask, in mm). Images are normalised
stacks [N, H, W]; nothing here runs a network.
"""

from __future__ import annotations

from typing import Tuple

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


# The realism checks' definitions (the independent review's), shared by the generators'
# validation and the test-split audit (counterfactual_audit).
BRIGHT_HU = 200.0  # calcification-like: above solid soft tissue
BRIGHT_MIN_PIXELS = 2
BEYOND_BOX_TOLERANCE_HU = 10.0  # mean |G(x) - x| beyond the real image that still counts as unchanged


def inserted_bright_pixels(x_hu: np.ndarray, generated_hu: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[N, H, W]: inside the nodule's mask, G(x) at or above BRIGHT_HU where x was below it."""
    return (np.asarray(masks).astype(bool) & (np.asarray(generated_hu) >= BRIGHT_HU)
            & (np.asarray(x_hu) < BRIGHT_HU))


def bright_core_inserted(x_hu: np.ndarray, generated_hu: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per patch [N, H, W] (Hounsfield units): x has no pixel at or above BRIGHT_HU inside the
    nodule's mask and G(x) has at least BRIGHT_MIN_PIXELS there (a calcification-like core where
    the nodule had none)."""
    inside = np.asarray(masks).astype(bool)
    count = len(inside)
    x_bright = ((np.asarray(x_hu) >= BRIGHT_HU) & inside).reshape(count, -1).any(axis=1)
    generated_bright = ((np.asarray(generated_hu) >= BRIGHT_HU) & inside).reshape(count, -1).sum(axis=1)
    return ~x_bright & (generated_bright >= BRIGHT_MIN_PIXELS)


def change_beyond_box_hu(x_hu: np.ndarray, generated_hu: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per patch [N, H, W]: the mean and the largest |G(x) - x| in HU over the pixels beyond the
    valid box, where the patch holds no image (NaN for a patch without such pixels)."""
    beyond = ~np.asarray(valid).astype(bool)
    change = np.abs(np.asarray(generated_hu, dtype=np.float64) - np.asarray(x_hu, dtype=np.float64))
    outside = np.where(beyond, change, np.nan).reshape(len(beyond), -1)
    largest = np.where(beyond.reshape(len(beyond), -1), outside, -np.inf).max(axis=1)
    counts = beyond.reshape(len(beyond), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.nansum(outside, axis=1) / np.maximum(counts, 1), np.nan)
    return mean, np.where(np.isfinite(largest), largest, np.nan)
