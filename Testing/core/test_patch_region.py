"""patch_sampling.patch_region: the part of a volume sent to the explanation process gives the same
patches as the whole volume, outside fractions included, for any orientation and near every edge."""

from __future__ import annotations

import numpy as np
import pytest

from CycleGANExplainLib.patch_sampling import extract_patch, is_seed_inside, patch_region

OBLIQUE = np.array([[-0.7, 0.1, 0.0, 30.0], [0.05, -0.7, 0.2, 20.0], [0.0, 0.3, 2.5, -40.0], [0.0, 0.0, 0.0, 1.0]])
AXIAL = np.array([[-0.8, 0, 0, 30.0], [0, -0.8, 0, 30.0], [0, 0, 2.0, 0.0], [0, 0, 0, 1.0]])


@pytest.mark.parametrize("ijk_to_ras", [OBLIQUE, AXIAL], ids=["oblique", "axial"])
@pytest.mark.parametrize("seed_ijk", [(45, 50, 20), (2, 3, 1), (88, 97, 38), (45, 50, 0), (45, 50, 39)],
                         ids=["centre", "low corner", "high corner", "first slice", "last slice"])
def test_the_region_gives_the_same_patches_as_the_volume(ijk_to_ras, seed_ijk):
    volume = np.random.default_rng(0).normal(-500, 300, (40, 100, 90)).astype(np.int16)
    seeds = [(ijk_to_ras @ [*seed_ijk, 1.0])[:3], (ijk_to_ras @ [seed_ijk[0], seed_ijk[1] + 2, seed_ijk[2], 1.0])[:3]]
    seeds = [seed for seed in seeds if is_seed_inside(volume, ijk_to_ras, seed)]
    region, region_to_ras = patch_region(volume, ijk_to_ras, seeds)
    assert region.size < volume.size / 4
    for seed in seeds:
        whole, part = extract_patch(volume, ijk_to_ras, seed), extract_patch(region, region_to_ras, seed)
        np.testing.assert_allclose(part.pixels, whole.pixels, atol=1e-3)
        np.testing.assert_allclose(part.patch_to_ras, whole.patch_to_ras)
        assert part.outside_fraction == whole.outside_fraction
