"""A classifier trained against the size confound: size-balanced loss weights, a reader-rating head,
selection by diameter-matched pair concordance, and compare-classifiers (issue 21, item 3)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from CycleGANExplainLib.networks import MalignancyClassifier
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.classifier_comparison import compare_classifiers
from cyclegan_explain_training.cli import main
from cyclegan_explain_training.config import load_config, with_overrides
from cyclegan_explain_training.metrics import matched_pair_concordance, roc_auc
from cyclegan_explain_training.run_log import read_metrics
from cyclegan_explain_training.size_confound import (
    MIN_CLASS_SHARE,
    read_rating_targets,
    size_balanced_weights,
)
from cyclegan_explain_training.train_classifier import CLASSIFIER_METRICS, train_classifier

RATINGS = ["Calcification", "Spiculation", "Texture"]


def test_size_balanced_weights_make_the_label_independent_of_the_diameter_bin():
    rng = np.random.default_rng(0)
    diameters = rng.uniform(3, 30, 2000)
    # Large nodules are mostly suspicious, as in LIDC-IDRI (never below MIN_CLASS_SHARE per bin here).
    labels = (rng.uniform(size=2000) < np.clip(diameters / 30, 0.15, 0.85)).astype(int)
    weights = size_balanced_weights(labels, diameters, bins=4)
    assert weights.mean() == pytest.approx(1.0, abs=1e-6)
    edges = np.quantile(diameters, [0.25, 0.5, 0.75])
    bin_of = np.searchsorted(edges, diameters, side="right")
    for index in range(4):
        members = bin_of == index
        suspicious_weight = weights[members & (labels == 1)].sum() / weights[members].sum()
        assert suspicious_weight == pytest.approx(0.5, abs=1e-6)
    # Unweighted, the label depends strongly on the bin: the weighting is what removed it.
    assert labels[bin_of == 3].mean() - labels[bin_of == 0].mean() > 0.4


def test_a_nearly_one_class_bin_does_not_give_its_few_nodules_a_huge_weight():
    labels = np.array([1] + [0] * 99 + [1] * 50 + [0] * 50)
    diameters = np.array([4.0] * 100 + [20.0] * 100)
    weights = size_balanced_weights(labels, diameters, bins=2)
    ratio = weights[0] / weights[1]  # the lone suspicious small nodule against a small benign one
    assert ratio == pytest.approx((0.5 / MIN_CLASS_SHARE) / (0.5 / 0.99), rel=1e-5)
    with pytest.raises(ValueError, match="size_bins must be at least 1"):
        size_balanced_weights(labels, diameters, bins=0)


def test_reader_ratings_are_read_from_the_real_metadata_and_standardised(lidc_voi_dir):
    with open(lidc_voi_dir / "data" / "MetadatabyNoduleMaxVoting.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:60]
    nodules = [f"{row['patient_id']}_R_{int(row['nodule_id'])}" for row in rows]
    targets = read_rating_targets(lidc_voi_dir, nodules, RATINGS)
    assert targets.shape == (60, 3)
    spiculation = np.array([float(row["Spiculation_value"]) for row in rows])
    np.testing.assert_allclose(targets[:, 1], (spiculation - spiculation.mean()) / spiculation.std(), atol=1e-5)
    calcified = np.array([row["Calcification_value"] != "6" for row in rows], dtype=float)
    assert 0 < calcified.sum() < 60  # both kinds occur among these rows, so the check below can fail
    np.testing.assert_allclose(targets[:, 0], (calcified - calcified.mean()) / calcified.std(), atol=1e-5)
    with pytest.raises(ValueError, match=r"Unknown reader rating\(s\) \['Malignancy'\]"):
        read_rating_targets(lidc_voi_dir, nodules, ["Malignancy"])
    with pytest.raises(ValueError, match="no ratings for 1 nodule.*LIDC-IDRI-9999_R_1"):
        read_rating_targets(lidc_voi_dir, nodules + ["LIDC-IDRI-9999_R_1"], RATINGS)


def _overlapping_sizes(dataset):
    """The disc dataset with recorded diameters that overlap between the classes (the discs' own
    sizes do not), so that validation has diameter-matched pairs."""
    diameters = np.random.default_rng(2).uniform(6, 10, len(dataset)).astype(np.float32)
    return dataclasses.replace(dataset, diameters_mm=diameters)


def _with_ratings(dataset, tmp_path):
    """The disc dataset's nodules renamed like lidc-voi's, and a metadata CSV of ratings for them."""
    nodule_ids = np.array([f"{patient}_R_{index}" for index, patient in enumerate(dataset.patient_ids)])
    folder = tmp_path / "voi"
    (folder / "data").mkdir(parents=True)
    columns = ["patient_id", "nodule_id", *[f"{name}_value" for name in RATINGS]]
    with open(folder / "data" / "MetadatabyNoduleMaxVoting.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for index, patient in enumerate(dataset.patient_ids):
            writer.writerow([patient, index, 6 if index % 3 else 3, 1 + index % 5, 1 + (index * 7) % 5])
    return dataclasses.replace(dataset, nodule_ids=nodule_ids), folder


def _config(**settings):
    return with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 4, "patience": 4,
                                                         "learning_rate": 3e-3, **settings})


def test_training_against_size_keeps_the_best_matched_pair_epoch_and_exports_only_the_classifier(
        make_disc_dataset, tmp_path):
    dataset, voi = _with_ratings(_overlapping_sizes(make_disc_dataset(40, seed=1)), tmp_path)
    config = _config(size_balanced_loss=True, size_bins=2, auxiliary_ratings=RATINGS, auxiliary_weight=0.5,
                     selection="matched_pairs")
    path = train_classifier(dataset, config, tmp_path / "run", device="cpu", progress=False, command="test",
                            ratings_from=voi)
    checkpoint = load_checkpoint(path)
    log = read_metrics(tmp_path / "run" / CLASSIFIER_METRICS)
    scores = [record["validation_score"] for record in log]
    assert checkpoint["epoch"] == int(np.argmax(scores))
    assert checkpoint["validation_score"] == pytest.approx(max(scores))
    for record in log:  # the score is the mean of the worst fill's concordance and AUC (one fill wins both here)
        assert record["validation_score"] == pytest.approx((record["validation_concordance"]
                                                            + record["validation_auc"]) / 2)
    assert checkpoint["loss_weighting"] == "1 / p(label | diameter bin)" and checkpoint["class_weights"] is None
    assert "concordance" in checkpoint["validation_selection"]
    # The rating head is training-only: the checkpoint holds exactly the bundle classifier's weights.
    assert set(checkpoint["state_dict"]) == set(MalignancyClassifier(4).state_dict())


def test_size_confound_settings_are_refused_with_what_is_missing(make_disc_dataset, tmp_path):
    dataset, _ = _with_ratings(make_disc_dataset(40, seed=1), tmp_path)
    with pytest.raises(ValueError, match="needs --ratings-from"):
        train_classifier(dataset, _config(auxiliary_ratings=RATINGS, auxiliary_weight=1.0), tmp_path / "a",
                         device="cpu", progress=False)
    with pytest.raises(ValueError, match="needs classifier.auxiliary_ratings"):
        train_classifier(dataset, _config(auxiliary_weight=1.0), tmp_path / "b", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"classifier.selection must be one of \['auc', 'matched_pairs'\]"):
        train_classifier(dataset, _config(selection="size"), tmp_path / "c", device="cpu", progress=False)
    with pytest.raises(ValueError, match="needs diameter-matched pairs among the validation patients"):
        train_classifier(dataset, _config(selection="matched_pairs"), tmp_path / "d", device="cpu", progress=False)


def test_compare_classifiers_scores_candidates_beside_size_on_validation_patients(make_disc_dataset, tmp_path,
                                                                                   capsys):
    # Enough validation nodules of each class in matched pairs (5) for the figures not to be n/a.
    dataset = _overlapping_sizes(make_disc_dataset(80, seed=1))
    folder = tmp_path / "data"
    dataset.save(folder)
    paths = {}
    for name, settings in {"reference": {"validation_fraction": 0.3},
                           "balanced": {"size_balanced_loss": True, "size_bins": 2, "selection": "matched_pairs",
                                        "seed": 1, "validation_seed": 0, "validation_fraction": 0.3}}.items():
        paths[name] = train_classifier(dataset, _config(**settings), tmp_path / name, device="cpu", progress=False)
    result = compare_classifiers(dataset, paths, resamples=20, seed=0, include_test=False)
    assert "test" not in result  # the test split only when asked for
    figures = result["validation"]["air"]["balanced"]
    checkpoint = load_checkpoint(paths["balanced"])
    assert figures["concordance"]["classifier"]["value"] == pytest.approx(
        checkpoint["validation_concordance_by_fill"]["air"], abs=1e-9)
    assert figures["auc"]["classifier"]["value"] == pytest.approx(checkpoint["validation_auc_by_fill"]["air"], abs=1e-9)
    validation = dataset.subset("train").select(np.isin(dataset.subset("train").patient_ids,
                                                        checkpoint["validation_patients"]))
    assert figures["concordance"]["diameter"]["value"] == pytest.approx(
        matched_pair_concordance(validation.labels, validation.diameters_mm, validation.diameters_mm))
    assert figures["auc"]["diameter"]["value"] == pytest.approx(roc_auc(validation.labels, validation.diameters_mm))
    assert "reference" in figures["classifier_minus"]["concordance"]
    scores = {name: min((result["validation"][fill][name]["concordance"]["classifier"]["value"]
                         + result["validation"][fill][name]["auc"]["classifier"]["value"]) / 2 for fill in ("air", "lung"))
              for name in ("reference", "balanced")}
    assert result["validation_choice"]["scores"] == pytest.approx(scores)
    assert result["validation_choice"]["chosen"] == max(scores, key=scores.get)

    out = tmp_path / "comparison"
    assert main(["compare-classifiers", "--dataset", str(folder), "--reference", str(paths["reference"]),
                 "--candidate", f"balanced={paths['balanced']}", "--test", "--bootstrap", "20",
                 "--out", str(out)]) == 0
    written = json.loads((out / "classifier_comparison.json").read_text())
    assert set(written) >= {"validation", "test"}
    markdown = (out / "classifier_comparison.md").read_text()
    assert "## test, centre views, lung fill" in markdown and "Chosen on validation" in markdown
    assert main(["compare-classifiers", "--dataset", str(folder), "--reference", str(paths["reference"]),
                 "--candidate", str(paths["balanced"]), "--out", str(out)]) == 2
    assert "is not NAME=CLASSIFIER_PT" in capsys.readouterr().err
    # A candidate validated on other patients cannot be compared on "its" validation figures.
    other = train_classifier(dataset, _config(validation_seed=5, validation_fraction=0.3, max_epochs=1),
                             tmp_path / "other", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"\['other'\] were validated on other patients"):
        compare_classifiers(dataset, {"reference": paths["reference"], "other": other}, 20, 0, False)
