"""The random conditions of the evaluation redrawn many times: their spread, not one draw.

Two evaluation conditions hold chance (evaluation_conditions): the seed moved 2 mm points in a
random in-plane direction, drawn once per nodule when the dataset was prepared, and the lung
fill beyond each sub-volume is a random texture. One draw of each can land high or low (issue
21: "worst 0.930" under the seed shift was one draw; ten ranged 0.907-0.937). Here every such
condition is drawn ``draws`` times, reproducibly from the evaluation's seed: each draw gives
every nodule a new shift direction (patches re-cut from the nodule sub-volumes by the one
sampler, ``lidc_voi.redrawn_seed_shifts``) and a new lung texture, and the classifier's figures
are summarised over the draws (mean, SD, range). The centre view with air beyond the box holds
no chance and is not drawn.

Without the sub-volumes (no ``voi_dir``) only the lung texture is redrawn; the shifted views
stay the dataset's one draw, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .context_fill import fill_outside
from .dataset import SEED_SHIFTED
from .evaluation_conditions import Condition
from .metrics import DECISION_THRESHOLD, roc_auc

DRAWS = 10
MIN_DRAWS = 2  # an SD needs two
FIGURES = {"auc": "classifier AUC", "accuracy": "classifier accuracy"}


@dataclass
class DrawPlan:
    """What each draw changes: per draw, a seed for the lung texture and one shift direction per nodule."""

    fill_seeds: List[int]
    angles: np.ndarray  # [draws, nodules], radians


def draw_plan(draws: int, nodules: int, seed: int) -> DrawPlan:
    """The draws' random choices, from ``seed`` alone (the same seed gives the same draws)."""
    if draws < MIN_DRAWS:
        raise ValueError(f"Need at least {MIN_DRAWS} draws of the random conditions for a spread, got {draws}.")
    fill_seeds, angles = [], []
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        angles.append(rng.uniform(0.0, 2.0 * np.pi, nodules))
        fill_seeds.append(int(rng.integers(2**31 - 1)))
    return DrawPlan(fill_seeds, np.stack(angles) if nodules else np.empty((draws, 0)))


def redrawn_images(conditions: Sequence[Condition], plan: DrawPlan,
                   voi_dir: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """Per drawn condition key: its label, what is redrawn and its patches (HU, fill applied) per
    draw; conditions without chance are left out. With ``voi_dir`` the seed-shifted views are
    re-cut; the folder must hold the sub-volumes the dataset was cut from (its centre patches
    must come out the same, within 0.01 HU), else ValueError."""
    primary = conditions[0].data
    shifted = None
    if voi_dir is not None and any(condition.view == SEED_SHIFTED for condition in conditions):
        from .lidc_voi import redrawn_seed_shifts

        centres, images, valid = redrawn_seed_shifts(Path(voi_dir), list(primary.nodule_ids), plan.angles)
        differs = int(np.sum(np.abs(centres - primary.images_hu).reshape(len(centres), -1).max(axis=1) > 0.01))
        if differs:
            raise ValueError(f"{voi_dir} is not the folder the dataset was cut from: {differs} of {len(centres)} "
                             "centre patches re-cut from it differ from the dataset's.")
        shifted = (images, valid)
    drawn: Dict[str, Any] = {}
    for condition in conditions:
        redraw_shift = condition.view == SEED_SHIFTED and shifted is not None
        redraw_fill = condition.fill == "lung"
        if not (redraw_shift or redraw_fill):
            continue
        per_draw = []
        for draw, fill_seed in enumerate(plan.fill_seeds):
            images, valid = ((shifted[0][draw], shifted[1][draw]) if redraw_shift
                             else (condition.data.images_hu, condition.data.valid))
            per_draw.append(images if condition.fill is None else fill_outside(images, valid, condition.fill, fill_seed))
        what = [part for part, on in (("the seed's 2 mm shift direction (patches re-cut from the sub-volumes)",
                                       redraw_shift), ("the lung texture", redraw_fill)) if on]
        note = None
        if condition.view == SEED_SHIFTED and not redraw_shift:
            note = "the shift direction is the dataset's one draw (no --voi-dir to re-cut the patches from)"
        drawn[condition.key] = {"label": condition.label, "redrawn": " and ".join(what), "note": note,
                                "images_hu": per_draw}
    return drawn


def spread(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, SD (n - 1), range and the values of one figure over the draws (NaN draws left out and counted)."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[np.isfinite(values)]
    return {"mean": float(defined.mean()) if len(defined) else None,
            "sd": float(defined.std(ddof=1)) if len(defined) > 1 else None,
            "min": float(defined.min()) if len(defined) else None,
            "max": float(defined.max()) if len(defined) else None,
            "undefined_draws": int(len(values) - len(defined)),
            "per_draw": [float(value) if np.isfinite(value) else None for value in values]}


def summarise_draws(drawn: Dict[str, Any], labels: np.ndarray, probabilities: Callable[[np.ndarray], np.ndarray],
                    fixed_auc: Dict[str, float], plan: DrawPlan, seed: int) -> Dict[str, Any]:
    """The classifier's figures under every draw of every drawn condition, summarised over the draws.

    ``probabilities(images_hu)`` is the classifier's malignancy probability per patch;
    ``fixed_auc`` maps every condition key to its AUC in the main (single-draw) evaluation, so
    that the worst condition can be taken per draw, the undrawn ones entering with their one value.
    """
    malignant = np.asarray(labels) == 1
    conditions: Dict[str, Any] = {}
    auc_by_draw: Dict[str, List[float]] = {}
    for key, entry in drawn.items():
        per_figure: Dict[str, List[float]] = {name: [] for name in FIGURES}
        for images in entry["images_hu"]:
            p = probabilities(images)
            per_figure["auc"].append(roc_auc(labels, p))
            per_figure["accuracy"].append(float(np.mean((p >= DECISION_THRESHOLD) == malignant)))
        auc_by_draw[key] = per_figure["auc"]
        conditions[key] = {"label": entry["label"], "redrawn": entry["redrawn"], "note": entry["note"],
                           "single_draw_auc": fixed_auc.get(key),
                           **{name: spread(values) for name, values in per_figure.items()}}
    worst = []
    for draw in range(len(plan.fill_seeds)):
        row = np.array([auc_by_draw[key][draw] if key in auc_by_draw else value for key, value in fixed_auc.items()],
                       dtype=np.float64)
        worst.append(float(np.nanmin(row)) if np.isfinite(row).any() else float("nan"))
    return {
        "draws": len(plan.fill_seeds),
        "seed": seed,
        "rule": f"draw d uses numpy default_rng([{seed}, d]): one shift direction per nodule, then the lung "
                "texture's seed",
        "conditions": conditions,
        "worst_condition_auc": spread(worst) if drawn else None,
    }
