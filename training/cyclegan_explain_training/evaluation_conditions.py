"""The conditions under which every evaluation figure is reported: view x surround.

A real nodule sub-volume fills only the middle of a patch; what lies beyond it (``valid == 0``)
is filled as context_fill.EVALUATION_FILLS says, and the networks should not care which. So each
figure is reported for the centre view under each fill, and again with the seed moved 2 mm
(the dataset's seed-shifted views), under each fill. A dataset whose patches are image
everywhere (phantoms, whole scans) collapses to one condition per view; one without
seed-shifted views to the centre view only. Conditions list their patches in the same nodule
order, so one bootstrap resample draws the same nodules in every condition (paired figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .context_fill import EVALUATION_FILLS, fill_outside
from .dataset import CENTRE, SEED_SHIFTED, PreparedDataset

VIEW_LABELS = {CENTRE: "centre view", SEED_SHIFTED: "seed moved 2 mm"}


@dataclass
class Condition:
    key: str  # used in the JSON's paths: no "/"
    label: str
    view: str
    fill: Optional[str]  # None: every pixel holds image data, nothing to fill
    data: PreparedDataset  # this view's patches, one per nodule, in the centre views' nodule order
    images_hu: np.ndarray  # the patches with the fill applied

    def describe(self) -> dict:
        return {"key": self.key, "label": self.label, "view": self.view, "fill": self.fill, "n": len(self.data)}


def evaluation_conditions(split_data: PreparedDataset, seed: int = 0) -> Tuple[List[Condition], List[str]]:
    """The conditions for one split's samples, the first being the primary one (centre view,
    air fill: the patch exactly as the command line samples a sub-volume), and the reasons for
    any condition left out."""
    centre = split_data.select(split_data.views == CENTRE)
    if len(centre) == 0:
        raise ValueError("The split has no centre views to evaluate.")
    if len(np.unique(centre.nodule_ids)) != len(centre):
        raise ValueError("The split has more than one centre view of a nodule.")
    views = [(CENTRE, centre)]
    left_out: List[str] = []
    shifted = split_data.select(split_data.views == SEED_SHIFTED)
    if len(shifted) == 0:
        left_out.append("seed moved 2 mm: the dataset has no seed-shifted views")
    else:
        position = {nodule: index for index, nodule in enumerate(shifted.nodule_ids)}
        if len(position) != len(shifted) or set(position) != set(centre.nodule_ids):
            left_out.append("seed moved 2 mm: the seed-shifted views are not one per evaluated nodule")
        else:
            views.append((SEED_SHIFTED, shifted.select(np.array([position[n] for n in centre.nodule_ids]))))
    needs_fill = any(not data.valid.all() for _, data in views)
    if not needs_fill:
        left_out.append("fills: every pixel of every patch holds image data, so the fills change nothing")
    conditions = []
    for view, data in views:
        for fill in (EVALUATION_FILLS if needs_fill else (None,)):
            key = view if fill is None else f"{view}-{fill}"
            label = VIEW_LABELS[view] + ("" if fill is None else f", {fill} fill")
            images = data.images_hu if fill is None else fill_outside(data.images_hu, data.valid, fill, seed)
            conditions.append(Condition(key, label, view, fill, data, images))
    return conditions, left_out
