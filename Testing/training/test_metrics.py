"""Evaluation statistics against hand-computed values and scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from cyclegan_explain_training.metrics import (
    ConfusionCounts,
    bootstrap,
    classifier_metrics,
    confusion_counts,
    flip_rates,
    l1_per_image,
    metrics_from_counts,
    paired_t_test,
    roc_auc,
    ssim_per_image,
)


def test_metrics_from_a_hand_computed_confusion_matrix():
    # TP 40, FP 10, TN 30, FN 20.
    metrics = metrics_from_counts(ConfusionCounts(tp=40, fp=10, tn=30, fn=20))
    expected = {
        "accuracy": 70 / 100,
        "f1": 80 / 110,
        "sensitivity": 40 / 60,
        "specificity": 30 / 40,
        "ppv": 40 / 50,
        "npv": 30 / 50,
        "informedness": 40 / 60 + 30 / 40 - 1,
        "markedness": 40 / 50 + 30 / 50 - 1,
        "mcc": (40 * 30 - 10 * 20) / math.sqrt(50 * 60 * 40 * 50),
    }
    assert metrics == pytest.approx(expected, abs=1e-12)
    # MCC is the geometric mean of informedness and markedness.
    assert metrics["mcc"] == pytest.approx(math.sqrt(metrics["informedness"] * metrics["markedness"]))


def test_confusion_counts_treat_malignant_as_positive():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    predicted = np.array([True, False, True, True, False, False, False])
    assert confusion_counts(labels, predicted) == ConfusionCounts(tp=2, fp=1, tn=3, fn=1)


def test_classifier_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(0.3 * labels + rng.uniform(0, 0.7, 200), 0, 1)
    metrics = classifier_metrics(labels, scores)
    predicted = (scores >= 0.5).astype(int)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(labels, predicted))
    assert metrics["mcc"] == pytest.approx(matthews_corrcoef(labels, predicted))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores))


def test_threshold_is_inclusive():
    metrics = classifier_metrics(np.array([1, 0]), np.array([0.5, 0.4999]))
    assert metrics["accuracy"] == 1.0


def test_zero_denominators_are_nan_not_zero():
    # Nothing predicted malignant: PPV, markedness and MCC are undefined; F1 is 0 (defined).
    metrics = classifier_metrics(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(metrics["ppv"]) and math.isnan(metrics["markedness"]) and math.isnan(metrics["mcc"])
    assert metrics["f1"] == 0.0
    assert metrics["sensitivity"] == 0.0 and metrics["specificity"] == 1.0
    # One class only: sensitivity-side ratios and AUC are undefined.
    one_class = classifier_metrics(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.3]))
    assert math.isnan(one_class["sensitivity"]) and math.isnan(one_class["auc"])
    assert math.isnan(one_class["informedness"])
    assert one_class["specificity"] == pytest.approx(2 / 3)


def test_auc_of_separated_and_uninformative_scores():
    labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert roc_auc(labels, np.array([0.9, 0.8, 0.7, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, np.full(5, 0.5)) == 0.5


def test_auc_counts_pairs_with_ties_as_half_and_is_undefined_for_one_class():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 40).astype(float), rng.integers(0, 2, 40)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([1.0, 2.0])))


def _mean_statistic(values: np.ndarray):
    return lambda indices: {"mean": float(np.mean(values[indices]))}


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (30, 3000):
        values = rng.normal(1.0, 1.0, n)
        estimate = bootstrap(_mean_statistic(values), n, resamples=400, seed=1)["mean"]
        assert estimate.value == pytest.approx(values.mean())
        assert estimate.low < estimate.value < estimate.high
        assert estimate.undefined_resamples == 0
        widths.append(estimate.high - estimate.low)
    # The standard error shrinks with sqrt(n): 100 times the samples, about a tenth of the width.
    assert widths[1] == pytest.approx(widths[0] / 10, rel=0.35)


def test_bootstrap_is_reproducible_with_its_seed():
    values = np.random.default_rng(0).normal(size=50)
    first = bootstrap(_mean_statistic(values), 50, resamples=100, seed=7)["mean"]
    again = bootstrap(_mean_statistic(values), 50, resamples=100, seed=7)["mean"]
    other = bootstrap(_mean_statistic(values), 50, resamples=100, seed=8)["mean"]
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_leaves_out_and_counts_undefined_resamples():
    # One malignant sample in 20: a resample misses it with probability (19/20)^20 = 0.36,
    # and its AUC is then undefined.
    labels = np.zeros(20, int)
    labels[0] = 1
    scores = np.linspace(1.0, 0.0, 20)
    estimate = bootstrap(lambda i: {"auc": roc_auc(labels[i], scores[i])}, 20, resamples=500, seed=0)["auc"]
    assert 0.25 * 500 < estimate.undefined_resamples < 0.47 * 500
    assert estimate.value == 1.0 and estimate.low == 1.0 and estimate.high == 1.0


def test_bootstrap_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap(lambda i: {"n": float(len(i))}, 0)


def test_flip_rates_count_over_the_right_denominators():
    p_x = np.array([0.2, 0.3, 0.4, 0.7, 0.9])  # three benign decisions, two malignant
    p_pos = np.array([0.8, 0.4, 0.6, 0.95, 0.99])  # two of the three benign ones flip
    p_neg = np.array([0.1, 0.1, 0.6, 0.3, 0.6])  # one of the two malignant ones flips
    rates = flip_rates(p_x, p_pos, p_neg)
    assert rates == pytest.approx({
        "malignant_after_pos": 4 / 5,
        "benign_after_neg": 3 / 5,
        "flipped_to_malignant": 2 / 3,
        "flipped_to_benign": 1 / 2,
    })
    all_malignant = flip_rates(np.array([0.6, 0.7]), np.array([0.9, 0.9]), np.array([0.1, 0.9]))
    assert math.isnan(all_malignant["flipped_to_malignant"])


def test_paired_t_test_matches_the_formula():
    before = np.array([0.40, 0.50, 0.30, 0.60, 0.45])
    after = np.array([0.70, 0.65, 0.50, 0.90, 0.60])
    differences = after - before
    expected_t = differences.mean() / (differences.std(ddof=1) / math.sqrt(len(differences)))
    test = paired_t_test(after, before)
    assert test["t"] == pytest.approx(expected_t)
    assert test["df"] == 4
    assert test["mean_difference"] == pytest.approx(differences.mean())
    assert 0 < test["p"] < 0.01
    assert paired_t_test(before, after)["t"] == pytest.approx(-expected_t)


def test_ssim_uses_the_papers_constants_on_images_mapped_to_unit_range():
    flat = np.zeros((1, 32, 32), np.float32)
    assert ssim_per_image(flat, flat)[0] == pytest.approx(1.0, abs=1e-6)
    # Two flat images: SSIM = (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1), c1 = (0.01 * 1)^2, with
    # the means taken after mapping [-1, 1] onto [0, 1] (SSIM's luminance term needs them >= 0).
    c1 = 0.01**2

    def flat_ssim(a: float, b: float) -> float:
        mu_a, mu_b = (a + 1) / 2, (b + 1) / 2
        return (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)

    assert ssim_per_image(flat, flat + 0.1)[0] == pytest.approx(flat_ssim(0.0, 0.1), rel=1e-4)
    assert ssim_per_image(flat - 0.9, flat + 0.6)[0] == pytest.approx(flat_ssim(-0.9, 0.6), rel=1e-3)
    assert ssim_per_image(flat - 0.9, flat + 0.6)[0] < 0.5


def test_ssim_falls_with_noise_and_l1_measures_the_change():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 64, 64)).astype(np.float32)
    slightly = images + rng.normal(0, 0.05, images.shape).astype(np.float32)
    strongly = images + rng.normal(0, 0.5, images.shape).astype(np.float32)
    assert np.all(ssim_per_image(images, slightly) > ssim_per_image(images, strongly))
    assert l1_per_image(images, images + 0.25) == pytest.approx(np.full(3, 0.25))


def test_ssim_is_the_one_the_training_losses_optimise():
    import torch

    from cyclegan_explain_training.losses import DSSIM

    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    changed = np.clip(images + rng.normal(0, 0.3, images.shape), -1, 1).astype(np.float32)
    dssim = DSSIM()
    for index in range(2):
        pair = [torch.from_numpy(stack[index : index + 1, None]) for stack in (images, changed)]
        expected = 1.0 - 2.0 * float(dssim(*pair))
        assert ssim_per_image(images[index : index + 1], changed[index : index + 1])[0] == pytest.approx(expected, abs=1e-5)


def test_soft_tissue_area_measures_a_disc_and_ignores_what_lies_beyond_the_region():
    from cyclegan_explain_training.metrics import mean_inside_masks, soft_tissue_area_mm2

    pixel_mm = 45.0 / 64
    rows, columns = np.mgrid[:64, :64]
    distance_mm = np.hypot(rows - 31.5, columns - 31.5) * pixel_mm
    images = np.full((3, 64, 64), -850.0, dtype=np.float32)
    images[0][distance_mm <= 5.0] = 30.0  # a 10 mm nodule
    images[1][distance_mm <= 10.0] = 30.0  # twice the diameter: four times the area
    images[2][distance_mm > 20.0] = 30.0  # tissue only beyond the 15 mm region
    area = soft_tissue_area_mm2(images, pixel_mm)
    assert area[0] == pytest.approx(np.pi * 5.0**2, rel=0.05)
    assert area[1] / area[0] == pytest.approx(4.0, rel=0.05)
    assert area[2] == 0.0

    masks = np.zeros((3, 64, 64), dtype=np.uint8)
    masks[0][distance_mm <= 5.0] = 1
    masks[1][:, :32] = 1
    images[1][:, :32] = 100.0
    means = mean_inside_masks(images, masks)
    assert means[0] == pytest.approx(30.0) and means[1] == pytest.approx(100.0)
    assert np.isnan(means[2])  # empty mask
