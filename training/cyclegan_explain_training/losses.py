"""The CycleGAN-AM loss terms (Katzmann et al. 2021, eqs. 1-4).

Images are in the normalised range [-1, 1] (docs/architecture.md, contract 2). SSIM's luminance term
assumes non-negative intensities (with negative local means an inverted image would score close
to +1), so DSSIM maps images to [0, 1] first and uses a data range of 1. The paper's "stabilising parameters c1 = .01, c2 = .03" are the usual SSIM constants K1, K2 of
Wang et al. (the actual constants are (K * data_range)^2), which is what MONAI's SSIMLoss calls
k1, k2; it uses the standard 11x11 Gaussian window (sigma 1.5). MONAI's SSIMLoss is 1 - SSIM and
DSSIM is (1 - SSIM) / 2, in [0, 1]. (The paper's eq. 1 as printed puts the 2 into the
denominator only, which would make DSSIM range over [0.5, 1.5]; we read it as the common
(1 - SSIM) / 2, as Keras-contrib's DSSIMObjective defines it.)

Eq. 4 writes the activation-maximisation term as L_AM(l, C(x_a)), but the text (Sec. 2.4) and
the method need the classifier's output on the generated image: we use L_AM(l, C(G(x_a))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_DATA_RANGE = 1.0  # of the images after mapping [-1, 1] onto [0, 1]
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5

DiscriminatorOutputs = List[Tuple[torch.Tensor, torch.Tensor]]


def _ssim_loss(reduction: str) -> SSIMLoss:
    return SSIMLoss(spatial_dims=2, data_range=SSIM_DATA_RANGE, kernel_type="gaussian", win_size=SSIM_WINDOW,
                    kernel_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2, reduction=reduction)


def _unit_range(image: torch.Tensor) -> torch.Tensor:
    return (image.float() + 1.0) / 2.0


def _ssim_in_float32(loss: SSIMLoss, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Autocast off: SSIM's variance terms (E[x^2] - E[x]^2) lose too much in float16.
    with torch.autocast(x.device.type, enabled=False):
        return loss(_unit_range(x), _unit_range(y))


def structural_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each pair of images [B, 1, H, W] in [-1, 1]: a tensor [B]. The one SSIM of the
    package: the training loss below and the evaluation's similarity figures both use it."""
    return 1.0 - _ssim_in_float32(_ssim_loss("none"), x, y).reshape(-1)


class DSSIM(nn.Module):
    """Structural dissimilarity (1 - SSIM) / 2 between two image batches [B, 1, H, W] in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.ssim_loss = _ssim_loss("mean")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _ssim_in_float32(self.ssim_loss, x, y) / 2.0


def cycle_loss(dssim: DSSIM, x: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Eq. 2: L_cycle = 1/2 (|x - x'|_1 + DSSIM(x, x'))."""
    return 0.5 * (F.l1_loss(reconstructed.float(), x.float()) + dssim(x, reconstructed))


def discriminator_loss(outputs: DiscriminatorOutputs, fooled: bool = False) -> torch.Tensor:
    """Categorical cross entropy on "which of the pair is real", averaged over both scales.

    With ``fooled=True`` the label is inverted: the generator's adversarial loss (Sec. 2.3).
    """
    losses = []
    for logits, real_index in outputs:
        target = 1 - real_index if fooled else real_index
        losses.append(F.cross_entropy(logits.float(), target))
    return torch.stack(losses).mean()


def activation_maximisation_loss(classifier_logits: torch.Tensor, target_class: int,
                                  target_probability: float = 1.0) -> torch.Tensor:
    """L_AM = CE(target class, C(G(x))) (Sec. 2.4); the sample's real label is never used.

    With ``target_probability`` < 1 the term is a hinge: each sample's cross entropy counts only
    above -log(target_probability), so a generator whose image already convinces the classifier
    is not pushed on into ever more extreme (and less image-like) changes.
    """
    target = torch.full((classifier_logits.shape[0],), target_class, dtype=torch.long,
                        device=classifier_logits.device)
    losses = F.cross_entropy(classifier_logits.float(), target, reduction="none")
    if target_probability < 1.0:
        losses = torch.clamp(losses + math.log(target_probability), min=0.0)
    return losses.mean()


def locality_loss(x: torch.Tensor, generated: torch.Tensor, forbidden: torch.Tensor) -> torch.Tensor:
    """Mean |G(x) - x| over the pixels where no change is allowed (``forbidden`` [B, 1, H, W] in
    {0, 1}): beyond the real image of a sub-volume, and far from the nodule. A counterfactual that
    edits empty space or distant anatomy is no explanation of the nodule, and detectably synthetic."""
    return ((generated.float() - x.float()).abs() * forbidden).mean()


def new_brightness_loss(x: torch.Tensor, generated: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per image, the summed intensity G(x) puts above ``threshold`` where x was not already that
    bright, averaged over the batch. Summed, not averaged over pixels, because the fault it
    forbids is small: a bright core of a few pixels (a calcification that is not there) that
    flips the classifier without looking like any real nodule."""
    excess = torch.clamp(generated.float() - torch.clamp(x.float(), min=threshold), min=0.0)
    return excess.flatten(1).sum(dim=1).mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four generator terms; the paper sums them unweighted (all 1).

    ``similarity_l1`` adds an L1 term to L_sim and ``activation_target_probability`` makes L_AM
    a hinge (see activation_maximisation_loss); ``locality`` and ``new_brightness`` add the two
    realism terms below. Their defaults are the paper's loss.
    """

    cycle: float = 1.0
    similarity: float = 1.0
    adversarial: float = 1.0
    activation: float = 1.0
    similarity_l1: float = 0.0
    activation_target_probability: float = 1.0
    locality: float = 0.0  # weight of locality_loss (0: the term is not computed)
    new_brightness: float = 0.0  # weight of new_brightness_loss (0: not computed)
    brightness_threshold: float = 1.0  # normalised intensity above which new brightness is penalised


def generator_loss(
    dssim: DSSIM,
    x: torch.Tensor,
    generated: torch.Tensor,
    cycled: torch.Tensor,
    discriminator_outputs: DiscriminatorOutputs,
    classifier_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
    target_class: int,
    weights: LossWeights = LossWeights(),
    forbidden: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Eq. 4 for one generator: its total loss and each term's value (for the metrics log).

    ``generated`` is G(x), ``cycled`` the other generator applied to it, ``discriminator_outputs``
    this generator's discriminator on (x_b, G(x_a)) and ``classifier_logits`` C(G(x)) of each
    classifier the activation is maximised for: L_AM is their mean, so that the generators learn
    what every one of them reads rather than one network's quirks. ``forbidden`` marks the pixels
    the locality term keeps unchanged (needed when ``weights.locality`` > 0).
    """
    similarity = dssim(x, generated)
    if weights.similarity_l1:
        similarity = similarity + weights.similarity_l1 * F.l1_loss(generated.float(), x.float())
    if isinstance(classifier_logits, torch.Tensor):
        classifier_logits = [classifier_logits]
    activation = torch.stack([activation_maximisation_loss(logits, target_class, weights.activation_target_probability)
                              for logits in classifier_logits]).mean()
    terms = {
        "cycle": cycle_loss(dssim, x, cycled),
        "similarity": similarity,
        "adversarial": discriminator_loss(discriminator_outputs, fooled=True),
        "activation": activation,
    }
    if weights.locality:
        if forbidden is None:
            raise ValueError("The locality term needs the map of pixels where no change is allowed.")
        terms["locality"] = locality_loss(x, generated, forbidden)
    if weights.new_brightness:
        terms["new_brightness"] = new_brightness_loss(x, generated, weights.brightness_threshold)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
