"""Training a classifier against the size confound (issue 21, item 3).

In LIDC-IDRI, nodules rated suspicious are mostly the large ones: diameter alone reaches AUC 0.94
on the lidc-voi test split, and a classifier trained on labels alone learns mostly size (size
explains 72 % of the shipped classifier's logit). Three things the field does against such a
confound, each a classifier setting (config.ClassifierConfig):

- ``size_balanced_loss``: per-sample loss weights proportional to 1 / p(label | diameter bin), so
  that in the weighted training set every diameter bin holds both classes in equal weight and size
  no longer predicts the label (importance weighting towards a size-independent label; the same
  aim as size-matched sampling, without throwing nodules away).
- ``auxiliary_ratings``: a second, training-only head on the classifier's features regresses the
  readers' ratings of the nodule (margin, spiculation, lobulation, texture, calcification...),
  so the features must carry what radiologists look at, not only extent. The head is not exported.
- ``selection = "matched_pairs"``: the epoch kept is the one with the best mean of diameter-matched
  pair concordance (metrics.matched_pair_concordance) and AUC on the validation patients, worst
  fill, instead of AUC alone (which size can carry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from .lidc_voi import METADATA_CSV, rows_of
from .metrics import matched_pair_concordance, roc_auc

# A bin where one class has almost no nodules would otherwise give those few a huge weight.
MIN_CLASS_SHARE = 0.1
# Reader ratings in the lidc-voi metadata that an auxiliary head may learn (column stems; the
# "_value" column holds the number). Malignancy is left out: it is what the label is made from.
RATING_COLUMNS = ("Calcification", "InternalStructure", "Lobulation", "Margin", "Sphericity", "Spiculation",
                  "Subtlety", "Texture")
# LIDC calcification value 6 means "absent"; 1-5 are kinds of calcification, not an ordinal scale.
CALCIFICATION_ABSENT = 6


def size_balanced_weights(labels: np.ndarray, diameters_mm: np.ndarray, bins: int) -> np.ndarray:
    """Loss weights (mean 1) proportional to 1 / p(label | diameter bin), p floored at MIN_CLASS_SHARE.

    Bins are diameter quantiles of the samples given, so each holds about as many samples."""
    labels = np.asarray(labels).astype(int)
    diameters = np.asarray(diameters_mm, dtype=np.float64)
    if bins < 1:
        raise ValueError(f"classifier.size_bins must be at least 1 (it is {bins}).")
    edges = np.quantile(diameters, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    bin_of = np.searchsorted(edges, diameters, side="right")
    weights = np.empty(len(labels), dtype=np.float64)
    for index in np.unique(bin_of):
        members = bin_of == index
        for label in (0, 1):
            chosen = members & (labels == label)
            share = max(chosen.sum() / members.sum(), MIN_CLASS_SHARE)
            weights[chosen] = 0.5 / share
    return (weights / weights.mean()).astype(np.float32)


def read_rating_targets(voi_dir: Path, nodule_ids: Sequence[str], ratings: Sequence[str]) -> np.ndarray:
    """[N, R] z-scored reader ratings of each sample's nodule (``nodule_ids`` as in the prepared
    dataset, "<patient>_R_<nodule>"), from the lidc-voi metadata CSV; calcification becomes
    present (1) / absent (0). ValueError naming an unknown rating or a nodule without a row."""
    unknown = [name for name in ratings if name not in RATING_COLUMNS]
    if unknown:
        raise ValueError(f"Unknown reader rating(s) {unknown}; known: {list(RATING_COLUMNS)}.")
    columns = [f"{name}_value" for name in ratings]
    table: Dict[str, list] = {}
    for line, row in rows_of(Path(voi_dir) / METADATA_CSV, "nodule metadata", ["patient_id", "nodule_id", *columns]):
        try:
            values = [float(row[column]) for column in columns]
        except ValueError:
            raise ValueError(f"line {line} of the nodule metadata has a rating that is not a number.") from None
        table[f"{row['patient_id']}_R_{int(row['nodule_id'])}"] = values
    missing = sorted(set(nodule_ids) - set(table))
    if missing:
        raise ValueError(f"The nodule metadata has no ratings for {len(missing)} nodule(s) of the dataset, e.g. "
                         f"{missing[0]}: is --ratings-from the folder the dataset was prepared from?")
    targets = np.array([table[nodule] for nodule in nodule_ids], dtype=np.float64)
    for column, name in enumerate(ratings):
        if name == "Calcification":
            targets[:, column] = targets[:, column] != CALCIFICATION_ABSENT
    spread = targets.std(axis=0)
    spread[spread == 0] = 1.0  # a rating that never varies is learnt as a constant, not divided by 0
    return ((targets - targets.mean(axis=0)) / spread).astype(np.float32)


def matched_pair_selection_score(labels: np.ndarray, diameters_mm: np.ndarray, probabilities: np.ndarray) -> Dict[str, float]:
    """The validation figures of ``selection = "matched_pairs"``: concordance, AUC and their mean."""
    concordance = matched_pair_concordance(labels, diameters_mm, probabilities)
    auc = roc_auc(labels, probabilities)
    return {"concordance": float(concordance), "auc": float(auc), "score": selection_score(concordance, auc)}


def selection_score(concordance: float, auc: float) -> float:
    """What ``selection = "matched_pairs"`` maximises (per fill; the worst fill counts)."""
    return float((concordance + auc) / 2.0)
