"""compare-methods: the attribution measures and controls on hand-made cases, then the command
end to end on a real (untrained, tiny) TorchScript bundle and small prepared datasets with nodule masks:
synthetic discs with a surround, and real nodule sub-volumes from ../shared/lidc-voi (fails under CI
when that folder is missing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


# --- localisation at mask dilations, restricted to valid pixels ---------------------------------


def test_a_map_equal_to_the_dilated_mask_localises_fully_at_that_dilation_only():
    mask = _square_mask(top=28, side=8)
    valid = np.ones_like(mask)
    regions = measures.localisation_regions(mask, valid, (0.0, 2.0, 5.0))
    assert regions[0.0].sum() == mask.sum() < regions[2.0].sum() < regions[5.0].sum()
    scores = measures.localisation_scores(regions[2.0].astype(float), regions, valid)
    assert scores["relevance_mass_2mm"] == pytest.approx([1.0])
    assert scores["pointing_game_2mm"].tolist() == [1.0]
    assert scores["relevance_rank_2mm"] == pytest.approx([1.0])
    assert scores["relevance_mass_0mm"] == pytest.approx([mask.sum() / regions[2.0].sum()])
    assert scores["pointing_game_0mm"].tolist() == [0.0]  # tied peaks outside the mask
    assert scores["surround_share"].tolist() == [0.0]


def test_regions_leave_out_pixels_that_hold_no_image():
    mask = _square_mask(top=28, side=8)
    valid = np.zeros_like(mask)
    valid[0, 20:44, 26:44] = 1  # the sub-volume ends 2 px left of the nodule's dilation at 5 mm
    unrestricted = measures.localisation_regions(mask, np.ones_like(mask), (5.0,))[5.0]
    region = measures.localisation_regions(mask, valid, (5.0,))[5.0]
    assert not np.any(region & ~valid.astype(bool)) and region.sum() < unrestricted.sum()
    scores = measures.localisation_scores(unrestricted.astype(float), {5.0: region}, valid)
    assert scores["relevance_mass_5mm"] == pytest.approx([region.sum() / unrestricted.sum()])
    assert scores["surround_share"] == pytest.approx([1 - region.sum() / unrestricted.sum()])


def test_centred_gaussian_control_has_the_analytic_mass_within_5_mm_of_a_centred_nodule():
    from cyclegan_explain_training.method_comparison import GAUSSIAN_CONTROL_SIGMA_MM, centred_gaussian_map
    from cyclegan_explain_training.nodule_regions import PIXEL_MM, within_mm_of_centre

    mask = within_mm_of_centre(3.0)[None].astype(np.uint8)
    gaussian = centred_gaussian_map(1)
    peak_radius_squared = 2 * (PIXEL_MM / 2) ** 2  # the four central pixels lie half a pixel off the centre
    assert gaussian.shape == (1, SIZE, SIZE)
    assert gaussian.max() == pytest.approx(np.exp(-peak_radius_squared / (2 * GAUSSIAN_CONTROL_SIGMA_MM**2)))
    regions = measures.localisation_regions(mask, np.ones_like(mask), (0.0, 5.0))
    for distance, region in regions.items():
        radius_mm = np.sqrt(region.sum() * PIXEL_MM**2 / np.pi)  # the region's equivalent disc
        analytic = 1 - np.exp(-(radius_mm**2) / (2 * GAUSSIAN_CONTROL_SIGMA_MM**2))  # 2D Gaussian mass in a disc
        assert measures.relevance_mass_accuracy(gaussian, region)[0] == pytest.approx(analytic, abs=0.005), distance
    assert measures.pointing_game(gaussian, regions[0.0]).tolist() == [1.0]


def test_edge_map_control_is_zero_on_a_constant_image_and_marks_a_step():
    from cyclegan_explain_training.method_comparison import edge_map

    assert np.abs(edge_map(np.full((2, SIZE, SIZE), 0.3, dtype=np.float32))).max() < 1e-6
    step = np.where(np.arange(SIZE) < 32, -1.0, 1.0)[None, None].repeat(SIZE, axis=1)
    edges = edge_map(step)[0]
    assert set(np.argmax(edges, axis=1)) <= {31, 32}  # the strongest edge sits on the step in every row
    assert np.abs(edges[:, :20]).max() < 1e-6 and np.abs(edges[:, 44:]).max() < 1e-6


def test_controls_come_last_and_are_not_models():
    from cyclegan_explain_training.method_comparison import CONTROLS, control_maps, describe, ordered_methods

    assert ordered_methods(["lrp", "cyclegan-am", "saliency", "lrp"]) == ["cyclegan-am", "saliency", "lrp"]
    for key in CONTROLS:
        assert describe(key)["control"] and control_maps(key, np.zeros((3, SIZE, SIZE))).shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match="Unknown control"):
        control_maps("control-nothing", np.zeros((1, SIZE, SIZE)))


# --- faithfulness -------------------------------------------------------------------------------


def test_predicted_groups_partition_the_patches_at_the_threshold():
    p = np.array([0.1, 0.5, 0.49, 0.9, 0.5001])
    groups = measures.predicted_groups(p)
    assert list(groups) == list(measures.GROUPS) and groups["all"].all()
    assert groups["predicted_malignant"].tolist() == [False, True, False, True, True]
    assert not np.any(groups["predicted_malignant"] & groups["predicted_benign"])
    assert np.all(groups["predicted_malignant"] | groups["predicted_benign"])


def test_a_reference_equal_to_x_gives_flat_curves():
    def mean_intensity(images):
        return 1 / (1 + np.exp(-4 * images.reshape(len(images), -1).mean(axis=1)))

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, SIZE, SIZE)).astype(np.float32)
    x[0] += 0.5  # p(malignant) > 0.5 for one patch, below for the others
    deletion, insertion = measures.perturbation_curves(mean_intensity, x, rng.normal(size=x.shape), x, steps=5)
    p = mean_intensity(x)
    expected = np.where(p >= 0.5, p, 1 - p)[:, None].repeat(6, axis=1)
    assert deletion.shape == insertion.shape == (3, 6)
    assert deletion == pytest.approx(expected) and insertion == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2 steps"):
        measures.perturbation_curves(mean_intensity, x, x, x, steps=1)


def _quadrant_model(start: float, slope: float):
    """p(malignant) = start + slope x (fraction of the top-left quadrant that is air)."""
    quadrant = np.zeros((SIZE, SIZE), bool)
    quadrant[:32, :32] = True

    def malignancy(images):
        return start + slope * (images[:, quadrant] <= -1.0).mean(axis=1)

    return malignancy, np.where(quadrant, 1.0, 0.0)[None], np.where(quadrant, 0.0, 1.0)[None]


def test_deletion_removes_the_most_relevant_pixels_first():
    malignancy, right, wrong = _quadrant_model(1.0, -1.0)  # soft tissue: p = 1, deleting the quadrant: 0
    x = np.zeros((2, SIZE, SIZE), dtype=np.float32)
    deletion, insertion = measures.perturbation_curves(malignancy, x, np.concatenate([right, -3 * wrong]),
                                                       measures.AIR, steps=4)
    # Right map: the quadrant (the first quarter of the ranking) goes at step 1.
    assert deletion[0] == pytest.approx([1, 0, 0, 0, 0])
    assert insertion[0] == pytest.approx([0, 1, 1, 1, 1])
    # Wrong map (negative: ranked by magnitude): the quadrant is deleted last (ties by position), inserted last.
    assert deletion[1] == pytest.approx([1, 1, 1, 1, 0])
    assert insertion[1] == pytest.approx([0, 0, 0, 0, 1])
    area = measures.area_under_perturbation_curves(deletion)
    assert area[0] == pytest.approx(0.125) and area[1] == pytest.approx(0.875)


def test_a_predicted_benign_patch_follows_one_minus_the_malignancy():
    malignancy, right, _ = _quadrant_model(0.4, -0.3)  # benign on x (0.4); deleting the quadrant: 0.1
    x = np.zeros((1, SIZE, SIZE), dtype=np.float32)
    deletion, insertion = measures.perturbation_curves(malignancy, x, right, measures.AIR, steps=4)
    assert deletion[0] == pytest.approx([0.6, 0.9, 0.9, 0.9, 0.9])  # more benign once the quadrant is air
    assert insertion[0] == pytest.approx([0.9, 0.6, 0.6, 0.6, 0.6])


def test_perturbation_references_are_air_lung_and_blurred_x():
    from cyclegan_explain_training.context_fill import fill_outside
    from cyclegan_explain_training.method_comparison import perturbation_references
    from CycleGANExplainLib.intensity import normalise_hu

    window = (-1000.0, 400.0)
    rng = np.random.default_rng(4)
    images_hu = rng.uniform(-900, 100, (2, SIZE, SIZE)).astype(np.float32)
    valid = np.zeros((2, SIZE, SIZE), np.uint8)
    valid[:, 16:48, 16:48] = 1
    x = normalise_hu(fill_outside(images_hu, valid, "lung", seed=3), window)
    references = perturbation_references(images_hu, x, window, seed=3)
    assert set(references) == {"air", "lung", "blurred"} and (references["air"] == -1.0).all()
    outside = valid == 0
    assert references["lung"][outside] == pytest.approx(x[outside])  # the lung fill's own surround
    assert abs(float(references["lung"].mean()) - float(normalise_hu(np.float32(-850.0), window))) < 0.02
    assert references["blurred"].std() < 0.5 * x.std() and references["blurred"].mean() == pytest.approx(x.mean(),
                                                                                                          abs=0.01)

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

REPO = Path(__file__).resolve().parents[2]
SHARED_VOI = REPO.parent / "shared" / "lidc-voi"
CONTROL_KEYS = ["control-centred-gaussian", "control-edge-map"]


def _disc_data_with_a_surround(make_disc_dataset, count: int = 20, seed: int = 3):
    """Disc patches whose outer ring (10 px) holds no image, like a nodule sub-volume's padding."""
    data = make_disc_dataset(count=count, seed=seed)
    data.valid = np.zeros_like(data.masks)
    data.valid[:, 10:54, 10:54] = 1
    return data


@pytest.fixture(scope="module")
def disc_folder(tmp_path_factory, make_disc_dataset):
    return _disc_data_with_a_surround(make_disc_dataset).save(tmp_path_factory.mktemp("discs") / "data")


def test_compare_methods_writes_the_report_for_every_method(tmp_path, tiny_bundle, disc_folder, capsys):
    sanity = export_untrained_bundle(tmp_path / "sanity", classifier_width=4, generator_width=4, seed=5)
    out = tmp_path / "report"
    assert main(["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out", str(out),
                 "--limit", "4", "--sanity-bundle", str(sanity), "--bootstrap", "20", "--seed", "7",
                 "--fill", "air"]) == 0
    report = json.loads((out / "baselines.json").read_text())
    rows = [*METHODS, *CONTROL_KEYS]
    assert report["dataset"]["n"] == 4 and report["bundle"]["trained"] is False
    assert report["dataset"]["fill"] == "air" and report["dataset"]["view"] == "centre"
    assert list(report["methods"]) == rows  # CycleGAN-AM first, controls last
    sizes = report["dataset"]["group_sizes"]
    assert sizes["all"] == 4 and sizes["predicted_malignant"] + sizes["predicted_benign"] == 4
    expected_measures = {f"{name}_{d}mm" for name in ("relevance_mass", "relevance_rank", "pointing_game")
                         for d in (0, 2, 5)} | {f"{curve}_auc_{reference}" for curve in ("deletion", "insertion")
                                                for reference in ("air", "lung", "blurred")}
    assert expected_measures | {"surround_share", "sparseness_gini", "complexity_entropy"} == set(report["measures"])
    for measure, by_group in report["measures"].items():
        entry = by_group["all"]
        assert set(entry["estimates"]) == set(rows), measure
        assert set(entry["wilcoxon_vs_cyclegan_am"]) == set(rows) - {"cyclegan-am"}
        for method, estimate in entry["estimates"].items():
            values = [v for v in report["per_patch"][method][measure] if v is not None]
            if values:  # the point estimate is the mean of the defined per-patch values
                assert estimate["value"] == pytest.approx(np.mean(values)), (measure, method)
                assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
    # The Gaussian is the same map on every patch and its peak is at the centre, where every disc lies.
    assert report["per_patch"]["control-centred-gaussian"]["pointing_game_5mm"] == [1.0] * 4
    # The fill is the 10 px ring, at least 15 mm (3 sigma) from the centre: under 1 % of the Gaussian lies there.
    assert max(report["per_patch"]["control-centred-gaussian"]["surround_share"]) < 0.01
    randomisation = report["randomisation"]
    assert set(randomisation["estimates"]) == set(METHODS)  # cyclegan-am too: a sanity bundle was given
    assert set(randomisation["not_run"]) == set(CONTROL_KEYS)
    assert "sanity bundle's classifier" in randomisation["randomised_classifier"]
    assert all(len(values) == 4 for values in randomisation["per_patch"].values())
    flips = randomisation["cyclegan_am_flip_test"]["flip_rates_randomised_generators"]
    assert set(flips) == {"malignant_after_pos", "benign_after_neg", "flipped_to_malignant", "flipped_to_benign"}
    for method in rows:
        for batch in ("batch_1", "batch_32"):
            assert report["speed"]["per_method"][method][batch]["maps_per_second"] > 0
    markdown = (out / "baselines.md").read_text()
    assert "UNTRAINED" in markdown and "cyclegan-explain-train compare-methods" in markdown
    assert "Fill: `air`" in markdown and "pred. benign" in markdown and "Sign convention" in markdown
    for label in [method.label for method in METHODS.values()] + ["Control: centred Gaussian (sigma 5 mm)"]:
        escaped = label.replace("|", "\\|")  # a bare pipe would split the table row
        assert markdown.count(f"| {escaped} |") >= 3, label  # localisation, deletion, insertion, ... tables
    assert "| Saliency (\\|gradient\\|) |" in markdown
    assert markdown.index("| CycleGAN-AM |") < markdown.index("| Saliency") < markdown.index("| Control: edge map")
    image = imread(out / "baselines.png")
    assert image.shape[0] > 400 and image.shape[1] > 100 * (1 + len(FIGURE_METHODS))
    assert "Method comparison written to" in capsys.readouterr().out


def test_without_a_sanity_bundle_cyclegan_am_randomisation_is_not_run(tmp_path, tiny_bundle, disc_folder):
    out = tmp_path / "report"
    assert main(["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out", str(out),
                 "--limit", "3", "--bootstrap", "10", "--methods", "cyclegan-am", "saliency"]) == 0
    report = json.loads((out / "baselines.json").read_text())
    assert report["dataset"]["fill"] == "lung"  # the default
    assert list(report["randomisation"]["estimates"]) == ["saliency"]
    assert "not run" in report["randomisation"]["not_run"]["cyclegan-am"]
    assert "freshly initialised" in report["randomisation"]["randomised_classifier"]
    markdown = (out / "baselines.md").read_text()
    assert "| CycleGAN-AM | not run: " in markdown
    assert "| Control: centred Gaussian (sigma 5 mm) | not applicable" in markdown


def test_the_fill_goes_only_where_the_patch_holds_no_image(tiny_bundle, disc_folder, make_disc_dataset):
    from cyclegan_explain_training.method_comparison import compare_methods, select_patches
    from CycleGANExplainLib.intensity import normalise_hu

    data = _disc_data_with_a_surround(make_disc_dataset).subset("test")
    results = {fill: compare_methods(tiny_bundle, disc_folder, methods=["cyclegan-am"], limit=2, fill=fill, seed=1)
               for fill in ("air", "lung")}
    outside = data.valid[select_patches(len(data), 2, seed=1)] == 0
    inside_values = {fill: result["x"][~outside] for fill, result in results.items()}
    assert inside_values["air"] == pytest.approx(inside_values["lung"])
    assert (results["air"]["x"][outside] == -1.0).all()
    lung_level = float(normalise_hu(np.float32(-850.0), results["lung"]["bundle"]["hu_window"]))
    assert abs(float(results["lung"]["x"][outside].mean()) - lung_level) < 0.02


def test_compare_methods_refuses_a_sanity_bundle_with_the_trained_classifier(tmp_path, tiny_bundle, disc_folder,
                                                                            capsys):
    twin = export_untrained_bundle(tmp_path / "twin", classifier_width=4, generator_width=4)  # the same weights
    assert main(["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out",
                 str(tmp_path / "out"), "--limit", "2", "--sanity-bundle", str(twin)]) == 2
    assert "the bundle's own trained classifier" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_compare_methods_refuses_patches_of_another_field_of_view(tmp_path, tiny_bundle, disc_folder, capsys):
    manifest_path = disc_folder / "manifest.json"
    other = tmp_path / "other"
    other.mkdir()
    (other / "patches.npz").write_bytes((disc_folder / "patches.npz").read_bytes())
    manifest = json.loads(manifest_path.read_text())
    manifest["patch"] = {"size_px": 64, "extent_mm": 60.0}
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(other), "--out",
                 str(tmp_path / "out"), "--limit", "2"]) == 2
    error = capsys.readouterr().err
    assert "60.0 mm patches" in error and "45.0 mm" in error
    assert not (tmp_path / "out").exists()


def test_compare_methods_needs_cyclegan_am_and_known_methods(tmp_path, tiny_bundle, disc_folder, capsys):
    common = ["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out",
              str(tmp_path / "out"), "--limit", "2", "--methods"]
    assert main([*common, "saliency"]) == 2
    assert "include it in --methods" in capsys.readouterr().err
    assert main([*common, "cyclegan-am", "no-such-method"]) == 2
    assert "Unknown attribution method 'no-such-method'" in capsys.readouterr().err


def test_compare_methods_names_a_missing_package(tmp_path, tiny_bundle, disc_folder, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zennit", None)  # None in sys.modules: not importable
    assert main(["compare-methods", "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset", str(disc_folder), "--out",
                 str(tmp_path / "out"), "--limit", "2", "--methods", "cyclegan-am", "lrp"]) == 2
    error = capsys.readouterr().err
    assert "zennit" in error and "pip install" in error


def test_real_sub_volumes_are_compared_on_centre_views_with_their_surround_filled(tmp_path, tiny_bundle):
    """Real LIDC-IDRI nodule sub-volumes (a folder laid out like lidc-voi): tight boxes, so the fill matters."""
    if not SHARED_VOI.is_dir():
        message = f"needs the real nodule sub-volumes at {SHARED_VOI}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: this test must run)")
        pytest.skip(message)
    from cyclegan_explain_training.dataset import load_prepared
    from cyclegan_explain_training.method_comparison import compare_methods
    from cyclegan_explain_training.prepare import prepare_voi

    folder = prepare_voi(tmp_path / "voi", SHARED_VOI, limit=8, progress=False)
    test_views = load_prepared(folder).subset("test")
    centre = test_views.subset("test", view="centre")
    assert 0 < len(centre) < len(test_views)  # the seed-shifted views are left out
    result = compare_methods(tiny_bundle, folder, methods=["cyclegan-am"], fill="lung")
    assert result["dataset"]["n"] == len(centre) and result["dataset"]["median_valid_fraction"] < 0.9
    outside = centre.valid == 0
    assert (result["x"][outside] > -0.99).mean() > 0.99  # lung texture, not air, where the VOI ended
    for values in result["per_patch"]["cyclegan-am"].values():
        assert len(values) == len(centre)
