"""Is the classifier more than a size measure? Diameter-matched pair concordance (issue 21, item 3).

Over all nodules, diameter alone ranks rated-suspicious above not-suspicious nodules about as
well as the classifier (AUC 0.94 against 0.93 on the lidc-voi test split). Within pairs of a
rated-suspicious and a not-suspicious nodule whose diameters differ by at most 1 mm
(metrics.matched_pairs), size is nearly used up: the share of such pairs a score ranks correctly
is what it sees beyond the diameter. Beside the classifier, the same share for the leftover size
difference within the pairs (the diameter itself, and the mask's area in the patch) is the
size-only baseline; the AUCs over all nodules sit beside it.

Intervals: patient bootstrap (metrics.patient_bootstrap; every figure on the same resamples, so
the classifier-minus-baseline differences are paired). Pairs are re-formed within each resample.
A figure resting on fewer than MIN_STRATUM nodules of either class (for the concordance: of
either class among the nodules in a pair) is n/a.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from .metrics import (MATCH_TOLERANCE_MM, MIN_STRATUM, matched_pair_concordance, matched_pairs, patient_bootstrap,
                      roc_auc)
from .reporting import nest_paths, not_available

REFERENCE = "classifier"
SCORE_LABELS = {
    "classifier": "classifier p(x)",
    "diameter": "diameter alone (the metadata's, mm)",
    "mask_area": "mask area in the patch (mm\u00b2)",
}


def size_matched_figures(labels: np.ndarray, diameters_mm: np.ndarray, patient_ids: np.ndarray,
                         scores: Mapping[str, np.ndarray], resamples: int, seed: int,
                         confidence: float = 0.95) -> Dict[str, Any]:
    """Matched-pair concordance and AUC of each score (``scores`` holds REFERENCE, the classifier,
    and the size-only baselines), and the classifier minus each baseline, with patient-bootstrap
    intervals; counts of pairs and of the nodules in them."""
    if REFERENCE not in scores:
        raise ValueError(f"The scores must include {REFERENCE!r}, the reference of the differences.")
    labels = np.asarray(labels)
    diameters = np.asarray(diameters_mm, dtype=np.float64)
    names = list(scores)
    matrix = np.stack([np.asarray(scores[name], dtype=np.float64) for name in names], axis=1)
    baselines = [name for name in names if name != REFERENCE]

    def statistics(indices: np.ndarray) -> Dict[str, float]:
        chosen_labels, chosen = labels[indices], matrix[indices]
        concordance = matched_pair_concordance(chosen_labels, diameters[indices], chosen)
        aucs = roc_auc(chosen_labels, chosen)
        values = {}
        for column, name in enumerate(names):
            values[f"concordance/{name}"] = float(concordance[column])
            values[f"auc/{name}"] = float(aucs[column])
        for name in baselines:
            for figure in ("concordance", "auc"):
                values[f"classifier_minus/{figure}/{name}"] = values[f"{figure}/{REFERENCE}"] - values[f"{figure}/{name}"]
        return values

    estimates = patient_bootstrap(statistics, patient_ids, resamples, seed, confidence)
    pairs = matched_pairs(labels, diameters)
    in_pairs = {"rated_suspicious": int(pairs.any(axis=1).sum()), "not_suspicious": int(pairs.any(axis=0).sum())}
    suspicious = int(np.sum(labels == 1))
    too_few = {"concordance": min(in_pairs.values()) < MIN_STRATUM,
               "auc": min(suspicious, len(labels) - suspicious) < MIN_STRATUM}
    entries = {}
    for name, estimate in estimates.items():
        figure = name.split("/")[-2] if name.startswith("classifier_minus/") else name.split("/")[0]
        entries[name] = (not_available(f"n/a: fewer than {MIN_STRATUM} nodules of a class"
                                       + (" in a matched pair" if figure == "concordance" else ""))
                         if too_few[figure] else estimate.as_dict())
    return {
        "n": int(len(labels)),
        "patients": int(len(np.unique(patient_ids))),
        "rated_suspicious": suspicious,
        "tolerance_mm": MATCH_TOLERANCE_MM,
        "pairs": int(pairs.sum()),
        "nodules_in_pairs": in_pairs,
        "scores": {name: SCORE_LABELS.get(name, name) for name in names},
        **nest_paths(entries),
    }
