"""Several nodules' stacks as one overlay volume (nodule_stack.combine_stacks): where each stack lands, what
wins where two overlap, and what is refused. Real stacks: the production explain path with a tiny real bundle."""

from __future__ import annotations

import numpy as np
import pytest

from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.nodule_stack import combine_stacks, explain_through_nodules, plan_stacks, stack_seeds


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle, "cpu", allow_unknown=True)


def voxel_ras(combined) -> np.ndarray:
    """RAS of every voxel of the combined volume [slices, rows, columns, 3]."""
    k, j, i = np.indices(combined.relevance.shape)
    index = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (index @ combined.ijk_to_ras.T)[..., :3]


def stack_region(combined, stack) -> tuple:
    """The combined volume's region holding ``stack`` (its first voxel's nearest grid voxel) and that voxel's
    distance from the grid voxel, in voxels."""
    first = np.linalg.solve(combined.ijk_to_ras, np.append(stack.stack_to_ras[:3, 3], 1.0))[:3]
    start = np.rint(first).astype(int)
    region = tuple(slice(s, s + n) for s, n in zip(start[::-1], stack.relevance.shape))
    return region, np.abs(first - start)


def test_one_stack_is_its_own_volume(lung_volume, bundle):
    volume, ijk_to_ras = lung_volume
    stack = explain_through_nodules(volume, ijk_to_ras, [[-4.0, 6.0, 0.3]], bundle, half_extent_mm=5.0).stacks[0]
    combined = combine_stacks([stack])
    np.testing.assert_array_equal(combined.relevance, stack.relevance)
    np.testing.assert_allclose(combined.ijk_to_ras, stack.stack_to_ras, atol=1e-12)
    assert (combined.owner == 0).all()


def test_stacks_apart_keep_their_values_and_lie_within_half_a_voxel(lung_volume, bundle):
    volume, ijk_to_ras = lung_volume
    # 1.3 mm along S: not a whole step (2.5 mm), so the second stack is placed to the nearest slice.
    seeds = [[-30.0, 20.0, 0.3], [30.0, -20.0, 1.6]]
    first, second = explain_through_nodules(volume, ijk_to_ras, seeds, bundle, half_extent_mm=5.0).stacks
    combined = combine_stacks([first, second])  # the reference: the last stack
    region, error = stack_region(combined, second)
    assert error.max() < 1e-9  # the reference stack lands exactly on its patches
    np.testing.assert_array_equal(combined.relevance[region], second.relevance)
    region, error = stack_region(combined, first)
    assert error.max() <= 0.5 + 1e-9 and error[2] == pytest.approx(0.48, abs=1e-6)  # 1.2 mm of a 2.5 mm step
    np.testing.assert_array_equal(combined.relevance[region], first.relevance)
    assert np.count_nonzero(combined.owner == 0) == first.relevance.size
    assert np.count_nonzero(combined.owner == 1) == second.relevance.size
    assert not combined.relevance[combined.owner < 0].any()
    # The grid is the box around both: 60 mm apart in R and 40 mm in A, one more slice for the shift along S.
    assert combined.relevance.shape[0] == len(first) + 1
    assert combined.relevance.shape[2] == round(60.0 / (45.0 / 64)) + 64


def test_where_stacks_overlap_the_nearer_seed_wins(lung_volume, bundle):
    volume, ijk_to_ras = lung_volume
    seeds = np.array([[-4.0, 6.0, 0.3], [12.0, -2.0, 5.3], [-20.0, 0.0, -4.7]])  # patches 45 mm wide: they overlap
    stacks = explain_through_nodules(volume, ijk_to_ras, seeds, bundle, half_extent_mm=7.5).stacks
    combined = combine_stacks(stacks, reference=0)
    ras = voxel_ras(combined)
    covered = np.zeros((len(stacks),) + combined.relevance.shape, dtype=bool)
    for index, stack in enumerate(stacks):
        region, _ = stack_region(combined, stack)
        covered[index][region] = True
        shown = combined.owner[region] == index
        np.testing.assert_array_equal(combined.relevance[region][shown], stack.relevance[shown])
    assert ((combined.owner >= 0) == covered.any(axis=0)).all()
    assert np.count_nonzero(covered.sum(axis=0) > 1) > 10_000  # the case this test is about
    distances = np.linalg.norm(ras[None] - seeds[:, None, None, None, :], axis=-1)
    distances[~covered] = np.inf
    owned = combined.owner >= 0
    np.testing.assert_array_equal(combined.owner[owned], np.argmin(distances, axis=0)[owned])
    for index, seed in enumerate(seeds):  # each seed's own voxel shows its own map
        at_seed = tuple(np.rint(np.linalg.solve(combined.ijk_to_ras, np.append(seed, 1.0))[:3]).astype(int)[::-1])
        assert combined.owner[at_seed] == index


def test_stacks_of_other_grids_or_none_are_refused(lung_volume, bundle):
    volume, ijk_to_ras = lung_volume
    stack = explain_through_nodules(volume, ijk_to_ras, [[-4.0, 6.0, 0.3]], bundle, half_extent_mm=2.5).stacks[0]
    finer = np.array(ijk_to_ras, dtype=float)
    finer[2, 2] = 1.25  # another volume: its slices half as far apart
    other = explain_through_nodules(volume, finer, [[-4.0, 6.0, -15.0]], bundle, half_extent_mm=2.5).stacks[0]
    with pytest.raises(ValueError, match=r"Stack 2 lies on other axes or spacings than stack 1"):
        combine_stacks([stack, other], reference=0)
    with pytest.raises(ValueError, match="No stack to combine"):
        combine_stacks([])


def test_plan_stacks_is_every_seeds_plan_and_its_seeds_in_order(lung_volume):
    volume, ijk_to_ras = lung_volume
    plans = plan_stacks(volume, ijk_to_ras, [[-4.0, 6.0, 0.3], [12.0, -2.0, 5.3]], half_extent_mm=5.0)
    assert [len(plan) for plan in plans] == [5, 5]
    seeds = stack_seeds(plans)
    np.testing.assert_allclose(seeds[:, 2], np.r_[0.3 + np.arange(-2, 3) * 2.5, 5.3 + np.arange(-2, 3) * 2.5])
    with pytest.raises(ValueError, match=r"non-empty list of \(R, A, S\)"):
        plan_stacks(volume, ijk_to_ras, [])
