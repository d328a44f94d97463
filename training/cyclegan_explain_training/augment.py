"""Views of a patch that a radiologist would call the same nodule.

Classifier augmentation on normalised patches [1, H, W] in [-1, 1], from MONAI transforms:
mirroring and quarter turns (an axial patch has no preferred in-plane orientation), a small
intensity shift (scanner calibration), and a small affine (a few degrees, a few percent, a few
pixels of centring error). ``same_nodule_view`` is the differentiable subset of it (mirroring,
quarter turns, whole-pixel shifts) that L_AM reads the generators' output through.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def same_nodule_view(images: torch.Tensor, max_shift_px: int) -> torch.Tensor:
    """One random view of a batch [B, 1, H, W], gradients kept: a mirroring, a quarter turn and a
    shift of up to ``max_shift_px`` pixels in each direction (border pixels repeated), the same for
    the whole batch. Activation maximised through such views must survive them, so it cannot rest
    on one network's pixel-exact quirks (input diversity, Xie et al. 2019, "Improving
    transferability of adversarial examples with input diversity"). 0 returns ``images`` itself."""
    if max_shift_px < 0:
        raise ValueError(f"max_shift_px must be 0 or more, not {max_shift_px}.")
    if max_shift_px == 0:
        return images
    draws = torch.randint(0, 2, (2,)).tolist()
    turns = int(torch.randint(0, 4, ()).item())
    dy, dx = (torch.randint(-max_shift_px, max_shift_px + 1, (2,))).tolist()
    view = images
    if draws[0]:
        view = torch.flip(view, dims=(-1,))
    if draws[1]:
        view = torch.flip(view, dims=(-2,))
    view = torch.rot90(view, turns, dims=(-2, -1))
    height, width = view.shape[-2:]
    padded = F.pad(view, (max_shift_px,) * 4, mode="replicate")
    top, left = max_shift_px + dy, max_shift_px + dx
    return padded[..., top:top + height, left:left + width]
