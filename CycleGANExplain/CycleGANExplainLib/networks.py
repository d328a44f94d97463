"""The paper's classifier and generators (Katzmann et al. 2021, Sec. 3.2, Fig. 4), built from MONAI blocks.

Part of the core because a bundle's TorchScript files are exports of these classes and the
attribution baselines need the classifier back as an eager module (hooks, canonizers). Import
this module only where torch and MONAI are wanted: it imports both at load time.

Widths are parameters: the paper uses a classifier of 32-64-128-256 kernels and generators of
48-96-192-384; ``width`` is the first stage's kernel count and each later stage doubles it.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

PAPER_CLASSIFIER_WIDTH = 32
PAPER_GENERATOR_WIDTH = 48


def stage_widths(width: int, stages: int = 4) -> List[int]:
    return [width * 2**stage for stage in range(stages)]


def _classifier_block(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # conv -> BatchNorm -> ReLU, as the paper's classifier.
    return Convolution(2, in_channels, out_channels, strides=stride, kernel_size=3, adn_ordering="NA",
                       act="RELU", norm="BATCH")


def _generator_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    # conv -> LeakyReLU -> BatchNorm, in the order the paper's Fig. 4 gives.
    return Convolution(2, in_channels, out_channels, strides=stride, kernel_size=3, adn_ordering="AN",
                       act=("LEAKYRELU", {"negative_slope": 0.2}), norm="BATCH")


class MalignancyClassifier(nn.Module):
    """Four conv blocks (strides 1, 2, 2, 2), flatten, two logits (benign, malignant).

    Returns logits; the softmax of the paper's last layer is applied by whoever reads them, so
    that training can use a numerically stable cross entropy.
    """

    def __init__(self, width: int = PAPER_CLASSIFIER_WIDTH, patch_size: int = 64, dropout: float = 0.0):
        super().__init__()
        widths = stage_widths(width)
        strides = (1, 2, 2, 2)
        blocks = []
        in_channels = 1
        for out_channels, stride in zip(widths, strides):
            blocks.append(_classifier_block(in_channels, out_channels, stride))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        final_size = patch_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels * final_size**2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GeneratorEncoder(nn.Module):
    """Stages 0-3 of the generator: three convolutions each, strided first conv from stage 1 on.

    Returns every stage's output so the U-Net decoder and the PatchGAN discriminator can use it.
    """

    def __init__(self, widths: Sequence[int], in_channels: int = 1, stages: int = 4):
        super().__init__()
        self.stages = nn.ModuleList()
        for stage in range(stages):
            out_channels = widths[stage]
            first_stride = 1 if stage == 0 else 2
            self.stages.append(
                nn.Sequential(
                    _generator_conv(in_channels, out_channels, first_stride),
                    _generator_conv(out_channels, out_channels),
                    _generator_conv(out_channels, out_channels),
                )
            )
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class UNetGenerator(nn.Module):
    """U-Net of depth 3 (stages 0-3), three convolutions per stage, nearest-neighbour upsampling.

    As in the paper, the output is an image, tanh-bounded to the normalised range [-1, 1].
    With ``residual=True`` the network instead predicts a change that is added to its input and
    clipped to [-1, 1]: the identity costs nothing, so what it paints is only what the classifier
    needs changed (the real-CT bundle uses this; training/README.md's deviation table says why).

    ``change_deadband`` (normalised units, residual only) soft-thresholds the change
    (F.softshrink): changes smaller than it are dropped and larger ones shrink by it, so tissue the
    generator barely touches stays exactly as it was. Without it a generator nudges every pixel
    by a few HU, enough to pull bone off the window's top, which a detector spots at once.

    ``change_gain`` (residual only) multiplies the thresholded change: set at export, it moves a
    counterfactual further along the direction the generator learned (the latent-shift strength of
    Gifsplanation) while every pixel the deadband keeps stays exactly as it was.
    """

    def __init__(self, width: int = PAPER_GENERATOR_WIDTH, residual: bool = False, change_deadband: float = 0.0,
                 change_gain: float = 1.0):
        super().__init__()
        if change_deadband < 0:
            raise ValueError(f"change_deadband must be >= 0, got {change_deadband}.")
        if change_deadband and not residual:
            raise ValueError("change_deadband applies to a residual generator's change; this one paints the image.")
        if not change_gain > 0:
            raise ValueError(f"change_gain must be > 0, got {change_gain}.")
        if change_gain != 1.0 and not residual:
            raise ValueError("change_gain applies to a residual generator's change; this one paints the image.")
        self.residual = residual
        self.change_deadband = float(change_deadband)
        self.change_gain = float(change_gain)
        widths = stage_widths(width)
        self.encoder = GeneratorEncoder(widths)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoder = nn.ModuleList()
        for stage in (2, 1, 0):
            in_channels = widths[stage + 1] + widths[stage]
            self.decoder.append(
                nn.Sequential(
                    _generator_conv(in_channels, widths[stage]),
                    _generator_conv(widths[stage], widths[stage]),
                    _generator_conv(widths[stage], widths[stage]),
                )
            )
        self.output = nn.Conv2d(widths[0], 1, kernel_size=1)
        if residual:  # start as the identity: no change until the losses ask for one
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(x)
        y = skips[3]
        for block, skip in zip(self.decoder, (skips[2], skips[1], skips[0])):
            y = block(torch.cat([self.upsample(y), skip], dim=1))
        if self.residual:
            change = torch.tanh(self.output(y))
            if self.change_deadband > 0:
                # Straight-through: the image is the thresholded change, the gradient the plain one's,
                # so that a change still inside the deadband (all of them at the residual's zero
                # start) keeps learning instead of receiving no gradient at all.
                change = change + (nn.functional.softshrink(change, self.change_deadband) - change).detach()
            return torch.clamp(x + self.change_gain * change, -1.0, 1.0)
        return torch.tanh(self.output(y))
