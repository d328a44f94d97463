"""The generators' change deadband (issue 21, realism): changes under N HU are dropped, larger ones
shrink by N; training still reaches changes inside it; export and bundles carry the setting."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from CycleGANExplainLib.intensity import hu_change_to_normalised
from CycleGANExplainLib.networks import UNetGenerator


def _trained_looking(deadband: float = 0.0) -> UNetGenerator:
    torch.manual_seed(4)
    generator = UNetGenerator(4, residual=True, change_deadband=deadband).eval()
    with torch.no_grad():
        generator.output.weight.normal_(0.0, 0.2)  # changes of about 0.01-0.06: both sides of 0.03
    return generator


def test_hu_change_maps_onto_the_normalised_range():
    assert hu_change_to_normalised(14.0, (-1000.0, 400.0)) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="low < high"):
        hu_change_to_normalised(10.0, (400.0, -1000.0))


def test_changes_under_the_deadband_are_dropped_and_larger_ones_shrink_by_it():
    deadband = 0.03
    plain, thresholded = _trained_looking(), _trained_looking(deadband)
    thresholded.load_state_dict(plain.state_dict())
    x = torch.rand(3, 1, 64, 64) - 0.5  # away from the window's ends: no clipping
    with torch.no_grad():
        change, kept = plain(x) - x, thresholded(x) - x
    small = change.abs() < deadband
    assert small.any() and (~small).any()  # both cases occur, so both are tested
    assert torch.equal(kept[small], torch.zeros_like(kept[small]))  # exactly unchanged
    torch.testing.assert_close(kept[~small], change[~small] - deadband * change[~small].sign(), atol=1e-6, rtol=0)


def test_a_deadband_keeps_pixels_at_the_windows_top_where_the_change_is_small():
    """Bone clipped at the window's top is what a realism detector spots first when it moves."""
    plain, thresholded = _trained_looking(), _trained_looking(0.05)
    with torch.no_grad():
        plain.output.bias.fill_(-0.03)  # a slight darkening everywhere, as trained generators show
    thresholded.load_state_dict(plain.state_dict())
    x = torch.full((1, 1, 64, 64), -0.7)
    x[..., 40:50, 40:50] = 1.0
    with torch.no_grad():
        lowered = plain(x)[..., 40:50, 40:50] < 1.0
        assert lowered.any()
        top = thresholded(x)[..., 40:50, 40:50]
    change = (plain(x) - x)[..., 40:50, 40:50].detach()
    assert torch.equal(top[change > -0.05], torch.ones_like(top[change > -0.05]))


def test_training_reaches_changes_inside_the_deadband():
    """The residual starts as the identity, every change inside the deadband: a plain softshrink would
    give the output layer no gradient at all, the straight-through one does."""
    generator = UNetGenerator(4, residual=True, change_deadband=0.05).train()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    y = generator(x)
    assert torch.equal(y, x)
    F.l1_loss(y, torch.zeros_like(y)).backward()
    assert float(generator.output.weight.grad.abs().sum()) > 0


def test_a_deadband_is_refused_when_negative_or_on_an_image_generator():
    with pytest.raises(ValueError, match="change_deadband must be >= 0, got -0.1"):
        UNetGenerator(4, residual=True, change_deadband=-0.1)
    with pytest.raises(ValueError, match="applies to a residual generator's change"):
        UNetGenerator(4, residual=False, change_deadband=0.1)


def test_a_traced_generator_keeps_the_deadband(tmp_path):
    from cyclegan_explain_training.export import _torchscript

    generator = _trained_looking(0.03)
    _torchscript("generator_pos", generator, 64).save(str(tmp_path / "generator.pt"))
    loaded = torch.jit.load(str(tmp_path / "generator.pt"))
    x = torch.rand(2, 1, 64, 64) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), generator(x), atol=1e-6, rtol=0)
        assert int((loaded(x) == x).sum()) == int((generator(x) == x).sum()) > 0
