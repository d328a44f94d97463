"""context_fill: the surround put where a patch holds no image, fixed (evaluation) and random (training)."""

from __future__ import annotations

import numpy as np
import pytest

from cyclegan_explain_training.context_fill import (
    EVALUATION_FILLS,
    LUNG_HU,
    SHRINK_MARGIN_MM,
    fill_outside,
    random_context,
    shrink_valid,
)
from cyclegan_explain_training.nodule_regions import within_mm_of_masks

SIZE = 64
# Image values far from any surround (air -1000, lung texture around -850), so that a kept
# pixel and a filled one can never be confused.
IMAGE_LOW, IMAGE_HIGH = 2000.0, 3000.0
NOT_AN_IMAGE_HU = 5000.0  # what the invalid pixels hold before filling: must never survive


def _voi_like_patches(count: int, seed: int):
    """Patches whose valid part is a random box around the centre with a disc nodule inside it."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(IMAGE_LOW, IMAGE_HIGH, (count, SIZE, SIZE)).astype(np.float32)
    valid = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
    masks = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
    rows, columns = np.mgrid[:SIZE, :SIZE]
    for index in range(count):
        row0, col0 = rng.integers(0, 24, 2)
        row1, col1 = rng.integers(41, SIZE + 1, 2)
        valid[index, row0:row1, col0:col1] = 1
        radius = rng.uniform(1.5, 7.0)
        centre = rng.uniform(28, 36, 2)
        masks[index] = np.hypot(rows - centre[0], columns - centre[1]) <= radius
    images[valid == 0] = NOT_AN_IMAGE_HU
    return images, valid, masks


def _is_box(region: np.ndarray, within: np.ndarray) -> bool:
    """Whether ``region`` is exactly ``within`` restricted to one axis-aligned rectangle."""
    rows, columns = np.nonzero(region)
    box = np.zeros_like(region, dtype=bool)
    box[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    return bool(np.array_equal(region.astype(bool), box & within.astype(bool)))


def test_air_fill_keeps_every_valid_pixel_and_puts_air_everywhere_else():
    images, valid, _ = _voi_like_patches(6, seed=0)
    before = images.copy()
    filled = fill_outside(images, valid, "air")
    assert filled.dtype == np.float32 and filled.shape == images.shape
    assert np.array_equal(filled[valid == 1], images[valid == 1])  # bit-identical
    assert (filled[valid == 0] == -1000.0).all()
    assert np.array_equal(images, before)  # inputs are never modified


def test_lung_fill_is_a_texture_around_minus_850_hu_with_the_stated_spread():
    images, valid, _ = _voi_like_patches(20, seed=1)
    filled = fill_outside(images, valid, "lung", seed=3)
    assert np.array_equal(filled[valid == 1], images[valid == 1])
    surround = filled[valid == 0]
    assert surround.size > 10000
    assert surround.mean() == pytest.approx(LUNG_HU, abs=5.0)
    assert 30.0 < surround.std() < 40.0  # lung_texture's default spread is 35 HU
    assert surround.max() < -500.0  # nothing in the surround looks like tissue
    # Seeded: the same seed gives the same surround, another seed another one.
    assert np.array_equal(filled, fill_outside(images, valid, "lung", seed=3))
    assert not np.array_equal(filled, fill_outside(images, valid, "lung", seed=4))


def test_every_evaluation_fill_is_known_and_an_unknown_one_is_named():
    images, valid, _ = _voi_like_patches(2, seed=2)
    for fill in EVALUATION_FILLS:
        assert (fill_outside(images, valid, fill) != NOT_AN_IMAGE_HU).all()
    with pytest.raises(ValueError, match="'mirror'"):
        fill_outside(images, valid, "mirror")


def test_random_context_fills_only_outside_a_shrunk_box_that_keeps_the_nodule_visible():
    images, valid, masks = _voi_like_patches(300, seed=3)
    before = images.copy()
    rng = np.random.default_rng(11)
    near_nodule = within_mm_of_masks(masks, SHRINK_MARGIN_MM) & (valid == 1)
    shrunk_count, lung_count = 0, 0
    for _ in range(2):  # two draws of the same batch: the surround is new each time
        result = random_context(images, valid, masks, rng)
        assert np.array_equal(images, before)
        for index in range(len(images)):
            kept = result[index] == images[index]
            filled = result[index][~kept]
            assert not kept[valid[index] == 0].any(), index  # no invalid pixel survives
            assert kept[masks[index] == 1].all(), index  # the nodule is never hidden
            assert kept[near_nodule[index]].all(), index  # nor the 2 mm around it
            assert _is_box(kept, valid[index]), index  # what stays visible is a box of real image
            assert (filled < -500).all(), index  # and what replaces the rest is air or lung
            shrunk_count += int(kept.sum() < valid[index].sum())
            lung_count += int((filled > -1000).any())
    # Both kinds of surround and both shrunk and whole boxes were drawn (about half each).
    assert 150 < shrunk_count < 450 and 150 < lung_count < 450


def test_shrink_valid_keeps_the_mask_and_its_margin_inside_the_original_box():
    _, valid, masks = _voi_like_patches(200, seed=4)
    rng = np.random.default_rng(5)
    near_nodule = within_mm_of_masks(masks, SHRINK_MARGIN_MM) & (valid == 1)
    smaller = 0
    for index in range(len(valid)):
        shrunk = shrink_valid(valid[index], masks[index], rng)
        assert not (shrunk & (valid[index] == 0)).any()
        assert shrunk[near_nodule[index]].all(), index
        assert _is_box(shrunk, valid[index]), index
        smaller += int(shrunk.sum() < valid[index].sum())
    assert smaller > 150  # it does shrink, nearly always
    nothing_valid = np.zeros((SIZE, SIZE), dtype=np.uint8)
    assert not shrink_valid(nothing_valid, masks[0], rng).any()


def test_full_context_patches_pass_through_untouched():
    rng = np.random.default_rng(6)
    images = rng.normal(-700.0, 300.0, (12, SIZE, SIZE)).astype(np.float32)
    valid = np.ones(images.shape, dtype=np.uint8)
    masks = np.zeros(images.shape, dtype=np.uint8)
    masks[:, 28:36, 28:36] = 1
    result = random_context(images, valid, masks, np.random.default_rng(7), shrink_probability=1.0)
    assert np.array_equal(result, images)
    for fill in EVALUATION_FILLS:
        assert np.array_equal(fill_outside(images, valid, fill), images)
