"""The real-CT deviations from the paper: residual generators, the L_AM hinge, the L1 similarity term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from CycleGANExplainLib.networks import UNetGenerator
from cyclegan_explain_training.losses import DSSIM, LossWeights, activation_maximisation_loss, generator_loss


def _patches(seed: int, count: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool2d(torch.rand(count, 1, 72, 72, generator=generator) * 2 - 1, 9, stride=1)
    images = (smooth * 6).clamp(-1, 1)
    images[:, :, :4] = -1.0  # the window's ends occur in real patches (air, bone): the identity must keep them
    images[:, :, -4:] = 1.0
    return images


@pytest.mark.parametrize("train_mode", [False, True])
def test_residual_generator_starts_as_the_identity(train_mode):
    torch.manual_seed(0)
    generator = UNetGenerator(width=4, residual=True).train(train_mode)
    x = _patches(0)
    with torch.no_grad():
        y = generator(x)
    assert torch.equal(y, x)  # exactly, not approximately
    # The paper's (non-residual) generator is not the identity at initialisation.
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.allclose(UNetGenerator(width=4).train(train_mode)(x), x, atol=0.1)


def test_residual_generator_output_stays_in_the_normalised_range():
    torch.manual_seed(1)
    generator = UNetGenerator(width=4, residual=True).eval()
    with torch.no_grad():  # a trained-looking, large change: x + tanh(.) leaves [-1, 1] before clamping
        generator.output.weight.normal_(0.0, 3.0)
        generator.output.bias.fill_(0.5)
        x = _patches(1)
        y = generator(x)
        change = torch.tanh(generator.output(_decoder_features(generator, x)))
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert ((x + change).abs() > 1.0).any()  # so the bound was needed, not met by luck
    torch.testing.assert_close(y, torch.clamp(x + change, -1.0, 1.0))


def _decoder_features(generator: UNetGenerator, x: torch.Tensor) -> torch.Tensor:
    skips = generator.encoder(x)
    y = skips[3]
    for block, skip in zip(generator.decoder, (skips[2], skips[1], skips[0])):
        y = block(torch.cat([generator.upsample(y), skip], dim=1))
    return y


@pytest.mark.parametrize("target_class", [0, 1])
def test_activation_hinge_is_zero_above_the_target_probability_and_shifted_cross_entropy_below(target_class):
    target_probability = 0.9
    # p(target) of the rows: 0.99 and 0.95 (above 0.9: no loss), 0.5 and 0.2 (below: CE + log 0.9).
    probabilities = torch.tensor([0.99, 0.95, 0.5, 0.2])
    target_logit = torch.log(probabilities / (1 - probabilities))
    logits = torch.zeros(4, 2)
    logits[:, target_class] = target_logit
    hinge = activation_maximisation_loss(logits, target_class, target_probability)
    cross_entropy = -torch.log(probabilities)
    expected = torch.tensor([0.0, 0.0, *(cross_entropy[2:] - (-math.log(target_probability)))]).mean()
    torch.testing.assert_close(hinge, expected)
    assert float(activation_maximisation_loss(logits[:2], target_class, target_probability)) == 0.0
    # At 1 it is the paper's plain cross entropy.
    torch.testing.assert_close(activation_maximisation_loss(logits, target_class, 1.0), cross_entropy.mean())


def test_similarity_l1_adds_exactly_its_weight_times_the_l1_distance():
    x = _patches(2, 2)
    generated, cycled = (x * 0.8 + 0.1).clamp(-1, 1), (x + 0.05).clamp(-1, 1)
    real_index = torch.zeros(2, 4, 4, dtype=torch.long)
    discriminator_logits = torch.zeros(2, 2, 4, 4)
    outputs = [(discriminator_logits, real_index)]
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.0]])
    dssim = DSSIM()
    weight = 2.5
    plain_total, plain = generator_loss(dssim, x, generated, cycled, outputs, logits, 1)
    with_l1_total, with_l1 = generator_loss(dssim, x, generated, cycled, outputs, logits, 1,
                                            LossWeights(similarity=0.5, similarity_l1=weight))
    l1 = float((generated - x).abs().mean())
    assert l1 > 0.01
    assert with_l1["similarity"] == pytest.approx(plain["similarity"] + weight * l1, rel=1e-6)
    for term in ("cycle", "adversarial", "activation"):
        assert with_l1[term] == pytest.approx(plain[term], rel=1e-6)
    expected_total = float(plain_total) - plain["similarity"] + 0.5 * (plain["similarity"] + weight * l1)
    assert float(with_l1_total) == pytest.approx(expected_total, rel=1e-6)
