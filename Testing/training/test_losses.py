"""The CycleGAN-AM loss terms against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cyclegan_explain_training.losses import (
    DSSIM,
    LossWeights,
    activation_maximisation_loss,
    cycle_loss,
    discriminator_loss,
    generator_loss,
)


def _images(seed: int, count: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool2d(torch.rand(count, 1, 72, 72, generator=generator) * 2 - 1, 9, stride=1)
    return (smooth * 6).clamp(-1, 1)  # strong contrast, as in CT patches, so SSIM is not dominated by c2


def test_dssim_matches_scikit_image_ssim_with_the_papers_constants():
    from skimage import metrics

    x, y = _images(0, 1), _images(1, 1)
    y = 0.6 * x + 0.4 * y
    reference_ssim = metrics.structural_similarity(
        # on intensities mapped to [0, 1], where SSIM's luminance term is meaningful
        (x[0, 0].numpy().astype(np.float64) + 1) / 2, (y[0, 0].numpy().astype(np.float64) + 1) / 2, data_range=1.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03,
    )
    assert 0.1 < reference_ssim < 0.95  # a case where the constants matter
    assert float(DSSIM()(x, y)) == pytest.approx((1 - reference_ssim) / 2, abs=2e-3)


def test_dssim_is_zero_for_equal_images_and_near_one_for_inverted_ones():
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    dssim = DSSIM()
    assert float(dssim(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(dssim(x, -x)) > 0.95  # rough texture inverted: SSIM close to -1


def test_cycle_loss_is_half_of_l1_plus_dssim():
    x = _images(3)
    shifted = (x + 0.1).clamp(-1, 1)
    dssim = DSSIM()
    expected = 0.5 * ((shifted - x).abs().mean() + dssim(x, shifted))
    torch.testing.assert_close(cycle_loss(dssim, x, shifted), expected)
    assert float(cycle_loss(dssim, x, shifted)) > 0.5 * 0.09


def _outputs(real_index: torch.Tensor, confidence: float):
    """Discriminator outputs that favour the real image with the given logit margin."""
    logits = torch.zeros(real_index.shape[0], 2, *real_index.shape[1:])
    logits.scatter_(1, real_index[:, None], confidence)
    return [(logits, real_index)]


def test_discriminator_loss_and_its_inverted_label_for_the_generator():
    real_index = torch.randint(0, 2, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    confident = _outputs(real_index, 8.0)
    assert float(discriminator_loss(confident)) == pytest.approx(np.log1p(np.exp(-8.0)), rel=1e-4)
    # The generator wants the discriminator to pick the fake one: its loss is high here.
    assert float(discriminator_loss(confident, fooled=True)) == pytest.approx(np.log1p(np.exp(8.0)), rel=1e-4)
    undecided = _outputs(real_index, 0.0)
    assert float(discriminator_loss(undecided)) == pytest.approx(np.log(2), rel=1e-5)


def test_activation_maximisation_targets_the_generators_class():
    logits = torch.tensor([[-2.0, 1.0], [0.5, 0.0]])
    for target in (0, 1):
        expected = -torch.log_softmax(logits, 1)[:, target].mean()
        torch.testing.assert_close(activation_maximisation_loss(logits, target), expected)
    assert activation_maximisation_loss(logits, 1) < activation_maximisation_loss(logits, 0)


def test_generator_loss_sums_the_four_weighted_terms():
    x = _images(4)
    generated, cycled = (x * 0.9).clamp(-1, 1), (x + 0.05).clamp(-1, 1)
    outputs = _outputs(torch.zeros(2, 4, 4, dtype=torch.long), 1.0)
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.0]])
    dssim = DSSIM()
    total, terms = generator_loss(dssim, x, generated, cycled, outputs, logits, 1)
    assert set(terms) == {"cycle", "similarity", "adversarial", "activation"}
    assert float(total) == pytest.approx(sum(terms.values()), rel=1e-6)
    assert terms["similarity"] == pytest.approx(float(dssim(x, generated)), rel=1e-6)
    weighted, _ = generator_loss(dssim, x, generated, cycled, outputs, logits, 1,
                                 LossWeights(cycle=2.0, activation=0.0))
    assert float(weighted) == pytest.approx(
        2 * terms["cycle"] + terms["similarity"] + terms["adversarial"], rel=1e-6)


def test_dssim_stays_float32_under_autocast():
    """AMP training must not compute SSIM's variances in half precision."""
    x, y = _images(5), _images(6)
    dssim = DSSIM()
    reference = dssim(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = dssim(x.bfloat16(), y.bfloat16())
    assert under_autocast.dtype == torch.float32
    # Only the inputs' rounding to bfloat16 differs, not the computation.
    assert float(under_autocast) == pytest.approx(float(dssim(x.bfloat16().float(), y.bfloat16().float())), abs=1e-6)
    assert float(under_autocast) == pytest.approx(float(reference), abs=5e-3)
