"""nodule_regions: distances in millimetres from the nodule mask and from the patch centre, against discs."""

from __future__ import annotations

import numpy as np
import pytest

from cyclegan_explain_training.nodule_regions import (
    PIXEL_MM,
    distance_from_masks_mm,
    within_mm_of_centre,
    within_mm_of_masks,
)

SIZE = 64


def _disc(radius_px: float, centre=(30.0, 33.0)):
    rows, columns = np.mgrid[:SIZE, :SIZE]
    distance_px = np.hypot(rows - centre[0], columns - centre[1])
    return distance_px <= radius_px, distance_px


@pytest.mark.parametrize("radius_px", [2.0, 5.5, 10.0])
def test_distance_from_a_disc_is_the_analytic_one_within_a_pixel(radius_px):
    mask, distance_px = _disc(radius_px)
    distance_mm = distance_from_masks_mm(mask)
    assert PIXEL_MM == pytest.approx(45.0 / 64)
    assert (distance_mm[mask] == 0).all()
    outside = ~mask
    expected_mm = (distance_px[outside] - radius_px) * PIXEL_MM
    assert np.abs(distance_mm[outside] - expected_mm).max() <= PIXEL_MM
    assert (distance_mm[outside] > 0).all()


def test_an_empty_mask_is_infinitely_far_and_leaves_its_neighbours_alone():
    disc, _ = _disc(4.0)
    masks = np.stack([np.zeros((SIZE, SIZE), bool), disc])
    distances = distance_from_masks_mm(masks)
    assert np.isposinf(distances[0]).all()
    assert np.isfinite(distances[1]).all()
    assert np.array_equal(distances[1], distance_from_masks_mm(disc))
    assert not within_mm_of_masks(masks, 100.0)[0].any()


@pytest.mark.parametrize("distance_mm", [0.0, 2.0, 5.0])
def test_within_mm_of_a_disc_is_the_bigger_disc(distance_mm):
    radius_px = 6.0
    mask, _ = _disc(radius_px)
    region = within_mm_of_masks(mask, distance_mm)
    assert region[mask].all()
    assert np.array_equal(region, distance_from_masks_mm(mask) <= distance_mm)
    expected_area_px = np.pi * (radius_px + distance_mm / PIXEL_MM) ** 2
    assert region.sum() == pytest.approx(expected_area_px, rel=0.08)


@pytest.mark.parametrize("radius_mm", [5.0, 10.0, 20.0])
def test_within_mm_of_centre_has_the_area_of_its_circle_around_index_31_5(radius_mm):
    # (from 5 mm = 7 px on, the digitised disc is within a few % of the circle)
    region = within_mm_of_centre(radius_mm)
    assert region.shape == (SIZE, SIZE)
    area_mm2 = region.sum() * PIXEL_MM**2
    assert area_mm2 == pytest.approx(np.pi * radius_mm**2, rel=0.05)
    # Centred on the continuous index (31.5, 31.5): symmetric under both flips.
    assert np.array_equal(region, region[::-1]) and np.array_equal(region, region[:, ::-1])
    assert region[31:33, 31:33].all()
