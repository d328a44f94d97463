"""The paper's discriminator (Katzmann et al. 2021, Sec. 2.3, Fig. 5) and a held-out classifier
architecture; training only.

The classifier and the generators live in the core (CycleGANExplainLib.networks) because the
bundle and the attribution baselines need them outside training.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from CycleGANExplainLib.networks import PAPER_GENERATOR_WIDTH, GeneratorEncoder, stage_widths


class PairedPatchDiscriminator(nn.Module):
    """The paper's discriminator (Sec. 2.3, Fig. 5): which of two images is the real one, per patch.

    The generator's encoder, read after stages 2 and 3 (two PatchGAN scales), extracts features of
    a real and a fake image with shared weights (one batch, so BatchNorm sees both alike). At each
    patch position the two feature vectors are concatenated in an independently random order and
    a 1x1 convolution gives two logits: "the first is real" / "the second is real". Drawing the
    order per patch is how the paper's "random order, patches shuffled after classification" is
    realised: neither output neuron can come to mean "real", each must compare the pair.
    """

    scales = (2, 3)

    def __init__(self, width: int = PAPER_GENERATOR_WIDTH):
        super().__init__()
        widths = stage_widths(width)
        self.encoder = GeneratorEncoder(widths)
        self.heads = nn.ModuleList([nn.Conv2d(2 * widths[scale], 2, kernel_size=1) for scale in self.scales])

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per scale: logits [B, 2, h, w] and the index (0 or 1) of the real image, [B, h, w].

        The order is drawn from torch's global generator, so a seeded run is reproducible.
        """
        features = self.encoder(torch.cat([real, fake]))
        outputs = []
        for scale, head in zip(self.scales, self.heads):
            real_features, fake_features = features[scale].chunk(2)
            real_index = torch.randint(0, 2, real_features[:, :1].shape, device=real.device)
            real_second = real_index.bool()
            first = torch.where(real_second, fake_features, real_features)
            second = torch.where(real_second, real_features, fake_features)
            outputs.append((head(torch.cat([first, second], dim=1)), real_index[:, 0]))
        return outputs


HELD_OUT_ARCHITECTURES = ("resnet",)


def held_out_classifier(architecture: str, width: int) -> nn.Module:
    """A classifier of another architecture than the bundled one, trained on the same data only to
    check that counterfactuals change what any good classifier reads, not one network's quirks.

    "resnet": MONAI's 2D ResNet of basic blocks, one per stage (widths ``width``-``8 * width``),
    with global average pooling, where the paper's classifier flattens its last feature map.
    """
    from monai.networks.nets import ResNet

    if architecture not in HELD_OUT_ARCHITECTURES:
        raise ValueError(f"Unknown classifier architecture {architecture!r}; expected 'paper' or one of "
                         f"{HELD_OUT_ARCHITECTURES}.")
    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=stage_widths(width), spatial_dims=2,
                  n_input_channels=1, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True, num_classes=2)
