"""The counterfactual audit (issue 21): each measure on small constructed arrays, and the command
line end to end on a tiny prepared dataset with a real (untrained) TorchScript bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from CycleGANExplainLib.networks import MalignancyClassifier
from cyclegan_explain_training.checkpoint import load_checkpoint, save_checkpoint
from cyclegan_explain_training.cli import main
from cyclegan_explain_training.counterfactual_audit import (
    ablated_changes, centred_gaussian_maps, detector_scores, gaussian_sigma_px, image_area_px, texture_features,
    train_cnn_detector,
)
from cyclegan_explain_training.explanation_checks import (BRIGHT_HU, bright_core_inserted, change_beyond_box_hu,
                                                          share_of_magnitude)
from cyclegan_explain_training.export import export_untrained_bundle
from cyclegan_explain_training.metrics import patient_bootstrap, roc_auc
from cyclegan_explain_training.nodule_regions import PIXEL_MM

ROWS, COLUMNS = np.mgrid[:64, :64]
WINDOW = (-1000.0, 400.0)


def _disc(radius_px: float, centre=(31.5, 31.5)) -> np.ndarray:
    return np.hypot(ROWS - centre[0], COLUMNS - centre[1]) < radius_px


def _nodule(radius_px: float = 6.0) -> tuple:
    """One patch [1, 64, 64]: a 30 HU disc in -850 HU lung, and its mask."""
    mask = _disc(radius_px)
    return np.where(mask, 30.0, -850.0)[None].astype(np.float32), mask[None].astype(np.uint8)


def test_a_bright_core_counts_only_in_nodules_without_one_and_only_inside_the_mask():
    x, mask = _nodule()
    two_inside = x.copy()
    two_inside[0, 31, 31:33] = BRIGHT_HU + 100
    one_inside = x.copy()
    one_inside[0, 31, 31] = BRIGHT_HU + 100
    two_outside = x.copy()
    two_outside[0, 2, 2:4] = BRIGHT_HU + 100  # far from the nodule
    already_bright = x.copy()  # x had a bright pixel in its mask already: a core is not inserted
    already_bright[0, 33, 33] = BRIGHT_HU + 100
    generated = np.concatenate([two_inside, one_inside, two_outside, two_inside])
    before = np.concatenate([x, x, x, already_bright])
    inserted = bright_core_inserted(before, generated, np.repeat(mask, 4, axis=0))
    assert inserted.tolist() == [True, False, False, False]


def test_change_beyond_the_box_ignores_the_box_and_is_undefined_without_pixels_beyond_it():
    x = np.full((3, 64, 64), -1000.0, dtype=np.float32)
    valid = np.zeros((3, 64, 64), dtype=np.uint8)
    valid[:2, 16:48, 16:48] = 1
    valid[2] = 1  # all image: no pixel beyond the box
    x[valid == 1] = -850.0
    generated = x.copy()
    generated[0][valid[0] == 0] += 25.0  # the surround moved 25 HU
    generated[1][valid[1] == 1] += 300.0  # only the image changed
    generated[0, 0, 0] += 100.0  # one pixel beyond the box moved further
    change, largest = change_beyond_box_hu(x, generated, valid)
    beyond = int((valid[0] == 0).sum())
    assert change[0] == pytest.approx(25.0 + 100.0 / beyond) and largest[0] == pytest.approx(125.0)
    assert change[1] == 0.0 and largest[1] == 0.0
    assert np.isnan(change[2]) and np.isnan(largest[2])


def test_gaussian_control_share_is_the_gaussian_mass_in_the_region():
    sigma = 3.0
    maps = centred_gaussian_maps(2, sigma, 64)
    region = np.stack([_disc(8.0), _disc(8.0, centre=(10.0, 10.0))])  # on the centre; in a corner
    shares = share_of_magnitude(maps, region)
    gaussian = np.exp(-((ROWS - 31.5) ** 2 + (COLUMNS - 31.5) ** 2) / (2 * sigma**2))
    assert shares[0] == pytest.approx(gaussian[_disc(8.0)].sum() / gaussian.sum())
    assert shares[0] > 0.95 and shares[1] < 0.01
    wider = share_of_magnitude(centred_gaussian_maps(1, 3 * sigma, 64), region[:1])
    assert wider[0] < shares[0]


def test_gaussian_width_is_half_the_train_median_radius(make_disc_dataset):
    train = make_disc_dataset(count=10)
    train.diameters_mm[:] = np.array([4, 6, 8, 10, 12, 8, 8, 20, 2, 8], dtype=np.float32)
    assert gaussian_sigma_px(train) == pytest.approx(8.0 / 4.0 / PIXEL_MM)


def test_size_from_the_image_grows_with_the_blob_and_skips_what_is_not_at_the_centre():
    small, _ = _nodule(4.0)
    large, _ = _nodule(8.0)
    vessel = small.copy()
    vessel[0, 2:6, 2:6] = 40.0  # soft tissue not connected to the centre
    empty = np.full((1, 64, 64), -850.0, dtype=np.float32)
    areas = image_area_px(np.concatenate([small, large, vessel, empty]))
    assert areas[1] > areas[0] > 0
    assert areas[2] == areas[0] == _disc(4.0).sum()
    assert areas[3] == 0


def test_ablations_split_the_change_into_its_parts():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    generated = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
    core = np.zeros(x.shape, bool)
    core[:, 30:33, 30:33] = True
    parts = ablated_changes(x, generated, core)
    np.testing.assert_allclose(parts["darkening_only"] + parts["brightening_only"] - x, generated, atol=1e-6)
    assert (parts["darkening_only"] <= x + 1e-7).all() and (parts["brightening_only"] >= x - 1e-7).all()
    np.testing.assert_allclose(parts["inserted_core_only"][core], generated[core], atol=1e-6)
    np.testing.assert_array_equal(parts["inserted_core_only"][~core], x[~core])


def test_texture_features_see_grain_and_saturation():
    x, mask = _nodule()
    valid = np.ones_like(mask)
    rng = np.random.default_rng(0)
    noisy = x + np.where(mask, 0.0, rng.normal(0, 60, x.shape)).astype(np.float32)
    saturated = x.copy()
    saturated[mask == 1] = WINDOW[1]
    features = texture_features(np.concatenate([x, noisy, saturated]), np.repeat(valid, 3, 0),
                                np.repeat(mask, 3, 0), WINDOW)
    assert features[1, 0] > features[0, 0] + 30.0  # local SD of the lung (x's only from the disc's edge)
    assert features[0, 1] == 0.0 and features[2, 1] == pytest.approx(mask.sum() / mask.size)


def test_cnn_detector_learns_a_visible_artefact_from_train_images_only():
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(-0.7, 0.1, (48, 64, 64)), -1, 1).astype(np.float32)
    generated = real.copy()
    generated[:, ::4, :] += 0.5  # stripes: an obvious synthetic trace
    network = train_cnn_detector(real[:32], generated[:32], seed=0, epochs=3)
    held_out = np.concatenate([detector_scores(network, real[32:]), detector_scores(network, generated[32:])])
    assert roc_auc(np.repeat([0, 1], 16), held_out) > 0.95


def test_patient_bootstrap_keeps_a_patients_nodules_together():
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    drawn = []

    def statistics(indices):
        drawn.append(np.sort(indices))
        return {"n": float(len(indices))}

    estimates = patient_bootstrap(statistics, patients, resamples=30, seed=1)
    assert estimates["n"].value == 6.0
    for indices in drawn:
        counts = np.bincount(indices, minlength=6)
        assert counts[0] == counts[1] == counts[2] and counts[4] == counts[5]
    assert estimates["n"].low < estimates["n"].high  # 3 patients of 1-3 nodules: the count varies


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory, make_disc_dataset):
    """Disc nodules inside a valid box (air beyond it), an untrained bundle and a classifier.pt."""
    root = tmp_path_factory.mktemp("audit")
    dataset = make_disc_dataset(count=40, seed=0, test_fraction=0.5)
    dataset.valid = np.zeros_like(dataset.masks)
    dataset.valid[:, 12:52, 12:52] = 1
    dataset.images_hu[dataset.valid == 0] = -1000.0
    dataset.save(root / "dataset")
    bundle = export_untrained_bundle(root / "bundle", classifier_width=4, generator_width=4)
    classifier = MalignancyClassifier(4)
    save_checkpoint({"kind": "classifier", "state_dict": classifier.state_dict(), "width": 4,
                     "hu_window": list(WINDOW), "epoch": 0}, root / "held_out" / "classifier.pt")
    return root


def test_audit_command_writes_every_section_and_judges_the_targets(tiny_workspace, capsys):
    root = tiny_workspace
    out = root / "audit"
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"), "--out", str(out),
                 "--held-out-classifier", str(root / "held_out" / "classifier.pt"), "--bootstrap", "20",
                 "--device", "cpu", "--detector-epochs", "2", "--allow-unknown-bundle"]) == 0
    assert "audit.md" in capsys.readouterr().out
    result = json.loads((out / "audit.json").read_text())
    assert result["detectors"]["cnn"]["epochs"] == 2
    assert result["command"].startswith("cyclegan-explain-train audit --bundle ")
    figures = result["figures"]
    assert set(figures) == {"realism", "bright_core", "beyond_box", "transfer", "similarity", "similarity_skimage",
                            "relevance_within_5mm", "ablations_g_neg"}
    assert result["dataset"]["n"] == 20 and result["dataset"]["patients"] == 10
    # Random generators change the air beyond the box: measured there, on every test patch.
    assert result["denominators"]["beyond_box/g_pos/air/mean_change_hu"] == 20
    assert figures["beyond_box"]["g_pos"]["lung"]["mean_change_hu"]["value"] > 0
    for generator in ("g_pos", "g_neg"):
        auc = figures["realism"]["cnn_detector_auc"][generator]
        assert 0.0 <= auc["value"] <= 1.0 and auc["ci_low"] <= auc["ci_high"]
    assert result["transfer_models"]["held_out_classifier"]["architecture"] == "paper"
    assert "auc" in figures["transfer"]["held_out_classifier"]
    for model in ("bundle_classifier", "held_out_classifier", "size_only"):  # the keep targets' figures
        means = figures["transfer"][model]["mean_probability"]
        assert set(means) == {"x", "g_pos", "g_neg"} and all(0.0 <= means[k]["value"] <= 1.0 for k in means)
    verdicts = {target["name"]: target["verdict"] for target in result["targets"]}
    assert set(verdicts.values()) <= {"met", "missed", "n/a"}
    assert verdicts["relevance_within_5mm.relevance"] in ("met", "missed")
    # A stratum under five nodules is n/a, never a rate of two nodules.
    for name, count in result["denominators"].items():
        entry = figures
        for part in name.split("/"):
            entry = entry[part]
        if isinstance(count, int) and count < 5:
            assert entry["value"] is None and "n/a" in entry["note"]
    report = (out / "audit.md").read_text()
    assert "rated suspicious by readers" in report and "malignant" not in report
    assert "## 7. Ablations" in report
    assert "| mean p(x) | mean p(G+) | mean p(G\u2212) |" in report


def test_audit_without_a_held_out_classifier_marks_its_targets_n_a(tiny_workspace):
    root = tiny_workspace
    out = root / "audit-no-held-out"
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"), "--out", str(out),
                 "--bootstrap", "5", "--device", "cpu", "--detector-epochs", "1", "--allow-unknown-bundle"]) == 0
    result = json.loads((out / "audit.json").read_text())
    held_out = [t for t in result["targets"] if t["name"].startswith("transfer.held_out_classifier")]
    assert len(held_out) == 2 and all(t["verdict"] == "n/a" for t in held_out)
    assert "not measured" in (out / "audit.md").read_text()


def test_audit_refuses_a_missing_checkpoint_with_one_message(tiny_workspace, capsys):
    root = tiny_workspace
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"),
                 "--out", str(root / "never"), "--held-out-classifier", str(root / "nowhere.pt"),
                 "--allow-unknown-bundle"]) == 2
    error = capsys.readouterr().err
    assert "nowhere.pt" in error and "Traceback" not in error
    assert not (root / "never").exists()


def test_audit_runs_a_bundle_the_package_does_not_ship_only_when_allowed(tiny_workspace, capsys):
    root = tiny_workspace
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"),
                 "--out", str(root / "not-allowed"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "--allow-unknown-bundle" in error and "Traceback" not in error
    assert not (root / "not-allowed").exists()


def test_audit_on_validation_patients_never_reads_the_test_split(tiny_workspace, capsys):
    """For choices between bundles: fitted on a classifier's fitting patients, measured on its
    validation patients; a held-out classifier must have held out the same patients."""
    from cyclegan_explain_training.config import load_config, with_overrides
    from cyclegan_explain_training.dataset import CENTRE, load_prepared
    from cyclegan_explain_training.train_classifier import train_classifier
    from cyclegan_explain_training.train_cyclegan import split_like_classifier

    root = tiny_workspace
    dataset = load_prepared(root / "dataset")
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 1,
                                                          "validation_fraction": 0.4})
    classifier = train_classifier(dataset, config, root / "validation-classifier", device="cpu", progress=False)
    fit, validation = split_like_classifier(dataset, load_checkpoint(classifier, "classifier"))
    out = root / "audit-validation"
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"), "--out", str(out),
                 "--validation-of", str(classifier), "--bootstrap", "5", "--device", "cpu", "--detector-epochs", "1",
                 "--allow-unknown-bundle"]) == 0
    result = json.loads((out / "audit.json").read_text())
    assert result["dataset"]["split"] == "validation" and result["dataset"]["validation_of"] == str(classifier)
    assert result["dataset"]["n"] == int((validation.views == CENTRE).sum())
    assert result["dataset"]["train_nodules"] == int((fit.views == CENTRE).sum())
    test_patients = set(dataset.patient_ids[dataset.splits == "test"].tolist())
    assert result["dataset"]["n"] < int(((dataset.splits == "train") & (dataset.views == CENTRE)).sum())
    assert not test_patients & set(validation.patient_ids.tolist())
    assert (out / "audit.md").read_text().count("Validation split, centre views") == 1
    capsys.readouterr()
    assert main(["audit", "--bundle", str(root / "bundle"), "--dataset", str(root / "dataset"),
                 "--out", str(root / "audit-refused"), "--validation-of", str(classifier),
                 "--held-out-classifier", str(root / "held_out" / "classifier.pt"), "--allow-unknown-bundle"]) == 2
    assert "held out other validation patients" in capsys.readouterr().err
    assert not (root / "audit-refused").exists()
