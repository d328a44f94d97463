"""Per-patch quality measures of attribution maps, the same for every method (issue 6).

Every measure takes maps [N, H, W] and returns one value per patch (NaN where undefined), so the
comparison can bootstrap and pair them. Where a measure needs a magnitude it ranks and sums |map|:
CycleGAN-AM and most baselines are signed (red malignant, blue benign), and evidence in either
direction is evidence the classifier used.

Quantus 0.6 computes relevance mass accuracy, relevance rank accuracy, sparseness (Gini) and
complexity (entropy): its batch formulas applied to |map|, with no further normalisation. The pointing game, the deletion/insertion curves
and the rank correlation of the randomisation test are computed here; their formulas are in the
docstrings and in ``DEFINITIONS`` (copied into the report).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy.integrate import trapezoid
from scipy.stats import rankdata

AIR = -1.0  # -1000 HU and below, in normalised units: what deleted pixels become
PERTURBATION_STEPS = 16

# probability(images [M, H, W], normalised) -> class probabilities [M, 2]
ClassProbabilities = Callable[[np.ndarray], np.ndarray]

DEFINITIONS: Dict[str, str] = {
    "relevance_mass_accuracy": (
        "Quantus 0.6 RelevanceMassAccuracy on |map| (no normalisation): sum of |map| inside the nodule mask / "
        "sum of |map| over the patch (Arras et al. 2022). Uniform map: the mask's area fraction. NaN for an all-zero map."),
    "relevance_rank_accuracy": (
        "Quantus 0.6 RelevanceRankAccuracy on |map|: with K = mask pixels, the fraction of the K highest-|map| "
        "pixels that lie inside the mask (Arras et al. 2022)."),
    "pointing_game": (
        "Computed here (Zhang et al. 2018): 1 when every pixel attaining max |map| lies inside the mask and "
        "that maximum is > 0, else 0. Quantus 0.6 PointingGame counts a hit when ANY tied maximum is inside "
        "(so an all-zero map scores a hit) and cannot store its NaN for empty masks in its boolean result."),
    "deletion_auc": (
        "Computed here (Petsiuk et al. 2018, RISE): pixels ranked by |map| (descending, ties by position); "
        f"after k/{PERTURBATION_STEPS} of them (k = 0..{PERTURBATION_STEPS}) are replaced by air (normalised -1), "
        "the classifier's probability of the class it predicted on the unperturbed x; AUC = trapezoidal "
        "area over the deleted fraction [0, 1]. Lower = more faithful."),
    "insertion_auc": (
        "Computed here (Petsiuk et al. 2018): from an all-air patch, the highest-|map| pixels are restored "
        f"to x's values in {PERTURBATION_STEPS} equal steps; same probability and area as deletion. "
        "Higher = more faithful."),
    "sparseness_gini": (
        "Quantus 0.6 Sparseness on |map|: Gini index of the sorted magnitudes (+1e-7), "
        "sum((2i - n - 1) a_i) / (n sum a_i) (Chalasani et al. 2020). 1 = one pixel, 0 = uniform."),
    "complexity_entropy": (
        "Quantus 0.6 Complexity on |map|: Shannon entropy (nats) of |map| / sum |map| (Bhatt et al. 2020). "
        "ln(4096) = 8.32 for a uniform 64x64 map; lower = more concentrated."),
    "randomisation_spearman": (
        "Model-parameter randomisation test (Adebayo et al. 2018), full randomisation: Spearman rank "
        "correlation (average ranks for ties) between |map| on the trained classifier and |map| on a "
        "classifier of the same architecture with all weights freshly initialised "
        "(train_classifier.randomised_classifier_checkpoint). Near 0 passes; near 1 means the map "
        "does not depend on what the classifier learned. NaN when either map is constant."),
}


def magnitude(maps: np.ndarray) -> np.ndarray:
    """|map| as float64 [N, H, W]: the quantity every measure here ranks or sums."""
    return np.abs(np.asarray(maps, dtype=np.float64))


def _quantus_scores(metric_name: str, maps: np.ndarray, masks: Optional[np.ndarray] = None) -> np.ndarray:
    """A Quantus 0.6 metric's batch formula on |map|.

    evaluate_batch is the formula itself; the metric's __call__ adds input assertions that reject a
    whole batch when all its maps are uniform (all-zero Grad-CAM maps, say) instead of scoring them.
    """
    import quantus

    metric = getattr(quantus, metric_name)(abs=True, normalise=False, disable_warnings=True,
                                           display_progressbar=False)
    a_batch = magnitude(maps)[:, None]  # a fresh array: Sparseness and Complexity modify it in place
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero map is NaN, not a warning
        scores = metric.evaluate_batch(
            x_batch=np.zeros_like(a_batch, dtype=np.float32),  # unused by these formulas
            a_batch=a_batch,
            s_batch=None if masks is None else np.asarray(masks, dtype=np.uint8)[:, None],
        )
    return np.asarray(scores, dtype=np.float64)


def relevance_mass_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return _quantus_scores("RelevanceMassAccuracy", maps, masks)


def relevance_rank_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return _quantus_scores("RelevanceRankAccuracy", maps, masks)


def sparseness_gini(maps: np.ndarray) -> np.ndarray:
    return _quantus_scores("Sparseness", maps)


def complexity_entropy(maps: np.ndarray) -> np.ndarray:
    return _quantus_scores("Complexity", maps)


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """1.0 where the strongest |map| points only into the mask, 0.0 otherwise, NaN for an empty mask."""
    values = magnitude(maps).reshape(len(maps), -1)
    inside = np.asarray(masks).astype(bool).reshape(len(maps), -1)
    peak = values.max(axis=1, keepdims=True)
    at_peak = values == peak
    hit = ~np.any(at_peak & ~inside, axis=1) & (peak[:, 0] > 0)
    return np.where(inside.any(axis=1), hit.astype(np.float64), np.nan)


def perturbation_curves(
    probabilities: ClassProbabilities,
    x: np.ndarray,
    maps: np.ndarray,
    steps: int = PERTURBATION_STEPS,
    chunk: int = 16,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deletion and insertion curves [N, steps + 1] and the classes they follow [N].

    The class is the one ``probabilities`` predicts on each unperturbed x, so a map is judged on
    the decision it is meant to explain, benign or malignant alike.
    """
    x = np.asarray(x, dtype=np.float32)
    n, pixels = len(x), x[0].size
    flat_x = x.reshape(n, pixels)
    classes = np.argmax(probabilities(x), axis=1)
    ranks = np.empty((n, pixels), dtype=np.int64)
    order = np.argsort(-magnitude(maps).reshape(n, pixels), axis=1, kind="stable")
    np.put_along_axis(ranks, order, np.arange(pixels)[None].repeat(n, axis=0), axis=1)
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)
    deletion, insertion = np.empty((n, steps + 1)), np.empty((n, steps + 1))
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        chosen = ranks[rows, None, :] < counts[None, :, None]  # [chunk, steps + 1, pixels]
        original = flat_x[rows, None, :]
        images = np.concatenate([np.where(chosen, AIR, original), np.where(chosen, original, AIR)], axis=0)
        images = images.reshape(-1, *x.shape[1:]).astype(np.float32)
        p = probabilities(images).reshape(2, -1, steps + 1, 2)
        target = classes[rows][:, None, None]
        deletion[rows] = np.take_along_axis(p[0], target, axis=2)[..., 0]
        insertion[rows] = np.take_along_axis(p[1], target, axis=2)[..., 0]
    return deletion, insertion, classes


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each curve [N, steps + 1] over the perturbed fraction [0, 1]."""
    return trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), axis=1)


def rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Per patch: Spearman correlation of |map_a| and |map_b| (NaN when either is constant)."""
    n = len(maps_a)
    ranks_a = rankdata(magnitude(maps_a).reshape(n, -1), axis=1)
    ranks_b = rankdata(magnitude(maps_b).reshape(n, -1), axis=1)
    ranks_a -= ranks_a.mean(axis=1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ranks_a * ranks_b).sum(axis=1) / denominator, np.nan)
