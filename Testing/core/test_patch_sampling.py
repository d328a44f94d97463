"""The patch sampler against an independent SimpleITK resample, and its geometry conventions."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from CycleGANExplainLib.patch_sampling import (
    OUTSIDE_HU,
    InvalidVolumeError,
    SeedOutsideVolumeError,
    extract_patch,
    patch_to_ras_matrix,
)
from CycleGANExplainLib.volume_io import LPS_TO_RAS, image_from_array, ijk_to_ras_of

SPACING = 45.0 / 64


def oblique_geometry(spacing, origin_ras, rotation_deg, flips=(1, 1, 1)) -> np.ndarray:
    """IJK-to-RAS of a volume rotated about an arbitrary axis, with optional axis flips."""
    rotation = Rotation.from_rotvec(np.deg2rad(rotation_deg) * np.array([0.3, -0.5, 0.81]) / 1.0).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(np.array(spacing) * np.array(flips))
    matrix[:3, 3] = origin_ras
    return matrix


def smooth_random_volume(shape, seed=0) -> np.ndarray:
    """Structure at several scales so that interpolation errors would show."""
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.normal(size=shape), sigma=1.5)
    return (noise / noise.std() * 300.0 - 400.0).astype(np.float32)


def simpleitk_reference_patch(volume_kji, ijk_to_ras, seed_ras) -> np.ndarray:
    """The same patch by SimpleITK's linear resampler onto the patch grid (LPS)."""
    image = image_from_array(volume_kji, ijk_to_ras)
    patch_to_lps = LPS_TO_RAS @ patch_to_ras_matrix(seed_ras)
    reference = sitk.Image(64, 64, 1, sitk.sitkFloat32)
    spacing = np.linalg.norm(patch_to_lps[:3, :3], axis=0)
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection((patch_to_lps[:3, :3] / spacing).flatten().tolist())
    reference.SetOrigin(patch_to_lps[:3, 3].tolist())
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, OUTSIDE_HU, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)[0]


@pytest.mark.parametrize(
    "spacing, rotation_deg, flips",
    [
        ((0.7, 0.7, 2.5), 0.0, (1, 1, 1)),  # axial, anisotropic
        ((0.8, 0.9, 1.25), 23.0, (1, 1, 1)),  # oblique
        ((1.1, 0.6, 2.0), 61.0, (-1, 1, -1)),  # oblique and flipped
        ((0.9, 0.9, 3.0), 90.0, (1, -1, 1)),  # rotated so volume slices are not axial
    ],
)
def test_matches_simpleitk_resample_on_oblique_volumes(spacing, rotation_deg, flips):
    volume = smooth_random_volume((40, 70, 60), seed=int(rotation_deg))
    ijk_to_ras = oblique_geometry(spacing, (12.0, -30.0, 105.0), rotation_deg, flips)
    centre_ijk = np.array([30.0, 35.0, 20.0, 1.0])
    for offset in ([0, 0, 0], [3.3, -2.1, 0.37], [-7.0, 4.0, 1.5]):
        seed = (ijk_to_ras @ centre_ijk)[:3] + np.array(offset)
        patch = extract_patch(volume, ijk_to_ras, seed)
        reference = simpleitk_reference_patch(volume, ijk_to_ras, seed)
        assert patch.pixels.shape == (64, 64) and patch.pixels.dtype == np.float32
        # ITK's buffer test is half-open at the far edge; compare away from the volume's boundary.
        both_inside = (patch.pixels != OUTSIDE_HU) & (reference != OUTSIDE_HU)
        assert both_inside.mean() > 0.5
        np.testing.assert_allclose(patch.pixels[both_inside], reference[both_inside], atol=0.5)
        assert abs((patch.pixels == OUTSIDE_HU).mean() - (reference == OUTSIDE_HU).mean()) < 0.01


def gaussian_dot_volume(ijk_to_ras, shape, centre_ras, sigma_mm=1.2):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    ras = ijk @ ijk_to_ras.T
    squared = np.sum((ras[..., :3] - centre_ras) ** 2, axis=-1)
    return (1000.0 * np.exp(-squared / (2 * sigma_mm**2)) - 1000.0).astype(np.float32)


def weighted_centroid(pixels) -> np.ndarray:
    weights = pixels - pixels.min()
    rows, columns = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    return np.array([(weights * rows).sum(), (weights * columns).sum()]) / weights.sum()


@pytest.mark.parametrize("rotation_deg, flips", [(0.0, (1, 1, 1)), (37.0, (-1, 1, -1))])
def test_bright_dot_lands_at_centre_and_axes_follow_the_radiological_view(rotation_deg, flips):
    ijk_to_ras = oblique_geometry((0.5, 0.5, 0.5), (-20.0, 10.0, 40.0), rotation_deg, flips)
    shape = (90, 90, 90)
    centre = (ijk_to_ras @ np.array([45.0, 45.0, 45.0, 1.0]))[:3]
    dot = centre + np.array([0.13, -0.21, 0.07])  # not on a voxel centre
    volume = gaussian_dot_volume(ijk_to_ras, shape, dot)

    at_dot = extract_patch(volume, ijk_to_ras, dot)
    np.testing.assert_allclose(weighted_centroid(at_dot.pixels), [31.5, 31.5], atol=0.05)

    # Seed 8 mm to the patient's right of and 6 mm anterior to the dot: the dot then lies towards
    # the patient's left (increasing column) and posterior (increasing row) of the centre.
    seed = dot + np.array([8.0, 6.0, 0.0])
    shifted = extract_patch(volume, ijk_to_ras, seed)
    np.testing.assert_allclose(weighted_centroid(shifted.pixels), [31.5 + 6 / SPACING, 31.5 + 8 / SPACING], atol=0.1)


def test_seed_between_slices_interpolates_linearly_along_the_slice_axis():
    volume = np.repeat(np.arange(10, dtype=np.float32)[:, None, None] * 100.0, 50, axis=1).repeat(50, axis=2)
    ijk_to_ras = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    seed = ijk_to_ras @ np.array([25.0, 25.0, 3.4, 1.0])
    patch = extract_patch(volume, ijk_to_ras, seed[:3])
    inside = patch.pixels != OUTSIDE_HU
    np.testing.assert_allclose(patch.pixels[inside], 340.0, atol=1e-3)


def test_patch_geometry_contract():
    seed = np.array([10.0, -20.0, 30.0])
    matrix = patch_to_ras_matrix(seed)
    np.testing.assert_allclose(matrix @ [31.5, 31.5, 0, 1], [*seed, 1.0], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, 0], [-SPACING, 0, 0])  # columns towards patient left
    np.testing.assert_allclose(matrix[:3, 1], [0, -SPACING, 0])  # rows towards posterior
    np.testing.assert_allclose(matrix[:3, 2], [0, 0, SPACING])
    assert np.linalg.det(matrix[:3, :3]) > 0


def test_outside_samples_are_air_and_their_fraction_is_reported(lung_volume):
    volume, ijk_to_ras = lung_volume
    # Voxel centres run from R = 60 (i = 0) down to R = -58.5 (i = 79); the volume's edge is
    # half a voxel beyond: R = 60.75. A seed on that edge leaves half the columns outside.
    seed = np.array([60.75 - 1e-6, 0.0, 0.0])
    patch = extract_patch(volume, ijk_to_ras, seed)
    assert patch.outside_fraction == pytest.approx(0.5, abs=1 / 64)
    assert np.all(patch.pixels[:, :31] == OUTSIDE_HU)
    assert np.all(patch.pixels[:, 33:] > -1000.0 + 50)


def test_seed_outside_volume_is_refused_with_its_coordinates(lung_volume):
    volume, ijk_to_ras = lung_volume
    with pytest.raises(SeedOutsideVolumeError, match=r"\(R, A, S\) = \(0\.0, 0\.0, 200\.0\) mm lies outside"):
        extract_patch(volume, ijk_to_ras, [0.0, 0.0, 200.0])
    with pytest.raises(SeedOutsideVolumeError, match="not a finite"):
        extract_patch(volume, ijk_to_ras, [np.nan, 0.0, 0.0])


def test_non_3d_input_is_refused(lung_volume):
    volume, ijk_to_ras = lung_volume
    with pytest.raises(InvalidVolumeError, match="2 dimension"):
        extract_patch(volume[0], ijk_to_ras, [0, 0, 0])
    with pytest.raises(InvalidVolumeError, match="single slice"):
        extract_patch(volume[:1], ijk_to_ras, [0, 0, -37.5])
    with pytest.raises(InvalidVolumeError, match="not an invertible"):
        extract_patch(volume, np.zeros((4, 4)), [0, 0, 0])


def test_ijk_to_ras_of_simpleitk_geometry_matches_slicer_convention():
    image = sitk.Image(10, 12, 14, sitk.sitkInt16)
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((-100.0, -120.0, 50.0))  # LPS
    matrix = ijk_to_ras_of(image)
    # Index (0, 0, 0) is at LPS (-100, -120, 50) = RAS (100, 120, 50); +i goes to +L = -R.
    np.testing.assert_allclose(matrix @ [0, 0, 0, 1], [100.0, 120.0, 50.0, 1.0])
    np.testing.assert_allclose(matrix @ [1, 0, 0, 1], [100.0 - 0.7, 120.0, 50.0, 1.0])
