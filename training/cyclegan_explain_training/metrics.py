"""Evaluation statistics: the paper's Table 1 metrics, domain transfer, image similarity, bootstrap.

Undefined values are NaN, never a silent 0: a ratio whose denominator is zero (no predicted
positives for PPV, one class only for AUC, no nodule on the other side of the threshold for a
flip rate) is NaN. Bootstrap confidence intervals are percentile intervals over the resamples in
which the statistic is defined; how many resamples were undefined is reported beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .losses import SSIM_DATA_RANGE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, structural_similarity

DECISION_THRESHOLD = 0.5
THRESHOLDED_METRICS = (
    "accuracy", "f1", "sensitivity", "specificity", "ppv", "npv", "informedness", "markedness", "mcc",
)
TABLE1_METRICS = THRESHOLDED_METRICS + ("auc",)

# SSIM is the one the training losses optimise (losses.structural_similarity, the paper's Eq. 1):
# images mapped from [-1, 1] onto [0, 1] (data range 1), k1 = .01, k2 = .03, MONAI's Gaussian
# window (11 px, sigma 1.5); the SSIM_* settings are re-exported for the evaluation report.


@dataclass(frozen=True)
class ConfusionCounts:
    tp: int
    fp: int
    tn: int
    fn: int


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is zero (the ratio is undefined)."""
    return float(numerator) / float(denominator) if denominator != 0 else float("nan")


def confusion_counts(labels: np.ndarray, predicted_malignant: np.ndarray) -> ConfusionCounts:
    """Counts with malignant (label 1) as the positive class."""
    truth = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted_malignant).astype(bool)
    return ConfusionCounts(
        tp=int(np.sum(truth & predicted)),
        fp=int(np.sum(~truth & predicted)),
        tn=int(np.sum(~truth & ~predicted)),
        fn=int(np.sum(truth & ~predicted)),
    )


def metrics_from_counts(counts: ConfusionCounts) -> Dict[str, float]:
    """The thresholded metrics of the paper's Table 1 from a confusion matrix."""
    tp, fp, tn, fn = counts.tp, counts.fp, counts.tn, counts.fn
    sensitivity = ratio(tp, tp + fn)
    specificity = ratio(tn, tn + fp)
    ppv = ratio(tp, tp + fp)
    npv = ratio(tn, tn + fn)
    mcc_denominator = float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)
    return {
        "accuracy": ratio(tp + tn, tp + fp + tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": ppv,
        "npv": npv,
        "informedness": sensitivity + specificity - 1.0,  # NaN propagates
        "markedness": ppv + npv - 1.0,
        "mcc": ratio(float(tp) * tn - float(fp) * fn, np.sqrt(mcc_denominator)),
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> Union[float, np.ndarray]:
    """Area under the ROC curve of scores (higher = malignant); NaN when only one class is present.

    ``scores`` is [N] (returns a float) or [N, K] (returns the K columns' AUCs at once, which is
    what makes thousands of bootstrap resamples cheap). The Mann-Whitney form with mid-ranks:
    a tie between a malignant and a benign score counts one half, as in scikit-learn.
    """
    from scipy.stats import rankdata

    positive = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    columns = scores if scores.ndim == 2 else scores[:, None]
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        auc = np.full(columns.shape[1], np.nan)
    else:
        ranks = rankdata(columns, axis=0)
        auc = (ranks[positive].sum(axis=0) - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)
    return auc if scores.ndim == 2 else float(auc[0])


# Diameter-matched pairs: a rated-suspicious and a not-suspicious nodule whose diameters differ by
# at most this much. Within such pairs the diameter ranks little better than chance, so a score
# that still ranks them is seeing more than size (issue 21, item 3).
MATCH_TOLERANCE_MM = 1.0
# Fewer nodules than this in a stratum's smaller class (or in a rate's denominator): the figure is
# n/a, not a number resting on a handful of nodules.
MIN_STRATUM = 5


def matched_pairs(labels: np.ndarray, diameters_mm: np.ndarray,
                  tolerance_mm: float = MATCH_TOLERANCE_MM) -> np.ndarray:
    """[P, Q] True where the p-th nodule labelled 1 and the q-th labelled 0 (in index order) have
    diameters within ``tolerance_mm`` of each other: every such pair counts, not a 1:1 matching."""
    positive = np.asarray(labels).astype(bool)
    diameters = np.asarray(diameters_mm, dtype=np.float64)
    # The small slack keeps a difference of exactly the tolerance (stored as float32) inside.
    return np.abs(diameters[positive][:, None] - diameters[~positive][None, :]) <= tolerance_mm + 1e-6


def matched_pair_concordance(labels: np.ndarray, diameters_mm: np.ndarray, scores: np.ndarray,
                             tolerance_mm: float = MATCH_TOLERANCE_MM) -> Union[float, np.ndarray]:
    """Of all diameter-matched pairs (``matched_pairs``), the share in which the nodule labelled 1
    has the higher score; a tie counts one half (as in roc_auc, which is this over all pairs).
    ``scores`` [N] gives a float, [N, K] the K columns' shares; NaN where there is no pair."""
    positive = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    columns = scores if scores.ndim == 2 else scores[:, None]
    pairs = matched_pairs(labels, diameters_mm, tolerance_mm)
    count = int(pairs.sum())
    if count == 0:
        share = np.full(columns.shape[1], np.nan)
    else:
        first, second = np.nonzero(pairs)
        higher, lower = columns[positive][first], columns[~positive][second]
        share = ((higher > lower) + 0.5 * (higher == lower)).sum(axis=0) / count
    return share if scores.ndim == 2 else float(share[0])


def classifier_metrics(
    labels: np.ndarray, malignancy: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> Dict[str, float]:
    """Table 1: thresholded metrics at ``malignancy >= threshold`` and the AUC of the probability."""
    malignancy = np.asarray(malignancy)
    metrics = metrics_from_counts(confusion_counts(labels, malignancy >= threshold))
    metrics["auc"] = roc_auc(labels, malignancy)
    return metrics


def flip_indicators(
    p_x: np.ndarray, p_pos: np.ndarray, p_neg: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> Dict[str, np.ndarray]:
    """Per patch, the events that flip_rates averages: 1.0 or 0.0, NaN where the patch is not in
    the rate's denominator (so a NaN-ignoring mean over any subset is that subset's rate)."""
    malignant_x = np.asarray(p_x) >= threshold
    malignant_pos = (np.asarray(p_pos) >= threshold).astype(np.float64)
    benign_neg = (np.asarray(p_neg) < threshold).astype(np.float64)
    return {
        "malignant_after_pos": malignant_pos,
        "benign_after_neg": benign_neg,
        "flipped_to_malignant": np.where(malignant_x, np.nan, malignant_pos),
        "flipped_to_benign": np.where(malignant_x, benign_neg, np.nan),
    }


def flip_rates(
    p_x: np.ndarray, p_pos: np.ndarray, p_neg: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> Dict[str, float]:
    """How often the generators move the classifier's decision where they should.

    ``malignant_after_pos`` / ``benign_after_neg`` are over all patches; ``flipped_to_malignant``
    is over the patches the classifier called benign on x, ``flipped_to_benign`` over those it
    called malignant (NaN when there are none).
    """
    return {name: nan_mean(events) for name, events in flip_indicators(p_x, p_pos, p_neg, threshold).items()}


def nan_mean(values: np.ndarray, axis: Optional[int] = None) -> Union[float, np.ndarray]:
    """Mean over the defined (non-NaN) values; NaN, without a warning, where none is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    counts = defined.sum(axis=axis)
    sums = np.where(defined, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean


def paired_t_test(after: np.ndarray, before: np.ndarray) -> Dict[str, float]:
    """Two-sided paired t-test of after - before (positive t: after is higher)."""
    from scipy.stats import ttest_rel

    after, before = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    result = ttest_rel(after, before)
    return {
        "mean_difference": float(np.mean(after - before)),
        "t": float(result.statistic),
        "df": int(len(after) - 1),
        "p": float(result.pvalue),
    }


def ssim_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM of each pair of [-1, 1] images in stacks [N, H, W] (losses.structural_similarity)."""
    import torch

    first = torch.as_tensor(np.asarray(a, dtype=np.float32))[:, None]
    second = torch.as_tensor(np.asarray(b, dtype=np.float32))[:, None]
    return structural_similarity(first, second).numpy().astype(np.float64)


def ssim_maps(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, int]:
    """The local SSIM of ssim_per_image before it is averaged: maps [N, H - w + 1, W - w + 1] and
    the border w // 2 that MONAI's valid convolution leaves off (map pixel (i, j) is the window
    centred on image pixel (i + border, j + border)). Same mapping to [0, 1] and constants."""
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    first = (torch.as_tensor(np.asarray(a, dtype=np.float32))[:, None] + 1.0) / 2.0
    second = (torch.as_tensor(np.asarray(b, dtype=np.float32))[:, None] + 1.0) / 2.0
    maps, _ = compute_ssim_and_cs(first, second, spatial_dims=2, kernel_size=[SSIM_WINDOW] * 2,
                                  kernel_sigma=[SSIM_SIGMA] * 2, data_range=SSIM_DATA_RANGE,
                                  kernel_type="gaussian", k1=SSIM_K1, k2=SSIM_K2)
    return maps[:, 0].numpy().astype(np.float64), SSIM_WINDOW // 2


# scikit-image's SSIM as its users know it: the default 7 x 7 uniform window with sample
# covariance, on [-1, 1] images with data range 2 (the range the images can span).
SKIMAGE_SSIM_DATA_RANGE = 2.0
SKIMAGE_SSIM_BORDER = (7 - 1) // 2  # scikit-image averages its map without this many pixels at each edge


def skimage_ssim_maps(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, int]:
    """scikit-image's local SSIM of pairs of [-1, 1] images [N, H, W], cropped to the pixels its
    mean averages, and that border (as ssim_maps returns them)."""
    from skimage.metrics import structural_similarity as skimage_ssim

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # channel_axis=0: each image of the stack is one channel, computed on its own.
    _, maps = skimage_ssim(a, b, data_range=SKIMAGE_SSIM_DATA_RANGE, channel_axis=0, full=True)
    border = SKIMAGE_SSIM_BORDER
    return np.asarray(maps, dtype=np.float64)[:, border:-border, border:-border], border


def mean_of_map(maps: np.ndarray, border: int, regions: Optional[np.ndarray] = None) -> np.ndarray:
    """Per image, the mean of a local SSIM map (from ssim_maps or skimage_ssim_maps), over the
    whole map or only where ``regions`` [N, H, W] (on the image grid) is True; NaN where the
    region leaves no map pixel."""
    values = maps.reshape(len(maps), -1)
    if regions is not None:
        inside = np.asarray(regions, bool)[:, border:border + maps.shape[1], border:border + maps.shape[2]]
        values = np.where(inside, maps, np.nan).reshape(len(maps), -1)
    return nan_mean(values, axis=1)


def l1_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each pair of images, in normalised units."""
    difference = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return difference.reshape(len(difference), -1).mean(axis=1)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile bootstrap interval."""

    value: float
    low: float
    high: float
    undefined_resamples: int

    def as_dict(self) -> Dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high,
                "undefined_resamples": self.undefined_resamples}


def bootstrap(
    statistics: Callable[[np.ndarray], Mapping[str, float]],
    n_samples: int,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Dict[str, Estimate]:
    """Percentile bootstrap over samples, all statistics on the same resamples.

    ``statistics(indices)`` returns named values computed on the samples at ``indices`` (with
    repeats); it is called once on every sample for the point estimates and once per resample.
    Sharing resamples keeps paired quantities (classifier vs diameter AUC) paired.
    """
    if n_samples < 1:
        raise ValueError("Cannot bootstrap an empty sample.")
    if resamples < 1:
        raise ValueError(f"Need at least one bootstrap resample, got {resamples}.")
    point = dict(statistics(np.arange(n_samples)))
    rng = np.random.default_rng(seed)
    values = np.full((resamples, len(point)), np.nan)
    for row in range(resamples):
        resampled = statistics(rng.integers(0, n_samples, size=n_samples))
        values[row] = [resampled[name] for name in point]
    tail = (1.0 - confidence) / 2.0 * 100.0
    estimates = {}
    for column, name in enumerate(point):
        defined = values[:, column][np.isfinite(values[:, column])]
        low, high = np.percentile(defined, [tail, 100.0 - tail]) if len(defined) else (np.nan, np.nan)
        estimates[name] = Estimate(float(point[name]), float(low), float(high), int(resamples - len(defined)))
    return estimates


def patient_bootstrap(
    statistics: Callable[[np.ndarray], Mapping[str, float]],
    patient_ids: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Dict[str, Estimate]:
    """``bootstrap`` with patients as the resampled unit: each resample draws patients with
    replacement and passes every nodule of each drawn patient to ``statistics`` (nodule indices,
    with repeats). Nodules of one patient are not independent, so this interval is the honest one
    where a patient has several."""
    _, patient_of = np.unique(np.asarray(patient_ids), return_inverse=True)
    members = [np.flatnonzero(patient_of == patient) for patient in range(int(patient_of.max()) + 1)] \
        if len(patient_of) else []

    def over_patients(drawn: np.ndarray) -> Mapping[str, float]:
        return statistics(np.concatenate([members[patient] for patient in drawn]))

    return bootstrap(over_patients, len(members), resamples, seed, confidence)


# What the generators change: a nodule's size or its density. Soft tissue is what the HU window
# maps above -400 HU (phantom nodules are filled at about 30 HU, parenchyma near -850 HU).
SOFT_TISSUE_HU = -400.0
NODULE_REGION_RADIUS_MM = 15.0  # around the patch centre: the nodule and its margin, few vessels


def soft_tissue_area_mm2(images_hu: np.ndarray, pixel_mm: float, radius_mm: float = NODULE_REGION_RADIUS_MM,
                         threshold_hu: float = SOFT_TISSUE_HU) -> np.ndarray:
    """Per image [N, H, W]: the area (mm²) of soft tissue within ``radius_mm`` of the centre.

    A generator that makes a nodule look malignant by growing it raises this area; one that
    changes its margin or texture barely moves it.
    """
    size = images_hu.shape[-1]
    rows, columns = np.mgrid[:size, :size]
    centre = (size - 1) / 2.0
    region = np.hypot(rows - centre, columns - centre) * pixel_mm <= radius_mm
    return (images_hu >= threshold_hu)[:, region].sum(axis=1) * pixel_mm**2


def mean_inside_masks(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the mean value inside its mask (NaN for an empty mask)."""
    inside = masks.astype(bool)
    counts = inside.sum(axis=(1, 2))
    sums = np.where(inside, images, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
