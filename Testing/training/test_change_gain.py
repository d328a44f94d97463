"""The generators' change gain (issue 21, transfer): a residual generator's thresholded change is
multiplied at export, so every pixel the deadband keeps stays as it was and every change keeps its
place and sign; `export-with-gain` copies a bundle that way and says so in its metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from CycleGANExplainLib.intensity import hu_change_to_normalised
from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.networks import MalignancyClassifier, UNetGenerator
from cyclegan_explain_training.export import base_metadata, export_bundle

DEADBAND_HU = 10.0


def _trained_looking(gain: float = 1.0, seed: int = 4) -> UNetGenerator:
    torch.manual_seed(seed)
    deadband = hu_change_to_normalised(DEADBAND_HU, (-1000.0, 400.0))
    generator = UNetGenerator(4, residual=True, change_deadband=deadband, change_gain=gain).eval()
    with torch.no_grad():
        generator.output.weight.normal_(0.0, 1.0)
        # Centre the change on mid-range inputs so that it falls on both sides of the deadband.
        captured = []
        hook = generator.output.register_forward_hook(lambda module, inputs, output: captured.append(output))
        generator(torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3)
        hook.remove()
        generator.output.bias -= captured[0].median()
    return generator


def _residual_bundle(tmp_path, evaluated: bool = True):
    metadata = base_metadata("residual-test", "1.0.0", trained=False, classifier_width=4, generator_width=4,
                             residual_generators=True, change_deadband_hu=DEADBAND_HU)
    metadata["training_data"] = {"commands": ["train"]}
    metadata["evaluation"] = {"classifier_auc": "0.9"} if evaluated else None
    metadata["summary"] = "evaluated once"
    torch.manual_seed(1)
    return export_bundle(MalignancyClassifier(4).eval(), _trained_looking(seed=4), _trained_looking(seed=6),
                         tmp_path / "original", metadata)


def test_the_gain_multiplies_the_kept_change_and_leaves_unchanged_pixels_alone():
    plain, doubled = _trained_looking(), _trained_looking(2.0)
    x = torch.rand(3, 1, 64, 64) * 0.6 - 0.3  # away from the window's ends: no clipping
    with torch.no_grad():
        change, scaled = plain(x) - x, doubled(x) - x
    unchanged = change == 0
    assert unchanged.any() and (~unchanged).any()  # both cases occur, so both are tested
    assert torch.equal(scaled[unchanged], torch.zeros_like(scaled[unchanged]))
    torch.testing.assert_close(scaled[~unchanged], 2.0 * change[~unchanged], atol=1e-5, rtol=0)


def test_the_gained_output_stays_in_the_normalised_range():
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        y = _trained_looking(8.0)(x)
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    assert bool((y.abs() == 1.0).any())  # a gain this large does reach the clip


def test_a_gain_is_refused_when_not_positive_or_on_an_image_generator():
    with pytest.raises(ValueError, match="change_gain must be > 0, got 0"):
        UNetGenerator(4, residual=True, change_gain=0.0)
    with pytest.raises(ValueError, match="change_gain applies to a residual generator's change"):
        UNetGenerator(4, residual=False, change_gain=1.5)


def test_export_with_gain_copies_a_bundle_scales_its_changes_and_drops_its_evaluation(tmp_path):
    original = _residual_bundle(tmp_path)
    before_files = {path.name: path.read_bytes() for path in original.iterdir()}
    done = subprocess.run(
        [sys.executable, "-m", "cyclegan_explain_training.cli", "export-with-gain", "--bundle", str(original),
         "--change-gain", "1.5", "--out", str(tmp_path / "copy"), "--version", "1.1.0", "--allow-unknown-bundle"],
        capture_output=True, text=True, check=True)
    assert "not evaluated: run evaluate --attach" in done.stdout and "KNOWN_BUNDLE_DIGESTS" in done.stdout
    assert {path.name: path.read_bytes() for path in original.iterdir()} == before_files  # input untouched

    copy = tmp_path / "copy"
    metadata = json.loads((copy / "metadata.json").read_text())
    generator = metadata["architecture"]["generator"]
    assert generator["change_gain"] == 1.5 and generator["change_deadband_hu"] == DEADBAND_HU
    assert generator["output"].startswith("x + 1.5 * softshrink(tanh(change), 10 HU)")
    assert metadata["version"] == "1.1.0" and metadata["evaluation"] is None and "summary" not in metadata
    assert "multiplied by 1.5" in metadata["export_history"][-1]
    assert "export-with-gain" in metadata["training_data"]["commands"][-1]

    before, after = load_bundle(original, "cpu", allow_unknown=True), load_bundle(copy, "cpu", allow_unknown=True)
    x = torch.rand(4, 1, 64, 64) * 0.6 - 0.3
    with torch.no_grad():
        torch.testing.assert_close(after.classifier(x), before.classifier(x))
        for role in ("generator_pos", "generator_neg"):
            change, scaled = getattr(before, role)(x) - x, getattr(after, role)(x) - x
            kept = change.abs() > 1e-4
            assert kept.any() and (~kept).any()
            torch.testing.assert_close(scaled[kept], 1.5 * change[kept], atol=1e-5, rtol=0)
            assert float(scaled[~kept].abs().max()) <= 1.5e-4

    # The copy's own gain is what a further copy starts from (and is replaced, not compounded).
    from cyclegan_explain_training.export import bundle_with_change_gain, generators_of_bundle

    assert generators_of_bundle(after)[0].change_gain == 1.5
    again = bundle_with_change_gain(copy, tmp_path / "again", "1.2.0", 2.0, allow_unknown_bundle=True)
    with torch.no_grad():
        torch.testing.assert_close(load_bundle(again, "cpu", allow_unknown=True).generator_pos(x) - x,
                                   2.0 / 1.5 * (after.generator_pos(x) - x), atol=1e-5, rtol=0)


def test_export_with_gain_refuses_a_bundle_whose_generators_paint_the_image(tmp_path):
    from cyclegan_explain_training.export import bundle_with_change_gain, export_untrained_bundle

    painted = export_untrained_bundle(tmp_path / "painted", classifier_width=4, generator_width=4)
    with pytest.raises(ValueError, match="paint the image \\(not residual\\)"):
        bundle_with_change_gain(painted, tmp_path / "copy", "0.0.1", 1.5, allow_unknown_bundle=True)
    assert not (tmp_path / "copy").exists()
