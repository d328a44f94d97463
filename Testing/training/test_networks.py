"""The paper's paired-patch discriminator (Sec. 2.3, Fig. 5)."""

from __future__ import annotations

import torch

from CycleGANExplainLib.networks import stage_widths
from cyclegan_explain_training.networks import PairedPatchDiscriminator


def test_two_patch_scales_with_two_logits_each():
    torch.manual_seed(0)
    discriminator = PairedPatchDiscriminator(width=4)
    real, fake = torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)
    outputs = discriminator(real, fake)
    # Cut after stages 2 and 3: 64 px halved twice and three times.
    assert [tuple(logits.shape) for logits, _ in outputs] == [(3, 2, 16, 16), (3, 2, 8, 8)]
    assert [tuple(index.shape) for _, index in outputs] == [(3, 16, 16), (3, 8, 8)]
    assert [head.in_channels for head in discriminator.heads] == [2 * 16, 2 * 32]
    assert stage_widths(4) == [4, 8, 16, 32]


def test_each_patch_pair_is_ordered_as_its_real_index_says():
    """Logits at every position come from (real, fake) when the index is 0, (fake, real) when 1."""
    torch.manual_seed(1)
    discriminator = PairedPatchDiscriminator(width=4).eval()  # running BatchNorm stats: no batch coupling
    real, fake = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        outputs = discriminator(real, fake)
        features = discriminator.encoder(torch.cat([real, fake]))
        for (logits, real_index), scale, head in zip(outputs, discriminator.scales, discriminator.heads):
            real_features, fake_features = features[scale].chunk(2)
            real_first = head(torch.cat([real_features, fake_features], dim=1))
            real_second = head(torch.cat([fake_features, real_features], dim=1))
            expected = torch.where(real_index[:, None].bool(), real_second, real_first)
            torch.testing.assert_close(logits, expected)


def test_real_image_position_is_random_per_patch():
    torch.manual_seed(2)
    discriminator = PairedPatchDiscriminator(width=4)
    image = torch.rand(8, 1, 64, 64)
    fine_index = discriminator(image, image)[0][1].float()
    # 2048 independent fair coin flips; neither neuron can become "the real one".
    assert 0.45 < fine_index.mean().item() < 0.55
    per_sample = fine_index.flatten(1).mean(1)
    assert (per_sample > 0).all() and (per_sample < 1).all()


def test_discriminator_learns_which_of_the_pair_is_real():
    """Trained with the cross entropy of losses.py it tells discs from noise on both neurons."""
    from cyclegan_explain_training.losses import discriminator_loss

    torch.manual_seed(3)
    discriminator = PairedPatchDiscriminator(width=4)
    optimiser = torch.optim.Adam(discriminator.parameters(), lr=2e-3)
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = torch.where((rows - 31.5) ** 2 + (columns - 31.5) ** 2 < 100, 0.5, -0.8)[None, None]
    for _ in range(15):
        real = disc + 0.05 * torch.randn(4, 1, 64, 64)
        fake = torch.rand(4, 1, 64, 64) * 2 - 1
        loss = discriminator_loss(discriminator(real, fake))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():  # train mode: batch statistics, as during GAN training
        outputs = discriminator(disc + 0.05 * torch.randn(4, 1, 64, 64), torch.rand(4, 1, 64, 64) * 2 - 1)
    for logits, real_index in outputs:
        predicted = logits.argmax(1)
        for neuron in (0, 1):
            chosen = real_index == neuron
            assert (predicted[chosen] == neuron).float().mean() > 0.9
