"""Rendering pieces for synthetic chest CT, shared by the bundled sample CT and the LIDC phantoms.

Everything works in true millimetre geometry: a ``Geometry`` says where each voxel lies (LPS,
direction identity, as an axial CT is stored), and every length below (vessel radius, blur,
texture scale) is in mm so the same call gives the same anatomy at any voxel spacing. All
randomness comes from a caller's seeded ``numpy.random.Generator``.

Intensities are Hounsfield units: air -1000, aerated lung about -850, soft tissue and blood
about +40, ground-glass nodules about -600, solid nodules about +30, calcium and bone > +200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

AIR_HU = -1000.0
LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
VESSEL_HU = 40.0
GROUND_GLASS_HU = -620.0
SOLID_NODULE_HU = 35.0
CALCIFICATION_HU = 650.0
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

# LIDC calcification ratings (LIDC-IDRI reader instructions).
CALCIFICATION_POPCORN, CALCIFICATION_LAMINATED, CALCIFICATION_SOLID = 1, 2, 3
CALCIFICATION_NON_CENTRAL, CALCIFICATION_CENTRAL, CALCIFICATION_ABSENT = 4, 5, 6


@dataclass(frozen=True)
class Geometry:
    """An axial grid: voxel (i, j, k) lies at origin_lps + (i, j, k) * spacing_ijk (LPS mm)."""

    shape_kji: Tuple[int, int, int]
    spacing_ijk: Tuple[float, float, float]
    origin_lps: Tuple[float, float, float]

    @property
    def spacing_kji(self) -> Tuple[float, float, float]:
        return tuple(float(s) for s in self.spacing_ijk[::-1])

    def ijk_to_lps(self) -> np.ndarray:
        matrix = np.diag([*map(float, self.spacing_ijk), 1.0])
        matrix[:3, 3] = self.origin_lps
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """Slicer's IJK-to-RAS matrix (LPS with the first two axes flipped)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    def lps_to_continuous_ijk(self, points_lps: np.ndarray) -> np.ndarray:
        points = np.asarray(points_lps, dtype=float)
        return (points - np.asarray(self.origin_lps)) / np.asarray(self.spacing_ijk, dtype=float)

    def lps_coordinates(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) LPS coordinates, shaped [K,1,1], [1,J,1], [1,1,I]."""
        k, j, i = (np.arange(n, dtype=np.float32) for n in self.shape_kji)
        x = self.origin_lps[0] + i * self.spacing_ijk[0]
        y = self.origin_lps[1] + j * self.spacing_ijk[1]
        z = self.origin_lps[2] + k * self.spacing_ijk[2]
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def contains_lps(self, points_lps: np.ndarray) -> np.ndarray:
        ijk = self.lps_to_continuous_ijk(points_lps)
        upper = np.array(self.shape_kji[::-1], dtype=float) - 1.0
        return np.all((ijk >= 0.0) & (ijk <= upper), axis=-1)


def lps_to_ras(points: Sequence[float]) -> List[float]:
    """LPS and RAS differ by the sign of the first two axes."""
    x, y, z = (float(v) for v in points)
    return [-x, -y, z]


def smooth_noise(shape: Sequence[int], spacing_kji: Sequence[float], scale_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``scale_mm``."""
    white = rng.standard_normal(tuple(shape), dtype=np.float32)
    sigma = [scale_mm / s for s in spacing_kji]
    field = ndimage.gaussian_filter(white, sigma=sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def lung_parenchyma(shape: Sequence[int], spacing_kji: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Aerated lung: -850 HU with fine (2 mm) and coarse (8 mm) smooth texture."""
    fine = smooth_noise(shape, spacing_kji, 2.0, rng)
    coarse = smooth_noise(shape, spacing_kji, 8.0, rng)
    return (LUNG_HU + 18.0 * fine + 12.0 * coarse).astype(np.float32)


@dataclass
class VesselRoot:
    """Where a vessel tree starts: position (LPS mm), unit direction and radius (mm)."""

    position_lps: Sequence[float]
    direction: Sequence[float]
    radius_mm: float


def vessel_centrelines(
    roots: Sequence[VesselRoot],
    inside: Callable[[np.ndarray], bool],
    rng: np.random.Generator,
    step_mm: float = 0.5,
    branch_probability_per_mm: float = 0.05,
    taper_per_mm: float = 0.012,
    min_radius_mm: float = 0.4,
    max_points: int = 200_000,
) -> Tuple[np.ndarray, np.ndarray]:
    """Branching random-walk trees: centreline points (LPS mm, [N, 3]) and their radii ([N]).

    Each branch wanders smoothly, thins as it goes, and now and then splits into a thinner
    child leaving at 25-60 degrees, the way pulmonary vessels fan out from the hilum. A branch
    ends when it leaves ``inside`` or becomes thinner than ``min_radius_mm``.
    """
    points: List[np.ndarray] = []
    radii: List[float] = []
    stack = [(np.asarray(r.position_lps, float), _unit(np.asarray(r.direction, float)), float(r.radius_mm)) for r in roots]
    while stack and len(points) < max_points:
        position, direction, radius = stack.pop()
        while radius >= min_radius_mm and len(points) < max_points:
            if not inside(position):
                break
            points.append(position.copy())
            radii.append(radius)
            direction = _unit(direction + rng.normal(0.0, 0.12 * np.sqrt(step_mm), 3))
            position = position + step_mm * direction
            radius *= (1.0 - taper_per_mm) ** step_mm
            if rng.random() < branch_probability_per_mm * step_mm:
                child_direction = _turn(direction, np.deg2rad(rng.uniform(25.0, 60.0)), rng)
                stack.append((position.copy(), child_direction, radius * rng.uniform(0.6, 0.8)))
                radius *= 0.9
    if not points:
        return np.zeros((0, 3)), np.zeros(0)
    return np.array(points), np.array(radii)


def tube_fraction(geometry: Geometry, points_lps: np.ndarray, radii_mm: np.ndarray) -> np.ndarray:
    """Fraction (0..1) of each voxel covered by tubes of the given radii around centreline points.

    The distance to the nearest centreline voxel (exact Euclidean, in mm) is compared with that
    point's radius; a half-voxel ramp gives the partial-volume edge.
    """
    centre = np.zeros(geometry.shape_kji, dtype=bool)
    radius_at = np.zeros(geometry.shape_kji, dtype=np.float32)
    if len(points_lps):
        ijk = np.rint(geometry.lps_to_continuous_ijk(points_lps)).astype(np.int64)
        upper = np.array(geometry.shape_kji[::-1]) - 1
        keep = np.all((ijk >= 0) & (ijk <= upper), axis=1)
        ijk, radii = ijk[keep], np.asarray(radii_mm, dtype=np.float32)[keep]
        # Thicker radius wins where branches share a voxel: write in increasing radius order.
        order = np.argsort(radii, kind="stable")
        centre[ijk[order, 2], ijk[order, 1], ijk[order, 0]] = True
        radius_at[ijk[order, 2], ijk[order, 1], ijk[order, 0]] = radii[order]
    if not centre.any():
        return np.zeros(geometry.shape_kji, dtype=np.float32)
    distance, nearest = ndimage.distance_transform_edt(~centre, sampling=geometry.spacing_kji, return_indices=True)
    nearest_radius = radius_at[nearest[0], nearest[1], nearest[2]]
    ramp = 0.5 * min(geometry.spacing_ijk)
    return np.clip((nearest_radius - distance) / ramp + 0.5, 0.0, 1.0).astype(np.float32)


def paint_vessels(volume: np.ndarray, fraction: np.ndarray, region: Optional[np.ndarray] = None) -> None:
    """Blend blood-density vessels into ``volume`` in place (only inside ``region`` if given)."""
    if region is not None:
        fraction = fraction * region
    volume += fraction * (VESSEL_HU - volume)


def solid_fraction_for_texture(texture_rating: float) -> float:
    """Fraction of the nodule that is solid for an LIDC texture rating (1 non-solid .. 5 solid)."""
    return float(np.interp(texture_rating, [1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.25, 0.5, 0.8, 1.0]))


def paint_nodule(
    volume: np.ndarray,
    mask: np.ndarray,
    spacing_kji: Sequence[float],
    texture_rating: float,
    calcification_rating: Optional[int],
    rng: np.random.Generator,
) -> None:
    """Fill the nodule ``mask`` into ``volume`` in place.

    Texture decides how much of the nodule is solid: the deepest part (distance from the
    nodule's border) is solid (about +35 HU), the rest ground glass (about -620 HU), so a
    part-solid nodule has a solid core in a ground-glass halo. Vessels already in the volume
    stay visible through ground glass (the brighter value wins). Calcification follows the LIDC
    rating: popcorn, laminated, solid, non-central, central or absent.
    """
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("The nodule mask is empty.")
    depth = ndimage.distance_transform_edt(mask, sampling=spacing_kji).astype(np.float32)
    inside_depth = depth[mask]
    solid_fraction = solid_fraction_for_texture(texture_rating)
    if solid_fraction >= 1.0:
        solid = mask
    elif solid_fraction <= 0.0:
        solid = np.zeros_like(mask)
    else:
        solid = mask & (depth >= np.quantile(inside_depth, 1.0 - solid_fraction))
    grain = smooth_noise(mask.shape, spacing_kji, 1.2, rng)
    nodule_hu = np.where(solid, SOLID_NODULE_HU + 20.0 * grain, GROUND_GLASS_HU + 50.0 * grain)
    volume[mask] = np.maximum(volume[mask], nodule_hu[mask])
    calcified = calcification_mask(mask, depth, spacing_kji, calcification_rating, rng)
    volume[calcified] = CALCIFICATION_HU + 60.0 * grain[calcified]


def calcification_mask(
    mask: np.ndarray,
    depth_mm: np.ndarray,
    spacing_kji: Sequence[float],
    rating: Optional[int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Where the nodule is calcified, for an LIDC calcification rating (6 or None: nowhere)."""
    if rating is None or rating == CALCIFICATION_ABSENT:
        return np.zeros_like(mask)
    max_depth = float(depth_mm.max())
    if rating == CALCIFICATION_SOLID:
        return mask.copy()
    if rating == CALCIFICATION_CENTRAL:
        return mask & (depth_mm >= 0.6 * max_depth)
    if rating == CALCIFICATION_LAMINATED:
        # Concentric shells about a third of the nodule's depth apart, plus a central nidus.
        period = max(max_depth / 2.5, 2.0 * max(spacing_kji))
        shells = np.cos(2.0 * np.pi * depth_mm / period) > 0.4
        return mask & (depth_mm > 0.0) & (shells | (depth_mm >= 0.8 * max_depth))
    if rating in (CALCIFICATION_POPCORN, CALCIFICATION_NON_CENTRAL):
        blob_count, blob_fraction = (5, 0.22) if rating == CALCIFICATION_POPCORN else (1, 0.4)
        candidates = np.argwhere(mask & (depth_mm >= 0.3 * max_depth) & (depth_mm <= 0.8 * max_depth))
        if len(candidates) == 0:
            candidates = np.argwhere(mask)
        centres = candidates[rng.choice(len(candidates), size=min(blob_count, len(candidates)), replace=False)]
        radius = max(blob_fraction * max_depth, max(spacing_kji))
        blobs = np.zeros_like(mask)
        blobs[tuple(centres.T)] = True
        distance = ndimage.distance_transform_edt(~blobs, sampling=spacing_kji)
        return mask & (distance <= radius)
    raise ValueError(f"Unknown LIDC calcification rating {rating!r}; expected 1..6.")


def scanner_blur(volume: np.ndarray, spacing_kji: Sequence[float], fwhm_mm: Sequence[float]) -> np.ndarray:
    """The scanner's point-spread function as a Gaussian of the given FWHM per axis (k, j, i) in mm."""
    sigma = [f / FWHM_PER_SIGMA / s for f, s in zip(fwhm_mm, spacing_kji)]
    return ndimage.gaussian_filter(volume, sigma=sigma, mode="nearest")


def scanner_noise(shape: Sequence[int], spacing_kji: Sequence[float], std_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Quantum noise: Gaussian, slightly correlated in-plane (0.5 mm) as a reconstruction kernel makes it."""
    white = rng.standard_normal(tuple(shape), dtype=np.float32)
    correlated = ndimage.gaussian_filter(white, sigma=[0.0, 0.5 / spacing_kji[1], 0.5 / spacing_kji[2]], mode="wrap")
    return std_hu * correlated / max(float(correlated.std()), 1e-6)


def to_int16_hu(volume: np.ndarray) -> np.ndarray:
    """Round to the int16 range a CT scanner stores (-1024 .. 3071 HU)."""
    return np.clip(np.rint(volume), -1024, 3071).astype(np.int16)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _turn(direction: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at ``angle`` from ``direction``, about a random perpendicular axis."""
    perpendicular = _unit(np.cross(direction, rng.normal(size=3)))
    return _unit(np.cos(angle) * direction + np.sin(angle) * perpendicular)
