"""The simple predictors beside the classifier: what size and density alone tell about malignancy.

- diameter: the nodule's consensus diameter (mm) as the score; for accuracy, a one-feature
  logistic regression on it gives the cut-off;
- two-feature: logistic regression on the log of the nodule's area in the patch's mask and the
  mean HU inside the mask;
- visible area: how many pixels of the patch hold real image (VOI data grows with the nodule, so
  this would be a spurious size cue if it predicted the label).

Every model is fitted on the train split's centre views only and applied unchanged to the test
split. Logistic regressions weight the classes inversely to their frequency, as the classifier's
loss does, so their 0.5 cut-off is comparable to the classifier's decision threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np

from .dataset import PreparedDataset
from .nodule_regions import PIXEL_MM

TWO_FEATURES = ("log mask area (mm\u00b2)", "mean HU inside the mask")


def nodule_features(data: PreparedDataset) -> np.ndarray:
    """[N, 2]: log of the mask's area (mm², at least one pixel) and the mean HU inside the mask
    (NaN for an empty mask: the model imputes the training mean)."""
    inside = data.masks.astype(bool)
    pixels = inside.reshape(len(data), -1).sum(axis=1)
    sums = np.where(inside, data.images_hu, 0.0).reshape(len(data), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_hu = np.where(pixels > 0, sums / np.maximum(pixels, 1), np.nan)
    log_area = np.log(np.maximum(pixels, 1) * PIXEL_MM**2)
    return np.stack([log_area, mean_hu], axis=1)


def visible_area(data: PreparedDataset) -> np.ndarray:
    """Per patch, the number of pixels that hold real image data."""
    return data.valid.reshape(len(data), -1).sum(axis=1).astype(np.float64)


@dataclass
class LogisticBaseline:
    """A fitted scikit-learn pipeline (impute, standardise, logistic regression) and its features."""

    pipeline: Any
    features: tuple
    fitted_on: int

    def malignancy(self, features: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))[:, 1]

    def describe(self) -> Dict[str, Any]:
        model = self.pipeline[-1]
        scaler = self.pipeline[-2]
        return {
            "features": list(self.features),
            "fitted_on": f"train split, centre views (n = {self.fitted_on})",
            "class_weight": "balanced",
            "feature_mean": scaler.mean_.tolist(),
            "feature_scale": scaler.scale_.tolist(),
            "coefficients_standardised": model.coef_[0].tolist(),
            "intercept": float(model.intercept_[0]),
        }


def fit_logistic_baseline(features: np.ndarray, labels: np.ndarray, names: tuple) -> LogisticBaseline:
    """Fit the baseline's pipeline on training features [N, K] and labels."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels)) < 2:
        raise ValueError("The baselines need both classes in the train split's centre views.")
    pipeline = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(class_weight="balanced"))
    pipeline.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))
    return LogisticBaseline(pipeline, names, int(len(labels)))


def diameter_tertile_edges(train_centre: PreparedDataset) -> np.ndarray:
    """The two diameters (mm) that split the train split's centre views into thirds."""
    return np.quantile(train_centre.diameters_mm.astype(np.float64), [1.0 / 3.0, 2.0 / 3.0])


def tertile_of(diameters_mm: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0, 1 or 2: below the first edge, between the edges, at or above the second."""
    return np.digitize(np.asarray(diameters_mm, dtype=np.float64), edges)
