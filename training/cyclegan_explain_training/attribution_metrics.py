"""Per-patch quality measures of attribution maps, the same for every method.

Every measure takes maps [N, H, W] and returns one value per patch (NaN where undefined), so the
comparison can bootstrap and pair them. Where a measure needs a magnitude it ranks and sums |map|:
CycleGAN-AM and most baselines are signed (positive = towards malignant), two baselines and the
controls are unsigned, and evidence in either direction is evidence the classifier used.

Quantus 0.6 computes relevance mass accuracy, relevance rank accuracy, sparseness (Gini) and
complexity (entropy): its batch formulas applied to |map|, with no further normalisation. The pointing
game, the deletion/insertion curves and the rank correlation of the randomisation test are computed
here; their formulas are in the docstrings and in ``DEFINITIONS`` (copied into the report).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid
from scipy.stats import rankdata

from .metrics import DECISION_THRESHOLD
from .nodule_regions import PIXEL_MM, within_mm_of_masks

AIR = -1.0  # -1000 HU and below, in normalised units
PERTURBATION_STEPS = 10
"""Deleted (inserted) fractions 0, 0.1, ..., 1: 11 points per curve, 9 of them perturbed images per
patch, method and reference (the ends are shared). Three references x eleven maps x two curves make
this the comparison's largest cost after occlusion; 10 steps keep a full test-split run in budget."""
MASK_DILATIONS_MM = (0.0, 2.0, 5.0)
GROUPS = ("all", "predicted_malignant", "predicted_benign")

# malignancy(images [M, H, W], normalised) -> p(malignant) [M]
Malignancy = Callable[[np.ndarray], np.ndarray]

DEFINITIONS: Dict[str, str] = {
    "relevance_mass": (
        "Quantus 0.6 RelevanceMassAccuracy on |map| (no normalisation): sum of |map| inside the region / sum of "
        "|map| over the whole patch (Arras et al. 2022). Region = pixels within d mm of the nodule mask "
        "(nodule_regions.within_mm_of_masks; d = 0 is the mask) AND valid (real image): a dilation reaching past "
        "the sub-volume does not count filled pixels as nodule surroundings. The denominator is the whole patch, "
        "fill included: the classifier sees the fill, and relevance put there is relevance not on the nodule. "
        "A uniform map scores the region's area fraction. NaN for an all-zero map."),
    "relevance_rank": (
        "Quantus 0.6 RelevanceRankAccuracy on |map|: with K = region pixels (same region as the mass), the "
        "fraction of the K highest-|map| pixels of the whole patch that lie inside the region (Arras et al. 2022)."),
    "pointing_game": (
        "Computed here (Zhang et al. 2018): 1 when every pixel of the whole patch attaining max |map| lies inside "
        "the region (same region as the mass) and that maximum is > 0, else 0. Quantus 0.6 PointingGame counts a "
        "hit when ANY tied maximum is inside (so an all-zero map scores a hit)."),
    "surround_share": (
        "Computed here: sum of |map| over the filled (not valid) pixels / sum of |map| over the patch: how much of "
        "the map lies on the surround the comparison put beyond the sub-volume. 0 where the whole patch is image."),
    "deletion_auc": (
        "Computed here (Petsiuk et al. 2018, RISE): pixels ranked by |map| (descending, ties by position); "
        f"after a fraction k/{PERTURBATION_STEPS} of them (k = 0..{PERTURBATION_STEPS}) is replaced by the "
        "reference image's pixels, the classifier scores the patch; AUC = trapezoidal area under the score over "
        "the deleted fraction [0, 1]. Lower = the top-ranked pixels carry the decision."),
    "insertion_auc": (
        "Computed here (Petsiuk et al. 2018): start from the reference image and restore the highest-|map| pixels "
        f"of x in {PERTURBATION_STEPS} equal steps; same score and area as deletion. Higher = the top-ranked "
        "pixels carry the decision."),
    "sparseness_gini": (
        "Quantus 0.6 Sparseness on |map|: Gini index of the sorted magnitudes (+1e-7), "
        "sum((2i - n - 1) a_i) / (n sum a_i) (Chalasani et al. 2020). 1 = one pixel, 0 = uniform."),
    "complexity_entropy": (
        "Quantus 0.6 Complexity on |map|: Shannon entropy (nats) of |map| / sum |map| (Bhatt et al. 2020). "
        "ln(4096) = 8.32 for a uniform 64x64 map; lower = more concentrated."),
    "randomisation_spearman": (
        "Model-parameter randomisation test (Adebayo et al. 2018) with FULL re-initialisation (every layer at "
        "once, not cascading): per patch, Spearman rank correlation (average ranks for ties) between |map| "
        "explaining the trained classifier and |map| explaining the randomised one. Near 0 passes; near 1 means "
        "the map does not depend on what the classifier learned. NaN when either map is constant."),
}

SCORE_CONVENTION = (
    "Sign convention: a positive map value is evidence towards MALIGNANT for every signed method (baselines: "
    "attribution of the log-odds logit[malignant] - logit[benign]; CycleGAN-AM: R = G+(x) - G-(x)). Deletion "
    "and insertion rank pixels by |map|, so evidence in either direction counts and unsigned maps (saliency, "
    "Grad-CAM, the controls) are ranked the same way. The score a curve follows is the probability of the class "
    f"the classifier predicted on the unperturbed x at threshold {DECISION_THRESHOLD}: p(malignant) for "
    "predicted-malignant patches (p(malignant) >= 0.5), 1 - p(malignant) = p(benign) for predicted-benign ones. "
    "So every curve starts at the prediction's own confidence (>= 0.5) and lower deletion AUC always means "
    "'removing the top pixels undoes the decision'. In terms of the malignancy score, a predicted-benign "
    "patch's deletion curve is 1 - p(malignant): it falls only when deleting the top pixels RAISES p(malignant), "
    "and its AUC is 1 - (AUC of p(malignant)). Removing a nodule (replacing it by air, lung or a blur) tends to "
    "make a patch look benign, so on predicted-benign patches deletion often cannot undo the decision whatever "
    "the map: read the two classes separately.")


def magnitude(maps: np.ndarray) -> np.ndarray:
    """|map| as float64 [N, H, W]: the quantity every measure here ranks or sums."""
    return np.abs(np.asarray(maps, dtype=np.float64))


def gaussian_blur(images: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Each image [N, H, W] blurred in-plane with a Gaussian of ``sigma_mm`` (edges extended, float32).

    The one blur of the comparison: the edge-map control and the blurred deletion reference.
    """
    images = np.asarray(images, dtype=np.float32)
    sigma_px = sigma_mm / PIXEL_MM
    return ndimage.gaussian_filter(images, sigma=(0.0, sigma_px, sigma_px), mode="nearest").astype(np.float32)


def predicted_groups(p_malignant: np.ndarray) -> Dict[str, np.ndarray]:
    """Boolean masks of GROUPS: all patches, then the two predicted classes (a partition of them)."""
    malignant = np.asarray(p_malignant, dtype=np.float64) >= DECISION_THRESHOLD
    return {"all": np.ones(len(malignant), bool), "predicted_malignant": malignant, "predicted_benign": ~malignant}


def localisation_regions(masks: np.ndarray, valid: np.ndarray,
                         dilations_mm: Sequence[float] = MASK_DILATIONS_MM) -> Dict[float, np.ndarray]:
    """{d: pixels within d mm of the nodule mask that hold real image} (uint8 [N, H, W])."""
    valid = np.asarray(valid).astype(bool)
    return {float(d): (within_mm_of_masks(masks, d) & valid).astype(np.uint8) for d in dilations_mm}


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


def surround_share(maps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Share of sum |map| on the pixels that are not valid (NaN for an all-zero map)."""
    values = magnitude(maps).reshape(len(maps), -1)
    outside = ~np.asarray(valid).astype(bool).reshape(len(maps), -1)
    total = values.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (values * outside).sum(axis=1) / total, np.nan)


def localisation_scores(maps: np.ndarray, regions: Dict[float, np.ndarray], valid: np.ndarray) -> Dict[str, np.ndarray]:
    """relevance_mass / relevance_rank / pointing_game per dilation ("..._2mm"), and surround_share."""
    scores: Dict[str, np.ndarray] = {}
    for name, measure in (("relevance_mass", relevance_mass_accuracy), ("relevance_rank", relevance_rank_accuracy),
                          ("pointing_game", pointing_game)):
        for distance, region in regions.items():
            scores[f"{name}_{distance:g}mm"] = measure(maps, region)
    scores["surround_share"] = surround_share(maps, valid)
    return scores


def tracked_score(p_malignant: np.ndarray, predicted_malignant: np.ndarray) -> np.ndarray:
    """The probability of the predicted class: p(malignant) or 1 - p(malignant) (see SCORE_CONVENTION)."""
    p_malignant = np.asarray(p_malignant, dtype=np.float64)
    return np.where(predicted_malignant, p_malignant, 1.0 - p_malignant)


def perturbation_curves(
    malignancy: Malignancy,
    x: np.ndarray,
    maps: np.ndarray,
    reference: np.ndarray,
    steps: int = PERTURBATION_STEPS,
    chunk: int = 16,
) -> Tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves [N, steps + 1] of the predicted class's probability.

    Deleted pixels take the reference image's values ([N, H, W], or one [H, W] for all); the class is
    the one predicted on each unperturbed x (SCORE_CONVENTION). The unperturbed x and the full
    reference are scored once and shared by both curves.
    """
    if steps < 2:
        raise ValueError(f"A perturbation curve needs at least 2 steps, got {steps}.")
    x = np.asarray(x, dtype=np.float32)
    n, pixels = len(x), x[0].size
    reference = np.broadcast_to(np.asarray(reference, dtype=np.float32), x.shape)
    p_x = malignancy(x)
    predicted_malignant = p_x >= DECISION_THRESHOLD
    score_x = tracked_score(p_x, predicted_malignant)
    score_reference = tracked_score(malignancy(np.ascontiguousarray(reference)), predicted_malignant)
    flat_x, flat_reference = x.reshape(n, pixels), reference.reshape(n, pixels)
    ranks = np.empty((n, pixels), dtype=np.int64)
    order = np.argsort(-magnitude(maps).reshape(n, pixels), axis=1, kind="stable")
    np.put_along_axis(ranks, order, np.arange(pixels)[None].repeat(n, axis=0), axis=1)
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)[1:-1]  # the inner points
    deletion, insertion = np.empty((n, steps + 1)), np.empty((n, steps + 1))
    deletion[:, 0], deletion[:, -1] = score_x, score_reference
    insertion[:, 0], insertion[:, -1] = score_reference, score_x
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        chosen = ranks[rows, None, :] < counts[None, :, None]  # [chunk, steps - 1, pixels]
        original, replaced = flat_x[rows, None, :], flat_reference[rows, None, :]
        images = np.concatenate([np.where(chosen, replaced, original), np.where(chosen, original, replaced)], axis=0)
        p = malignancy(images.reshape(-1, *x.shape[1:]).astype(np.float32)).reshape(2, -1, steps - 1)
        deletion[rows, 1:-1] = tracked_score(p[0], predicted_malignant[rows, None])
        insertion[rows, 1:-1] = tracked_score(p[1], predicted_malignant[rows, None])
    return deletion, insertion


def area_under_perturbation_curves(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each deletion or insertion curve [N, steps + 1] over the perturbed fraction
    [0, 1] (the "deletion AUC" of Petsiuk et al.; not a ROC AUC, which is metrics.roc_auc)."""
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
