"""Caveats of one explanation: a counterfactual that did not reach the other class, a structure that fills the patch."""

from __future__ import annotations

import numpy as np
import pytest

from CycleGANExplainLib.caveats import (G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT, LESION_DIRECTION_SHARE,
                                        LESION_FILLS_PATCH, counterfactual_caveats, explanation_caveats,
                                        solid_direction_share)
from CycleGANExplainLib.explanation import Explanation, PatchExplanation
from CycleGANExplainLib.patch_sampling import extract_patch
from CycleGANExplainLib.sample_data import (SYNTHETIC_SAMPLE, TCIA_SAMPLE, sample_nodule, sample_nodules,
                                            sample_volume_path)
from CycleGANExplainLib.volume_io import read_volume

BASELINE = "integrated-gradients"  # any classifier attribution: its map does not use G+-(x)
PIXEL_MM = 45.0 / 64
REACH_MM = 0.7 * 22.5


def codes(caveats) -> list:
    return [caveat.code for caveat in caveats]


@pytest.mark.parametrize("p_pos, p_neg, expected", [
    (0.98, 0.02, []),
    (0.98, 0.612, [G_NEG_NOT_BENIGN]),
    (0.412, 0.02, [G_POS_NOT_MALIGNANT]),
    (0.3, 0.7, [G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT]),
    (0.5, 0.5, [G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT]),  # 0.5 is neither class: not reached
    (0.501, 0.499, []),
])
def test_a_counterfactual_that_stops_short_of_the_other_class_is_a_caveat(p_pos, p_neg, expected):
    assert codes(counterfactual_caveats(p_pos, p_neg)) == expected


def test_the_caveat_names_the_counterfactual_its_probability_and_what_it_means_for_the_map():
    [neg] = counterfactual_caveats(0.98, 0.6123)
    assert neg.text == ("G-(x) did not reach benign (p = 0.612, not below 0.500): the map shows only part of what "
                        "would make this patch look benign.")
    [pos] = counterfactual_caveats(0.4117, 0.02)
    assert pos.text.startswith("G+(x) did not reach malignant (p = 0.412, not above 0.500): the map shows only part")
    # A baseline's map does not come from G+-(x): its caveat is about the image, not the map.
    [baseline] = counterfactual_caveats(0.4117, 0.02, map_from_counterfactuals=False)
    assert baseline.code == G_POS_NOT_MALIGNANT and "map" not in baseline.text and "not a malignant version" in baseline.text


def lung_volume_with(structure_mm) -> "tuple[np.ndarray, np.ndarray]":
    """1 mm voxels of lung (-850 HU, noise SD 30) with soft tissue (40 HU) where ``structure_mm(x, y, z)``
    holds, coordinates in mm from the volume's centre; the IJK-to-RAS of an LPS axial series."""
    rng = np.random.default_rng(3)
    shape = (21, 81, 81)
    volume = np.full(shape, -850.0) + rng.normal(0.0, 30.0, shape)
    z, y, x = (np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2.0)
    volume[structure_mm(x, y, z)] = 40.0
    ijk_to_ras = np.array([[-1.0, 0, 0, 40.0], [0, -1.0, 0, 40.0], [0, 0, 1.0, -10.0], [0, 0, 0, 1]])
    return volume.astype(np.float32), ijk_to_ras


def explanation_at_centre(volume: np.ndarray, ijk_to_ras: np.ndarray, p_pos: float = 0.9,
                          p_neg: float = 0.1) -> Explanation:
    """An Explanation whose patch is cut by the real sampler at the volume's centre (the probabilities given)."""
    patch = extract_patch(volume, ijk_to_ras, [0.0, 0.0, 0.0])
    image = np.zeros_like(patch.pixels)
    return Explanation(x=image, g_pos=image, g_neg=image, relevance=image, p_x=0.5, p_pos=p_pos, p_neg=p_neg,
                       seed_ras=np.zeros(3), patch_hu=patch.pixels, patch_to_ras=patch.patch_to_ras,
                       outside_fraction=patch.outside_fraction)


def sphere(radius_mm: float, centre=(0.0, 0.0, 0.0)):
    return lambda x, y, z: (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius_mm ** 2


@pytest.mark.parametrize("radius_mm, fills", [
    (5.0, False),   # a 10 mm nodule
    (15.0, False),  # 30 mm, the largest LIDC-IDRI nodule
    (17.0, True),   # 34 mm: its margin lies in the patch's outer frame
    (40.0, True),   # an 80 mm mass, larger than the 45 mm field
])
def test_a_structure_filling_most_of_the_patch_is_a_caveat_and_a_nodule_is_not(radius_mm, fills):
    explanation = explanation_at_centre(*lung_volume_with(sphere(radius_mm)))
    assert codes(explanation_caveats(explanation, "cyclegan-am")) == ([LESION_FILLS_PATCH] if fills else [])
    if fills:
        [caveat] = explanation_caveats(explanation, "cyclegan-am")
        assert caveat.text.startswith("The clicked structure is solid for 16 mm or more from the click in 100 % of "
                                      "directions: it fills most of the 45 mm patch;")


def test_a_nodule_on_the_chest_wall_is_not_taken_for_a_lesion_filling_the_patch():
    # The nodule and the wall are one soft-tissue component touching three sides of the patch and covering
    # about half of it; the nodule's lung side is still within 8 mm of the click.
    wall_or_nodule = lambda x, y, z: (x < -6.0) | sphere(8.0)(x, y, z)  # noqa: E731
    explanation = explanation_at_centre(*lung_volume_with(wall_or_nodule))
    tissue = explanation.patch_hu > -400
    assert tissue.mean() > 0.4 and tissue[0].any() and tissue[-1].any() and tissue[:, 0].all()
    # Only rays that leave the nodule straight into the wall (x < -6 mm) stay in tissue; towards the lung,
    # and obliquely through the lung gap between nodule and wall, it ends.
    assert 0.15 < solid_direction_share(explanation.patch_hu, PIXEL_MM, REACH_MM) < 0.5
    assert explanation_caveats(explanation, "cyclegan-am") == []


def test_all_caveats_together_and_a_bare_patch_explanation_gets_only_the_counterfactual_ones():
    explanation = explanation_at_centre(*lung_volume_with(sphere(40.0)), p_pos=0.45, p_neg=0.7)
    assert codes(explanation_caveats(explanation, "cyclegan-am")) == [G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT,
                                                                      LESION_FILLS_PATCH]
    assert "not a benign version" in explanation_caveats(explanation, BASELINE)[0].text
    bare = PatchExplanation(explanation.x, explanation.g_pos, explanation.g_neg, explanation.relevance,
                            explanation.p_x, explanation.p_pos, explanation.p_neg)
    assert codes(explanation_caveats(bare, "cyclegan-am")) == [G_NEG_NOT_BENIGN, G_POS_NOT_MALIGNANT]


def test_on_the_sample_cts_the_nodules_fill_no_patch_and_the_tumour_and_mediastinum_do():
    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    for nodule in sample_nodules(SYNTHETIC_SAMPLE).values():  # 6 to 20 mm across
        patch = extract_patch(loaded.volume_kji, loaded.ijk_to_ras, nodule.centre_ras_mm)
        assert solid_direction_share(patch.pixels, PIXEL_MM, REACH_MM) < 0.5, nodule.id
    mediastinum = extract_patch(loaded.volume_kji, loaded.ijk_to_ras, [-10.0, 40.0, -20.0])
    assert solid_direction_share(mediastinum.pixels, PIXEL_MM, REACH_MM) >= LESION_DIRECTION_SHARE
    # The real sample's 47 mm adenocarcinoma touches lung 12 mm from its centre (so no single distance
    # from the click would call it large) but fills the field in most directions.
    real = read_volume(sample_volume_path(TCIA_SAMPLE))
    tumour = sample_nodule(sample=TCIA_SAMPLE)
    patch = extract_patch(real.volume_kji, real.ijk_to_ras, tumour.centre_ras_mm)
    assert (patch.pixels > -400).mean() > 0.7
    assert solid_direction_share(patch.pixels, PIXEL_MM, REACH_MM) == pytest.approx(0.875, abs=0.03)
    from CycleGANExplainLib.caveats import lesion_caveats

    assert codes(lesion_caveats(patch.pixels, PIXEL_MM)) == [LESION_FILLS_PATCH]
