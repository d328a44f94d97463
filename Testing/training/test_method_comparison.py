"""compare-methods (issue 6): the attribution measures on hand-made cases, then the command end to end
on a real (untrained, tiny) TorchScript bundle and a small prepared dataset with nodule masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread

from CycleGANExplainLib.attribution_methods import METHODS
from cyclegan_explain_training import attribution_metrics as measures
from cyclegan_explain_training.cli import main
from cyclegan_explain_training.comparison_report import FIGURE_METHODS, paired_wilcoxon, per_panel_scaled
from cyclegan_explain_training.export import export_untrained_bundle

SIZE = 64


def _square_mask(top: int = 20, side: int = 16) -> np.ndarray:
    mask = np.zeros((1, SIZE, SIZE), dtype=np.uint8)
    mask[0, top : top + side, top : top + side] = 1
    return mask


# --- localisation -------------------------------------------------------------------------------


def test_map_inside_the_mask_scores_full_localisation():
    mask = _square_mask()
    relevance = np.where(mask, -2.0, 0.0)  # negative (benign) evidence counts by its magnitude
    relevance[0, 25, 25] = 5.0
    assert measures.relevance_mass_accuracy(relevance, mask) == pytest.approx([1.0])
    assert measures.relevance_rank_accuracy(relevance, mask) == pytest.approx([1.0])
    assert measures.pointing_game(relevance, mask).tolist() == [1.0]


def test_uniform_map_has_the_mask_fraction_as_mass_accuracy_and_no_pointing_hit():
    mask = _square_mask(side=16)
    uniform = np.full((1, SIZE, SIZE), 0.3)
    assert measures.relevance_mass_accuracy(uniform, mask) == pytest.approx([16 * 16 / SIZE**2])
    # Every pixel ties for the maximum and most lie outside: a miss (Quantus 0.6 would call it a hit).
    assert measures.pointing_game(uniform, mask).tolist() == [0.0]


def test_localisation_by_hand_for_a_split_map():
    mask = _square_mask(top=0, side=8)  # 64 pixels
    relevance = np.zeros((1, SIZE, SIZE))
    relevance[0, :8, :4] = 1.0  # 32 inside the mask, weight 32
    relevance[0, 40:, 40:] = 0.5  # 576 outside, weight 288
    relevance[0, 63, 63] = 3.0  # the peak, outside
    assert measures.relevance_mass_accuracy(relevance, mask) == pytest.approx([32 / (32 + 0.5 * 575 + 3)])
    # Top 64 by |map|: the peak, the 32 ones inside, then 31 of the 0.5s outside -> 32 / 64 inside.
    assert measures.relevance_rank_accuracy(relevance, mask) == pytest.approx([0.5])
    assert measures.pointing_game(relevance, mask).tolist() == [0.0]


def test_empty_mask_and_zero_map_are_undefined_or_misses():
    empty, mask = np.zeros((1, SIZE, SIZE), np.uint8), _square_mask()
    some_map = np.random.default_rng(0).normal(size=(1, SIZE, SIZE))
    assert np.isnan(measures.pointing_game(some_map, empty)).all()
    assert np.isnan(measures.relevance_mass_accuracy(some_map, empty)).all()
    zero = np.zeros((1, SIZE, SIZE))
    assert np.isnan(measures.relevance_mass_accuracy(zero, mask)).all()
    assert measures.pointing_game(zero, mask).tolist() == [0.0]  # points nowhere


# --- complexity ---------------------------------------------------------------------------------


def test_sparseness_and_complexity_of_a_point_and_of_a_uniform_map():
    point = np.zeros((1, SIZE, SIZE))
    point[0, 10, 10] = -4.0
    uniform = np.full((1, SIZE, SIZE), 2.0)
    maps = np.concatenate([point, uniform])
    gini = measures.sparseness_gini(maps)
    entropy = measures.complexity_entropy(maps)
    assert gini[0] == pytest.approx(1.0, abs=1e-3) and gini[1] == pytest.approx(0.0, abs=1e-6)
    assert entropy[0] == pytest.approx(0.0, abs=1e-6) and entropy[1] == pytest.approx(np.log(SIZE**2))
    assert point[0, 10, 10] == -4.0  # Quantus works in place; our input is untouched


# --- faithfulness -------------------------------------------------------------------------------


def test_constant_model_gives_flat_deletion_and_insertion_curves():
    def constant(images):
        return np.tile([0.3, 0.7], (len(images), 1))

    rng = np.random.default_rng(1)
    deletion, insertion, classes = measures.perturbation_curves(
        constant, rng.uniform(-1, 1, (3, SIZE, SIZE)), rng.normal(size=(3, SIZE, SIZE)), steps=8)
    assert deletion.shape == insertion.shape == (3, 9)
    assert np.allclose(deletion, 0.7) and np.allclose(insertion, 0.7) and (classes == 1).all()
    assert measures.curve_auc(deletion) == pytest.approx([0.7] * 3)


def test_deletion_removes_the_most_relevant_pixels_first():
    """A 'classifier' whose malignancy is the fraction of non-air pixels in the top-left quadrant."""
    quadrant = np.zeros((SIZE, SIZE), bool)
    quadrant[:32, :32] = True

    def quadrant_model(images):
        malignant = (images[:, quadrant] > -1.0).mean(axis=1)
        return np.stack([1 - malignant, malignant], axis=1)

    x = np.zeros((2, SIZE, SIZE), dtype=np.float32)  # soft tissue everywhere: p(malignant) = 1
    right = np.where(quadrant, 1.0, 0.0)[None]
    wrong = np.where(quadrant, 0.0, 1.0)[None]
    deletion, insertion, classes = measures.perturbation_curves(quadrant_model, x, np.concatenate([right, wrong]),
                                                                steps=4)
    assert classes.tolist() == [1, 1]
    # Right map: the quadrant (the first quarter of the ranking) goes at step 1.
    assert deletion[0] == pytest.approx([1, 0, 0, 0, 0])
    assert insertion[0] == pytest.approx([0, 1, 1, 1, 1])
    # Wrong map: the quadrant is deleted last (ties broken by position) and inserted last.
    assert deletion[1] == pytest.approx([1, 1, 1, 1, 0])
    assert insertion[1] == pytest.approx([0, 0, 0, 0, 1])
    auc = measures.curve_auc(deletion)
    assert auc[0] == pytest.approx(0.125) and auc[1] == pytest.approx(0.875)


# --- sanity and statistics ----------------------------------------------------------------------


def test_rank_correlation_of_magnitudes():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, SIZE, SIZE))
    same_magnitudes = np.stack([-3 * a[0], rng.normal(size=(SIZE, SIZE))])  # monotone in |a|, then unrelated
    rho = measures.rank_correlation(a, same_magnitudes)
    assert rho[0] == pytest.approx(1.0)
    assert abs(rho[1]) < 0.1
    assert np.isnan(measures.rank_correlation(a[:1], np.zeros((1, SIZE, SIZE)))).all()


def test_paired_wilcoxon_direction_and_ties():
    ours = np.linspace(0, 1, 20)
    better = paired_wilcoxon(ours + 0.1 + 0.01 * np.arange(20), ours)
    assert better["n"] == 20 and better["median_difference"] > 0 and better["p"] < 0.001
    same = paired_wilcoxon(np.append(ours, np.nan), np.append(ours, 1.0))
    assert same["n"] == 20 and np.isnan(same["p"])  # no differences: no test, not p = 1


def test_per_panel_scaling_keeps_small_maps_visible():
    tiny = np.array([[1e-4, -2e-4], [0.0, 5e-5]])
    scaled, peak = per_panel_scaled(tiny)
    assert peak == pytest.approx(2e-4) and np.abs(scaled).max() == pytest.approx(1.0)
    assert scaled[0, 1] == pytest.approx(-1.0)  # the sign survives
    assert per_panel_scaled(np.zeros((2, 2)))[1] == 0.0


# --- the command end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def disc_folder(tmp_path_factory, make_disc_dataset):
    return make_disc_dataset(count=20, seed=3).save(tmp_path_factory.mktemp("discs") / "data")


def test_compare_methods_writes_the_report_for_every_method(tmp_path, tiny_bundle, disc_folder, capsys):
    sanity = export_untrained_bundle(tmp_path / "sanity", classifier_width=4, generator_width=4, seed=5)
    out = tmp_path / "report"
    assert main(["compare-methods", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out", str(out),
                 "--limit", "4", "--sanity-bundle", str(sanity), "--bootstrap", "20", "--seed", "7"]) == 0
    report = json.loads((out / "baselines.json").read_text())
    assert report["dataset"]["n"] == 4 and report["bundle"]["trained"] is False
    assert set(report["methods"]) == set(METHODS)
    for measure, entry in report["measures"].items():
        assert set(entry["estimates"]) == set(METHODS), measure
        assert set(entry["wilcoxon_vs_cyclegan_am"]) == set(METHODS) - {"cyclegan-am"}
        for method, estimate in entry["estimates"].items():
            values = [v for v in report["per_patch"][method][measure] if v is not None]
            if values:  # the point estimate is the mean of the defined per-patch values
                assert estimate["value"] == pytest.approx(np.mean(values)), (measure, method)
                assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
    localisation = report["measures"]["relevance_mass_accuracy"]["estimates"]
    assert all(0.0 <= entry["value"] <= 1.0 for entry in localisation.values() if entry["value"] is not None)
    assert set(report["randomisation"]["estimates"]) == set(METHODS)  # cyclegan-am too: a sanity bundle was given
    flips = report["randomisation"]["cyclegan_am"]["flip_rates_randomised_generators"]
    assert set(flips) == {"malignant_after_pos", "benign_after_neg", "flipped_to_malignant", "flipped_to_benign"}
    for method in METHODS:
        for batch in ("batch_1", "batch_32"):
            assert report["speed"]["per_method"][method][batch]["maps_per_second"] > 0
    markdown = (out / "baselines.md").read_text()
    assert "UNTRAINED" in markdown and "cyclegan-explain-train compare-methods" in markdown
    for method in METHODS.values():
        assert f"| {method.label} |" in markdown
    image = imread(out / "baselines.png")
    assert image.shape[0] > 400 and image.shape[1] > 100 * (1 + len(FIGURE_METHODS))
    assert "Method comparison written to" in capsys.readouterr().out


def test_compare_methods_refuses_patches_of_another_field_of_view(tmp_path, tiny_bundle, disc_folder, capsys):
    manifest_path = disc_folder / "manifest.json"
    other = tmp_path / "other"
    other.mkdir()
    (other / "patches.npz").write_bytes((disc_folder / "patches.npz").read_bytes())
    manifest = json.loads(manifest_path.read_text())
    manifest["patch"] = {"size_px": 64, "extent_mm": 60.0}
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["compare-methods", "--bundle", str(tiny_bundle), "--dataset", str(other), "--out",
                 str(tmp_path / "out"), "--limit", "2"]) == 2
    error = capsys.readouterr().err
    assert "60.0 mm patches" in error and "45.0 mm" in error
    assert not (tmp_path / "out").exists()


def test_compare_methods_needs_cyclegan_am_and_known_methods(tmp_path, tiny_bundle, disc_folder, capsys):
    common = ["compare-methods", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out",
              str(tmp_path / "out"), "--limit", "2", "--methods"]
    assert main([*common, "saliency"]) == 2
    assert "include it in --methods" in capsys.readouterr().err
    assert main([*common, "cyclegan-am", "no-such-method"]) == 2
    assert "Unknown attribution method 'no-such-method'" in capsys.readouterr().err


def test_compare_methods_names_a_missing_package(tmp_path, tiny_bundle, disc_folder, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zennit", None)  # None in sys.modules: not importable
    assert main(["compare-methods", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out",
                 str(tmp_path / "out"), "--limit", "2", "--methods", "cyclegan-am", "lrp"]) == 2
    error = capsys.readouterr().err
    assert "zennit" in error and "pip install" in error
