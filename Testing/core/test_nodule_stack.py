"""Explanation through the nodule (nodule_stack): which slices, where the stack lies, what each slice holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.model_bundle import default_bundle_dir, load_bundle
from CycleGANExplainLib.nodule_stack import (MAX_HALF_EXTENT_MM, MOSTLY_OUTSIDE_FRACTION, HalfExtentError,
                                             check_half_extent, explain_through_nodules, plan_stack, slice_step_mm)
from CycleGANExplainLib.patch_sampling import (SeedOutsideVolumeError, extract_patch, is_seed_inside,
                                               patch_outside_fraction)

PIXEL_MM = 45.0 / 64


@pytest.fixture(scope="module")
def shipped_bundle():
    return load_bundle(default_bundle_dir(), "cpu")


def test_centre_slice_is_the_single_slice_explanation(lung_volume, shipped_bundle):
    volume, ijk_to_ras = lung_volume
    seed = [1.5, -3.0, 1.25]
    single = explain(volume, ijk_to_ras, [seed], shipped_bundle)[0]
    stack = explain_through_nodules(volume, ijk_to_ras, [seed], shipped_bundle, half_extent_mm=5.0).stacks[0]
    assert len(stack) == 5 and stack.centre_index == 2
    centre = stack.centre
    np.testing.assert_array_equal(centre.seed_ras, seed)
    np.testing.assert_array_equal(centre.patch_hu, single.patch_hu)
    np.testing.assert_array_equal(centre.x, single.x)
    np.testing.assert_array_equal(centre.patch_to_ras, single.patch_to_ras)
    # Batched with its neighbours the networks may sum in another order: float32 rounding only.
    np.testing.assert_allclose(centre.relevance, single.relevance, atol=1e-5)
    for stacked, alone in ((centre.p_x, single.p_x), (centre.p_neg, single.p_neg), (centre.p_pos, single.p_pos)):
        assert stacked == pytest.approx(alone, abs=1e-5)
    # Half-extent 0 is today's request exactly: the same batch of one.
    only = explain_through_nodules(volume, ijk_to_ras, [seed], shipped_bundle, half_extent_mm=0.0).stacks[0]
    assert len(only) == 1 and only.offsets_mm.tolist() == [0.0]
    np.testing.assert_array_equal(only.relevance[0], single.relevance)
    assert (only.p_x[0], only.p_neg[0], only.p_pos[0]) == (single.p_x, single.p_neg, single.p_pos)


def test_stack_slices_lie_on_the_samplers_patches_one_ct_slice_apart(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    seed = np.array([-4.0, 6.0, 0.3])
    result = explain_through_nodules(volume, ijk_to_ras, [seed], bundle, half_extent_mm=10.0)
    stack = result.stacks[0]
    # 2.5 mm slices: -10 .. +10 mm in nine steps, the seed's slice in the middle.
    np.testing.assert_allclose(stack.offsets_mm, np.arange(-4, 5) * 2.5)
    assert stack.plan.step_mm == pytest.approx(2.5) and stack.centre_index == 4 and not stack.plan.dropped_offsets_mm
    assert stack.relevance.shape == (9, 64, 64) and stack.relevance.dtype == np.float32
    assert len(result.batch) == 9  # one pass for every slice
    index = np.array([[0, 0, 0, 1], [63, 0, 0, 1], [17, 40, 0, 1], [31.5, 31.5, 0, 1]], dtype=float)
    for k, (offset, item) in enumerate(zip(stack.offsets_mm, stack.explanations)):
        patch = extract_patch(volume, ijk_to_ras, seed + [0.0, 0.0, offset])
        np.testing.assert_array_equal(item.patch_hu, patch.pixels)
        stacked_index = index.copy()
        stacked_index[:, 2] = k
        np.testing.assert_allclose(stacked_index @ stack.stack_to_ras.T, index @ patch.patch_to_ras.T, atol=1e-9)
        np.testing.assert_array_equal(stack.relevance[k], item.relevance)
    np.testing.assert_allclose(stack.stack_to_ras @ [31.5, 31.5, 4, 1], [*seed, 1.0], atol=1e-9)
    assert stack.p_x.shape == stack.p_neg.shape == stack.p_pos.shape == (9,)
    summary = stack.summary()
    assert summary["offsets_mm"] == pytest.approx(list(np.arange(-4, 5) * 2.5))
    assert summary["malignancy_probability"]["G_neg(x)"] == pytest.approx(stack.p_neg.tolist())
    assert summary["centre_slice"] == 4 and summary["slices"] == 9


def test_several_seeds_are_one_pass_split_into_their_stacks(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    seeds = [[0.0, 0.0, 0.0], [10.0, -5.0, 33.0]]  # the second 3.25 mm below the volume's top: +5 mm is beyond
    result = explain_through_nodules(volume, ijk_to_ras, seeds, bundle, half_extent_mm=5.0)
    assert [len(stack) for stack in result.stacks] == [5, 4] and len(result.batch) == 9
    for seed, stack in zip(seeds, result.stacks):
        np.testing.assert_allclose(stack.centre.seed_ras, seed)
        alone = explain(volume, ijk_to_ras, [seed], bundle)[0]
        np.testing.assert_allclose(stack.centre.relevance, alone.relevance, atol=1e-5)


def test_slices_beyond_the_volume_are_dropped_and_said(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume  # slices at S = -37.5 .. 35 mm, 2.5 mm apart
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    result = explain_through_nodules(volume, ijk_to_ras, [[0.0, 0.0, 33.0]], bundle, half_extent_mm=7.5)
    stack = result.stacks[0]
    # 33 + 5 = 38 and 33 + 7.5 lie beyond the last voxel's edge (36.25 mm).
    np.testing.assert_allclose(stack.offsets_mm, [-7.5, -5.0, -2.5, 0.0, 2.5])
    assert stack.centre_index == 3 and stack.plan.dropped_offsets_mm == (5.0, 7.5)
    assert any("+5.0, +7.5 mm along S were not explained" in warning and "-7.5 to +2.5 mm" in warning
               for warning in result.batch.warnings)
    # A stack whose seed's patch is partly outside says so once for the nodule, not once per slice.
    edge = explain_through_nodules(volume, ijk_to_ras, [[55.0, 0.0, 0.0]], bundle, half_extent_mm=5.0)
    outside = [warning for warning in edge.batch.warnings if "lies outside the volume" in warning]
    assert len(edge.stacks[0]) == 5 and len(outside) == 1 and outside[0].startswith("Seed 1:")


def test_a_slice_whose_patch_is_mostly_outside_ends_the_stack():
    # A volume tilted 30 degrees about A, the seed near a corner of it: below the seed the patches' centres
    # stay inside while more and more of the patch leaves the volume.
    angle = math.radians(30.0)
    rotation = np.array([[math.cos(angle), 0, -math.sin(angle)], [0, 1, 0], [math.sin(angle), 0, math.cos(angle)]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation
    ijk_to_ras[:3, 3] = -rotation @ [40.0, 40.0, 20.0]
    volume = np.full((41, 81, 81), -800, dtype=np.int16)
    seed = np.array([30.0, 30.0, 0.0])
    plan = plan_stack(volume, ijk_to_ras, seed, half_extent_mm=12.0)
    assert plan.step_mm == pytest.approx(1.0 / math.cos(angle))  # one voxel along k per step along S
    fractions = [patch_outside_fraction(volume.shape, ijk_to_ras, shifted) for shifted in plan.seeds_ras]
    assert max(fractions) <= MOSTLY_OUTSIDE_FRACTION and plan.offsets_mm[0] < 0 < plan.offsets_mm[-1]
    below = seed + [0.0, 0.0, plan.offsets_mm[0] - plan.step_mm]
    assert is_seed_inside(volume, ijk_to_ras, below)
    assert patch_outside_fraction(volume.shape, ijk_to_ras, below) > MOSTLY_OUTSIDE_FRACTION
    assert plan.dropped_offsets_mm[-1] == pytest.approx(plan.offsets_mm[0] - plan.step_mm)
    np.testing.assert_allclose(np.diff(plan.offsets_mm), plan.step_mm)  # contiguous


@pytest.mark.parametrize("spacing_ijk, expected", [
    ((1.5, 1.5, 2.5), 2.5),           # axial: the slice spacing
    ((0.7, 0.7, 0.5), PIXEL_MM),      # thin slices: never finer than the patch's pixels
    ((3.0, 0.8, 1.0), 0.8),           # sagittal (k along R, j along S): the row spacing
])
def test_step_is_the_voxel_spacing_along_s_at_least_the_patch_pixel(spacing_ijk, expected):
    if spacing_ijk == (3.0, 0.8, 1.0):
        matrix = np.eye(4)
        matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = [0.0, 1.0, 0.0], [0.0, 0.0, -0.8], [-3.0, 0.0, 0.0]
    else:
        matrix = np.diag([-spacing_ijk[0], -spacing_ijk[1], spacing_ijk[2], 1.0])
    assert slice_step_mm(matrix) == pytest.approx(expected)


@pytest.mark.parametrize("value", [-1.0, MAX_HALF_EXTENT_MM + 0.5, float("nan"), float("inf"), "ten", None])
def test_half_extent_out_of_range_is_refused_with_its_limits(value, lung_volume):
    volume, ijk_to_ras = lung_volume
    with pytest.raises(HalfExtentError, match=r"from 0 to 40 mm .*got"):
        check_half_extent(value)
    with pytest.raises(HalfExtentError):
        plan_stack(volume, ijk_to_ras, [0.0, 0.0, 0.0], value)
    assert check_half_extent(0) == 0.0 and check_half_extent("12.5") == 12.5


def test_bad_seed_and_step_are_refused_before_inference(lung_volume):
    volume, ijk_to_ras = lung_volume
    with pytest.raises(SeedOutsideVolumeError, match="outside the volume"):
        plan_stack(volume, ijk_to_ras, [0.0, 0.0, 500.0])
    with pytest.raises(ValueError, match="positive distance"):
        plan_stack(volume, ijk_to_ras, [0.0, 0.0, 0.0], step_mm=0.0)
