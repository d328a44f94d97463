"""Calibration of the classifier's malignancy probability: reliability bins, ECE, temperature scaling.

Binary form throughout: the predicted probability of malignancy against the observed fraction of
malignant nodules, in ``CALIBRATION_BINS`` equal-width bins of the probability. Temperature
scaling (Guo et al. 2017) divides the classifier's logit margin (malignant minus benign logit)
by one scalar T fitted by maximum likelihood; it leaves the ranking, hence the AUC, unchanged.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

CALIBRATION_BINS = 10
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _bin_of(probabilities: np.ndarray, bins: int) -> np.ndarray:
    # Equal-width bins on [0, 1]; a probability of exactly 1 belongs to the last bin.
    return np.minimum((np.asarray(probabilities, dtype=np.float64) * bins).astype(int), bins - 1)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> Dict[str, list]:
    """Per bin: count, mean predicted probability and observed malignant fraction (None when empty)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    index = _bin_of(probabilities, bins)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins)
    observed = np.bincount(index, weights=np.asarray(labels, dtype=np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted, fraction_malignant = predicted / counts, observed / counts
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "lower_edge": edges[:-1].tolist(),
        "upper_edge": edges[1:].tolist(),
        "count": counts.astype(int).tolist(),
        "mean_predicted": [float(v) if c else None for v, c in zip(mean_predicted, counts)],
        "fraction_malignant": [float(v) if c else None for v, c in zip(fraction_malignant, counts)],
    }


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean over bins of |observed malignant fraction - mean predicted|."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return float("nan")
    index = _bin_of(probabilities, bins)
    gap = np.bincount(index, weights=np.asarray(labels, dtype=np.float64) - probabilities, minlength=bins)
    return float(np.abs(gap).sum() / len(probabilities))


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The malignancy probability of a logit margin (two-class softmax)."""
    from scipy.special import expit

    return expit(np.asarray(values, dtype=np.float64))


def fit_temperature(labels: np.ndarray, logit_margins: np.ndarray) -> float:
    """The T in TEMPERATURE_BOUNDS that minimises the negative log-likelihood of sigmoid(margin / T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_expit

    labels = np.asarray(labels, dtype=np.float64)
    margins = np.asarray(logit_margins, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError("Temperature scaling needs both classes among the calibration samples.")
    signed = np.where(labels == 1, margins, -margins)  # log p(true class) = log sigmoid(signed / T)

    def negative_log_likelihood(log_temperature: float) -> float:
        return float(-log_expit(signed / np.exp(log_temperature)).sum())

    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))
