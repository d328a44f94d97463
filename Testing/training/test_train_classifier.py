"""Classifier training: patient-level validation split, class weights, augmentation, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from CycleGANExplainLib.intensity import normalise_hu
from cyclegan_explain_training.augment import classifier_augmentation
from cyclegan_explain_training.batched_inference import malignancy_probabilities
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.config import load_config, with_overrides
from cyclegan_explain_training.run_log import read_metrics
from cyclegan_explain_training.train_classifier import (
    CLASSIFIER_METRICS,
    class_weights,
    load_classifier,
    images_in_context,
    patient_validation_mask,
    train_classifier,
)


def test_validation_split_is_by_patient_stratified_and_seeded():
    patients = np.repeat([f"LIDC-IDRI-{number:04d}" for number in range(40)], 2)
    labels = np.repeat(np.arange(40) % 4 == 0, 2).astype(int)  # 10 malignant patients, 30 benign
    mask = patient_validation_mask(patients, labels, 0.2, seed=5)
    held_out = set(patients[mask])
    assert held_out.isdisjoint(patients[~mask])  # no patient on both sides
    assert set(labels[mask]) == {0, 1}
    assert len(held_out) == 2 + 6  # 20 % of each label group
    np.testing.assert_array_equal(mask, patient_validation_mask(patients, labels, 0.2, seed=5))
    assert not np.array_equal(mask, patient_validation_mask(patients, labels, 0.2, seed=6))


def test_class_weights_are_inverse_frequencies():
    weights = class_weights(np.array([0] * 30 + [1] * 10))
    torch.testing.assert_close(weights, torch.tensor([40 / 60, 40 / 20]))
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.zeros(5, dtype=int))


def test_augmentation_is_seeded_and_keeps_the_patch_plausible():
    image = torch.from_numpy(normalise_hu(np.full((1, 64, 64), -850.0)))
    image[:, 20:44, 20:44] = 0.2
    first = classifier_augmentation(seed=1)(image)
    transform = classifier_augmentation(seed=1)
    outputs = [torch.as_tensor(transform(image)) for _ in range(8)]
    torch.testing.assert_close(torch.as_tensor(first), outputs[0])
    assert any(not torch.equal(output, image) for output in outputs)
    for output in outputs:
        assert output.shape == image.shape
        assert -1.1 <= float(output.min()) and float(output.max()) <= 0.3  # small shifts only


def test_training_learns_disc_size_and_keeps_the_best_model(make_disc_dataset, tmp_path):
    dataset = make_disc_dataset(40, seed=1)
    config = with_overrides(load_config(), "classifier",
                            {"width": 4, "batch_size": 8, "max_epochs": 12, "patience": 2, "learning_rate": 3e-3})
    path = train_classifier(dataset, config, tmp_path, device="cpu", progress=False, command="test")
    checkpoint = load_checkpoint(path)
    log = read_metrics(tmp_path / CLASSIFIER_METRICS)
    aucs = [record["validation_auc"] for record in log]
    assert checkpoint["epoch"] == int(np.argmax(aucs))  # the first epoch with the best AUC
    assert checkpoint["validation_auc"] == max(aucs) >= 0.9
    assert checkpoint["epochs_run"] == len(log) <= checkpoint["epoch"] + 1 + 2  # stopped by patience
    assert checkpoint["hu_window"] == list(config.hu_window)
    # The saved weights are the best epoch's, not the last one's: they reproduce its validation AUC.
    train = dataset.subset("train")
    held_out = patient_validation_mask(train.patient_ids, train.labels, config.classifier.validation_fraction,
                                       config.classifier.seed)
    # Validation scores each fill of the surround and keeps the worst (here all pixels are image,
    # so every fill gives the same patches).
    aucs_by_fill = {}
    for fill in ("air", "lung"):
        images = images_in_context(train, config.hu_window, fill)[held_out]
        probabilities = malignancy_probabilities(load_classifier(checkpoint), images, "cpu")
        aucs_by_fill[fill] = float(compute_roc_auc(probabilities, torch.from_numpy(train.labels[held_out])))
    assert aucs_by_fill == pytest.approx(checkpoint["validation_auc_by_fill"], abs=1e-9)
    assert min(aucs_by_fill.values()) == pytest.approx(checkpoint["validation_auc"], abs=1e-9)

    # randomise-classifier keeps everything but the weights, and so changes the decisions. (Its AUC
    # is no test: on discs that differ only in size even random features rank by size.)
    from cyclegan_explain_training.cli import main

    assert main(["randomise-classifier", "--classifier", str(path), "--out", str(tmp_path / "random"), "--seed", "3"]) == 0
    randomised = load_checkpoint(tmp_path / "random" / "classifier.pt")
    assert (randomised["width"], randomised["hu_window"], randomised["patches_sha256"]) == (
        checkpoint["width"], checkpoint["hu_window"], checkpoint["patches_sha256"])
    assert randomised["randomised_from_seed"] == 3 and randomised["validation_auc"] is None
    assert "randomise-classifier" in randomised["command"]
    for name, value in randomised["state_dict"].items():
        if value.is_floating_point() and "weight" in name and value.dim() > 1:
            assert not torch.allclose(value, checkpoint["state_dict"][name])
    random_probabilities = malignancy_probabilities(load_classifier(randomised), images, "cpu")
    assert float((random_probabilities - probabilities).abs().max()) > 0.1
    assert main(["randomise-classifier", "--classifier", str(tmp_path / "random" / "classifier_metrics.jsonl"),
                 "--out", str(tmp_path / "again")]) == 2


def test_paper_config_file_is_the_defaults_and_unknown_keys_are_named(tmp_path):
    from pathlib import Path

    from cyclegan_explain_training.config import TrainingConfig, config_from_dict

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    assert load_config(configs / "paper.json") == TrainingConfig()
    tiny = load_config(configs / "tiny.json")
    assert (tiny.classifier.width, tiny.cyclegan.width, tiny.cyclegan.batch_size) == (4, 4, 4)
    assert tiny.cyclegan.learning_rate == TrainingConfig().cyclegan.learning_rate  # unset keys keep defaults
    with pytest.raises(ValueError, match="Unknown cyclegan setting.*'widht'"):
        config_from_dict({"cyclegan": {"widht": 8}})


def test_training_that_cannot_choose_a_model_says_why(make_disc_dataset, tmp_path, monkeypatch):
    import cyclegan_explain_training.train_classifier as training

    dataset = make_disc_dataset(40, seed=1)
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 0})
    with pytest.raises(ValueError, match="max_epochs must be at least 1"):
        train_classifier(dataset, config, tmp_path, device="cpu", progress=False)
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 2, "patience": 5})
    nan = float("nan")  # as diverged outputs give
    monkeypatch.setattr(training, "matched_pair_selection_score",
                        lambda *args: {"auc": nan, "concordance": nan, "score": nan})
    with pytest.raises(RuntimeError, match="No epoch of 2 gave a finite validation AUC"):
        train_classifier(dataset, config, tmp_path, device="cpu", progress=False)
    assert not (tmp_path / training.CLASSIFIER_CHECKPOINT).exists()
