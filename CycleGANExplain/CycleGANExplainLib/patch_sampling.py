"""The one patch sampler (docs/architecture.md, contract 1).

Used by the Slicer module, the command line and training-data preparation alike, so that a
model always sees patches cut exactly the way it was trained on.

The patch lies in the patient's axial plane through the seed, whatever the volume's orientation:
columns run towards the patient's left, rows towards posterior (the radiological axial view),
the seed sits at the continuous pixel index (31.5, 31.5) and the pixel spacing is
``extent_mm / size_px``. Values are interpolated linearly in all three volume axes.

Interpolation is written with NumPy rather than SciPy or VTK on purpose: NumPy is the only
array library guaranteed in Slicer's Python, in the command line and in training, and the code
is small. Tests compare it against SimpleITK's linear resampler (an independent implementation).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

PATCH_SIZE_PX = 64
PATCH_EXTENT_MM = 45.0
OUTSIDE_HU = -1000.0

# Direction cosines of the patch axes in RAS: column index -> patient left (-R),
# row index -> posterior (-A), the (single) slice axis -> superior.
_PATCH_DIRECTIONS_RAS = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).T


class Patch(NamedTuple):
    """An axial patch and where it lies in the patient."""

    pixels: np.ndarray
    """float32 [size_px, size_px] in Hounsfield units, indexed [row, column]."""
    patch_to_ras: np.ndarray
    """4x4 matrix from the patch's (column, row, 0) index to RAS millimetres."""
    outside_fraction: float
    """Fraction of the patch's pixels that fell outside the volume (set to OUTSIDE_HU)."""


class SeedOutsideVolumeError(ValueError):
    """The seed point does not lie inside the volume."""


class InvalidVolumeError(ValueError):
    """The array or its geometry cannot be a 3D image."""


def patch_to_ras_matrix(
    seed_ras: Sequence[float], size_px: int = PATCH_SIZE_PX, extent_mm: float = PATCH_EXTENT_MM
) -> np.ndarray:
    """4x4 matrix mapping patch index (column, row, slice) to RAS, centred on the seed.

    The slice axis gets the in-plane spacing so the patch is a cube-voxel, one-slice volume.
    """
    spacing = extent_mm / size_px
    centre_index = (size_px - 1) / 2.0
    directions = _PATCH_DIRECTIONS_RAS * spacing
    matrix = np.eye(4)
    matrix[:3, :3] = directions
    matrix[:3, 3] = np.asarray(seed_ras, dtype=float) - directions @ np.array(
        [centre_index, centre_index, 0.0]
    )
    return matrix


def validate_volume_geometry(volume_kji: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """Raise InvalidVolumeError unless the array is a 3D image with an invertible geometry."""
    if volume_kji.ndim != 3:
        raise InvalidVolumeError(
            f"Expected a 3D volume, got an array with {volume_kji.ndim} dimension(s)."
        )
    if min(volume_kji.shape) < 2:
        raise InvalidVolumeError(
            "Expected a 3D volume, got a single slice or line "
            f"(shape {tuple(volume_kji.shape)} as slice, row, column); "
            "load the whole CT series, not one image."
        )
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InvalidVolumeError("The volume's IJK-to-RAS matrix is not an invertible 4x4 matrix.")


def ras_to_continuous_ijk(ijk_to_ras: np.ndarray, points_ras: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) index of RAS points, shape [..., 3] in and out."""
    ras_to_ijk = np.linalg.inv(np.asarray(ijk_to_ras, dtype=float))
    points = np.asarray(points_ras, dtype=float)
    return points @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]


def inside_volume_mask(shape_kji: Sequence[int], ijk: np.ndarray) -> np.ndarray:
    """True where a continuous index lies inside the volume.

    A voxel covers half a voxel either side of its centre (as in ITK), so the volume spans
    [-0.5, n - 0.5] along each axis.
    """
    extent_ijk = np.array(shape_kji[::-1], dtype=float)
    return np.all((ijk >= -0.5) & (ijk <= extent_ijk - 0.5), axis=-1)


def is_seed_inside(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, seed_ras: Sequence[float]) -> bool:
    """Whether the seed lies inside the volume's extent."""
    ijk = ras_to_continuous_ijk(ijk_to_ras, np.asarray(seed_ras, dtype=float)[None, :])
    return bool(inside_volume_mask(volume_kji.shape, ijk)[0])


def _trilinear(volume_kji: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Linear interpolation at continuous indices [..., 3] (i, j, k) with edge replication."""
    shape_ijk = np.array(volume_kji.shape[::-1])
    lower = np.floor(ijk).astype(np.int64)
    weight_upper = ijk - lower
    result = np.zeros(ijk.shape[:-1], dtype=np.float64)
    for corner in range(8):
        offset = np.array([(corner >> axis) & 1 for axis in range(3)])
        index = np.clip(lower + offset, 0, shape_ijk - 1)
        weight = np.prod(np.where(offset == 1, weight_upper, 1.0 - weight_upper), axis=-1)
        result += weight * volume_kji[index[..., 2], index[..., 1], index[..., 0]]
    return result


def require_seed_inside(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, seed_ras: Sequence[float]) -> np.ndarray:
    """The seed as a float array [3]; SeedOutsideVolumeError (one message for every front end) when it
    is not a finite point inside the volume."""
    seed = np.asarray(seed_ras, dtype=float).reshape(3)
    if not np.all(np.isfinite(seed)):
        raise SeedOutsideVolumeError(f"The seed point {seed.tolist()} is not a finite position.")
    if not is_seed_inside(volume_kji, ijk_to_ras, seed):
        raise SeedOutsideVolumeError(
            "The seed point (R, A, S) = ({:.1f}, {:.1f}, {:.1f}) mm lies outside the volume; place it on the "
            "nodule, inside the CT.".format(*seed))
    return seed


def _patch_sample_ijk(ijk_to_ras: np.ndarray, patch_to_ras: np.ndarray, size_px: int) -> np.ndarray:
    """Continuous (i, j, k) volume index of every patch pixel, [rows, columns, 3]."""
    rows, columns = np.meshgrid(np.arange(size_px), np.arange(size_px), indexing="ij")
    patch_index = np.stack([columns, rows, np.zeros_like(rows), np.ones_like(rows)], axis=-1)
    points_ras = patch_index @ patch_to_ras.T
    return ras_to_continuous_ijk(ijk_to_ras, points_ras[..., :3])


def patch_outside_fraction(shape_kji: Sequence[int], ijk_to_ras: np.ndarray, seed_ras: Sequence[float],
                           size_px: int = PATCH_SIZE_PX, extent_mm: float = PATCH_EXTENT_MM) -> float:
    """The fraction of the patch around ``seed_ras`` that ``extract_patch`` would fill with air (the seed
    itself may lie outside), without interpolating a voxel: what deciding which patches to cut needs."""
    ijk = _patch_sample_ijk(ijk_to_ras, patch_to_ras_matrix(seed_ras, size_px, extent_mm), size_px)
    return float(1.0 - inside_volume_mask(shape_kji, ijk).mean())


def extract_patch(
    volume_kji: np.ndarray,
    ijk_to_ras: np.ndarray,
    seed_ras: Sequence[float],
    size_px: int = PATCH_SIZE_PX,
    extent_mm: float = PATCH_EXTENT_MM,
) -> Patch:
    """Cut the axial patch centred on ``seed_ras`` (docs/architecture.md, contract 1).

    Args:
        volume_kji: the image as (slice, row, column), as Slicer's ``arrayFromVolume`` and
            SimpleITK's ``GetArrayFromImage`` return it, in Hounsfield units.
        ijk_to_ras: Slicer's 4x4 IJK-to-RAS matrix of that volume.
        seed_ras: the centre of the patch in RAS millimetres; must lie inside the volume.
        size_px: patch width and height in pixels.
        extent_mm: patch width and height in millimetres.

    Raises:
        InvalidVolumeError: the array is not a 3D image or the matrix is not invertible.
        SeedOutsideVolumeError: the seed is outside the volume.
    """
    volume_kji = np.asarray(volume_kji)
    validate_volume_geometry(volume_kji, ijk_to_ras)
    seed = require_seed_inside(volume_kji, ijk_to_ras, seed_ras)
    patch_to_ras = patch_to_ras_matrix(seed, size_px, extent_mm)
    ijk = _patch_sample_ijk(ijk_to_ras, patch_to_ras, size_px)
    inside = inside_volume_mask(volume_kji.shape, ijk)
    pixels = np.full((size_px, size_px), OUTSIDE_HU, dtype=np.float64)
    pixels[inside] = _trilinear(volume_kji, ijk[inside])
    return Patch(pixels.astype(np.float32), patch_to_ras, float(1.0 - inside.mean()))


def patch_region(
    volume_kji: np.ndarray,
    ijk_to_ras: np.ndarray,
    seeds_ras: Sequence[Sequence[float]],
    size_px: int = PATCH_SIZE_PX,
    extent_mm: float = PATCH_EXTENT_MM,
) -> "tuple[np.ndarray, np.ndarray]":
    """The voxels that the patches around ``seeds_ras`` interpolate from (a copy) and their IJK-to-RAS
    matrix: ``extract_patch`` cuts the same patches from them as from the whole volume, outside
    fractions included. What a worker process is sent instead of the volume.

    The box spans every interpolation neighbour of the patches' samples (their corners bound them:
    the index is affine in the patch index), clipped to the volume, at least two voxels per axis.
    """
    volume_kji = np.asarray(volume_kji)
    validate_volume_geometry(volume_kji, ijk_to_ras)
    last = size_px - 1
    corners = np.array([[0, 0, 0, 1], [last, 0, 0, 1], [0, last, 0, 1], [last, last, 0, 1]], dtype=float)
    ijk = np.concatenate([ras_to_continuous_ijk(ijk_to_ras, (corners @ patch_to_ras_matrix(seed, size_px, extent_mm).T)[:, :3])
                          for seed in np.atleast_2d(np.asarray(seeds_ras, dtype=float))])
    upper_limit = np.array(volume_kji.shape[::-1]) - 1
    lower = np.clip(np.floor(ijk.min(axis=0)).astype(np.int64), 0, upper_limit)
    upper = np.clip(np.floor(ijk.max(axis=0)).astype(np.int64) + 1, 0, upper_limit)
    single = upper == lower  # a single slice (or row) is no 3D volume: widen inwards, which changes no sample
    upper = np.where(single & (upper < upper_limit), upper + 1, upper)
    lower = np.where(single & (upper == lower), lower - 1, lower)
    (i0, j0, k0), (i1, j1, k1) = lower, upper
    voxels = np.ascontiguousarray(volume_kji[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    region_to_ras = np.array(ijk_to_ras, dtype=float)
    region_to_ras[:3, 3] += region_to_ras[:3, :3] @ lower
    return voxels, region_to_ras
