"""When an explanation is not to be trusted as it stands: its caveats, decided here for every front end.

The command line (console and summary.json), the figures, the Slicer module's panel and the web page all
show what ``explanation_caveats`` returns, each caveat a stable code (for summary.json and tests) and one
sentence for people. Two kinds:

- A counterfactual that did not reach the other class: G-(x) should be called benign (p(malignant) below
  0.5) and G+(x) malignant (above 0.5). Where one stops short, R = G+(x) - G-(x) shows only part of the
  change the classifier needs to call the patch that class.
- A structure at the click that fills most of the patch: the classifier sees 45 mm around the click, so a
  lesion larger than that field (or a click in the mediastinum or chest wall) has no margin in view, and
  the patch cannot explain it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from .attribution_methods import method_info
from .explanation import Explanation, PatchExplanation
from .formatting import probability_text
from .translation import tr as _

DECISION_PROBABILITY = 0.5
"""The classifier calls a patch malignant above this p(malignant), benign below it."""

SOFT_TISSUE_HU = -400.0
"""Above this, a pixel is solid tissue (nodule, vessel, chest wall, mediastinum); lung parenchyma and
ground glass lie below."""

LESION_FILL_FRACTION = 0.7
"""The lesion warning fires when solid tissue extends from the click over at least this fraction of the
field's half-width (15.75 mm of 22.5 mm: a structure wider than 31.5 mm, larger than the largest nodule in
LIDC-IDRI, 30 mm, whose margin lies in the patch's outer frame or beyond it) ..."""

LESION_DIRECTION_SHARE = 0.75
"""... in at least this share of directions. A nodule on a flat chest wall reaches it in about half; the
Lung-PET-CT-Dx sample's 47 mm tumour, which touches lung 12 mm from its centre, in 88 %. No centre view
of the 994 lidc-voi nodules reaches more than 49 % (Testing/core/test_caveats.py checks both)."""

LESION_DIRECTIONS = 72
"""Directions sampled from the click (every 5 degrees)."""

G_NEG_NOT_BENIGN = "g_neg_not_benign"
G_POS_NOT_MALIGNANT = "g_pos_not_malignant"
LESION_FILLS_PATCH = "lesion_fills_patch"


@dataclass(frozen=True)
class Caveat:
    code: str
    """Stable and machine-readable: G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT or LESION_FILLS_PATCH."""
    text: str
    """One sentence for people (translated inside Slicer)."""


def reached_benign(p_neg: float) -> bool:
    """Whether G-(x) is called benign: p(malignant) below DECISION_PROBABILITY (0.5 itself is neither class)."""
    return p_neg < DECISION_PROBABILITY


def reached_malignant(p_pos: float) -> bool:
    """Whether G+(x) is called malignant: p(malignant) above DECISION_PROBABILITY."""
    return p_pos > DECISION_PROBABILITY


def counterfactual_caveats(p_pos: float, p_neg: float, map_from_counterfactuals: bool = True) -> List[Caveat]:
    """A caveat for G-(x) not called benign (p_neg >= 0.5) and one for G+(x) not called malignant
    (p_pos <= 0.5): exactly 0.5 is neither class, so it counts as not reached.

    ``map_from_counterfactuals``: the map is R = G+(x) - G-(x) (CycleGAN-AM), so it is incomplete. A
    baseline's map does not use G+-(x) (the generators run with every method, and every front end shows
    their images and probabilities): then the caveat says only that the image is no counterpart.
    """
    caveats = []
    threshold = probability_text(DECISION_PROBABILITY)
    if not reached_benign(p_neg):
        consequence = (_("the map shows only part of what would make this patch look benign.")
                       if map_from_counterfactuals else _("that image is not a benign version of this patch."))
        caveats.append(Caveat(G_NEG_NOT_BENIGN, _("G-(x) did not reach benign (p = {p}, not below {threshold}): "
                                                  "{consequence}").format(p=probability_text(p_neg),
                                                                          threshold=threshold,
                                                                          consequence=consequence)))
    if not reached_malignant(p_pos):
        consequence = (_("the map shows only part of what would make this patch look malignant.")
                       if map_from_counterfactuals else _("that image is not a malignant version of this patch."))
        caveats.append(Caveat(G_POS_NOT_MALIGNANT, _("G+(x) did not reach malignant (p = {p}, not above {threshold}): "
                                                     "{consequence}").format(p=probability_text(p_pos),
                                                                             threshold=threshold,
                                                                             consequence=consequence)))
    return caveats


def solid_direction_share(patch_hu: np.ndarray, pixel_mm: float, reach_mm: float) -> float:
    """The share of directions from the patch's centre along which every pixel out to ``reach_mm`` is solid
    tissue (> SOFT_TISSUE_HU), over LESION_DIRECTIONS directions (nearest-pixel samples every half pixel).

    Directions rather than the nearest non-solid pixel: a real tumour is irregular and touches lung on one
    side within a centimetre of its centre, yet fills the field everywhere else. Directions rather than
    the connected component at the centre: a juxtapleural nodule is one component with the chest wall,
    which crosses the patch from side to side and can cover half of it, yet along the nodule's lung side
    (about half the directions) tissue ends near the click.
    """
    patch_hu = np.asarray(patch_hu)
    solid = patch_hu > SOFT_TISSUE_HU
    centre = (np.asarray(patch_hu.shape, dtype=float) - 1.0) / 2.0  # contract 1: the seed is at (31.5, 31.5)
    angles = np.linspace(0.0, 2.0 * np.pi, LESION_DIRECTIONS, endpoint=False)
    steps = np.arange(0.0, reach_mm / pixel_mm + 1e-9, 0.5)
    rows = np.rint(centre[0] + np.outer(np.sin(angles), steps)).astype(int)
    columns = np.rint(centre[1] + np.outer(np.cos(angles), steps)).astype(int)
    inside = (rows >= 0) & (rows < solid.shape[0]) & (columns >= 0) & (columns < solid.shape[1])
    along = np.where(inside, solid[np.clip(rows, 0, solid.shape[0] - 1), np.clip(columns, 0, solid.shape[1] - 1)],
                     False)
    return float(along.all(axis=1).mean())


def lesion_caveats(patch_hu: np.ndarray, pixel_mm: float) -> List[Caveat]:
    """The caveat for solid tissue that fills most of the patch (``pixel_mm``: the patch's pixel spacing)."""
    field_mm = patch_hu.shape[1] * pixel_mm
    reach_mm = LESION_FILL_FRACTION * field_mm / 2.0
    share = solid_direction_share(patch_hu, pixel_mm, reach_mm)
    if share < LESION_DIRECTION_SHARE:
        return []
    return [Caveat(LESION_FILLS_PATCH, _(
        "The clicked structure is solid for {extent:.0f} mm or more from the click in {share:.0f} % of "
        "directions: it fills most of the {field:.0f} mm patch; a lesion larger than the patch cannot be "
        "explained from it."
    ).format(extent=reach_mm, share=100.0 * share, field=field_mm))]


def explanation_caveats(explanation: PatchExplanation, method: str) -> List[Caveat]:
    """Every caveat of one explanation made with ``method`` (an attribution_methods key).

    The lesion check needs the patch in HU and its geometry, which an Explanation (one seed's) carries;
    a bare PatchExplanation gets the counterfactual caveats only.
    """
    caveats = counterfactual_caveats(explanation.p_pos, explanation.p_neg,
                                     map_from_counterfactuals=not method_info(method).attributes_classifier)
    if isinstance(explanation, Explanation):
        pixel_mm = float(np.linalg.norm(np.asarray(explanation.patch_to_ras)[:3, 0]))
        caveats += lesion_caveats(explanation.patch_hu, pixel_mm)
    return caveats
