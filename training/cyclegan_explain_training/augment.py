"""Classifier augmentation on normalised patches [1, H, W] in [-1, 1], from MONAI transforms.

Only changes a radiologist would call the same nodule: mirroring and quarter turns (an axial
patch has no preferred in-plane orientation), a small intensity shift (scanner calibration),
and a small affine (a few degrees, a few percent, a few pixels of centring error).
"""

from __future__ import annotations

import math

from monai.transforms import Compose, RandAffine, RandFlip, RandRotate90, RandShiftIntensity


def classifier_augmentation(seed: int) -> Compose:
    """The training-time transform, seeded so that a run is reproducible."""
    transform = Compose(
        [
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandRotate90(prob=0.5, max_k=3),
            RandShiftIntensity(offsets=0.05, prob=0.5),  # 0.05 of [-1, 1] = 35 HU in the default window
            RandAffine(
                prob=0.5,
                rotate_range=math.radians(10),
                scale_range=0.05,
                translate_range=(2, 2),
                padding_mode="border",
            ),
        ]
    )
    transform.set_random_state(seed=seed)
    return transform
