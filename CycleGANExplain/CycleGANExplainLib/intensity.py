"""Intensity normalisation (docs/architecture.md, contract 2): the HU window comes from the bundle's metadata."""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_HU_WINDOW = (-1000.0, 400.0)


def normalise_hu(hounsfield: np.ndarray, hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> np.ndarray:
    """Clip to the window and map it linearly onto [-1, 1] (float32)."""
    low, high = float(hu_window[0]), float(hu_window[1])
    if not high > low:
        raise ValueError(f"HU window must have low < high, got {hu_window!r}")
    clipped = np.clip(np.asarray(hounsfield, dtype=np.float32), low, high)
    return ((clipped - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


def denormalise_to_hu(normalised: np.ndarray, hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> np.ndarray:
    """Inverse of normalise_hu inside the window (values outside it were clipped)."""
    low, high = float(hu_window[0]), float(hu_window[1])
    return ((np.asarray(normalised, dtype=np.float32) + 1.0) / 2.0 * (high - low) + low).astype(np.float32)


def hu_change_to_normalised(change_hu: float, hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> float:
    """A change of ``change_hu`` HU in normalised units (the window's width maps onto 2)."""
    low, high = float(hu_window[0]), float(hu_window[1])
    if not high > low:
        raise ValueError(f"HU window must have low < high, got {hu_window!r}")
    return float(change_hu) * 2.0 / (high - low)
