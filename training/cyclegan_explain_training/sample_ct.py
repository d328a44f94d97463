"""The bundled sample CT: a synthetic chest CT with four documented nodules (no patient data).

    python -m cyclegan_explain_training.sample_ct --out CycleGANExplain/CycleGANExplainLib/resources/sample_data

writes ``SyntheticChestCT.nrrd`` (int16 HU, gzip NRRD, LPS geometry of an axial CT: direction
identity, slices ascending towards superior) and ``SyntheticChestCT.json`` (every nodule's
centre in RAS and LPS, its diameter and kind, the volume's geometry, checksums and the command).
The seed is fixed, so the output is the same bytes on every run on the same machine.

The anatomy is deliberately rough (elliptical body, lungs, heart, spine, ribs, trachea): it is
there so the module can be tried and tested on something that looks like a chest, not to train.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import ct_rendering as ct

SEED = 20210501
FIELD_OF_VIEW_MM = 358.4  # in-plane; 256 px at 1.4 mm
AXIAL_EXTENT_MM = 150.0  # 60 slices at 2.5 mm
DEFAULT_IN_PLANE_PX = 256
DEFAULT_SLICES = 60
NOISE_STD_HU = 12.0
NRRD_NAME = "SyntheticChestCT.nrrd"
JSON_NAME = "SyntheticChestCT.json"
COMMAND = "python -m cyclegan_explain_training.sample_ct --out CycleGANExplain/CycleGANExplainLib/resources/sample_data"


@dataclass(frozen=True)
class NoduleSpec:
    nodule_id: str
    kind: str
    centre_lps: Tuple[float, float, float]
    diameter_mm: float
    texture_rating: float  # LIDC 1 (non-solid) .. 5 (solid)
    calcification_rating: Optional[int]  # LIDC 1..6, None = absent
    lobulation: float = 0.0  # relative radius modulation
    spicule_count: int = 0


NODULES: Tuple[NoduleSpec, ...] = (
    NoduleSpec("N1", "small solid", (-85.0, -20.0, 35.0), 6.0, 5, None),
    NoduleSpec("N2", "large spiculated lobulated solid", (85.0, 20.0, -20.0), 20.0, 5, None, lobulation=0.25, spicule_count=12),
    NoduleSpec("N3", "ground-glass (non-solid)", (-75.0, 35.0, -30.0), 12.0, 1, None),
    NoduleSpec("N4", "calcified benign (central calcification)", (75.0, -35.0, 25.0), 8.0, 5, ct.CALCIFICATION_CENTRAL),
)


def sample_geometry(in_plane_px: int = DEFAULT_IN_PLANE_PX, slice_count: int = DEFAULT_SLICES) -> ct.Geometry:
    """A fixed field of view centred on the origin; the voxel count only changes the spacing."""
    spacing = (FIELD_OF_VIEW_MM / in_plane_px, FIELD_OF_VIEW_MM / in_plane_px, AXIAL_EXTENT_MM / slice_count)
    shape = (slice_count, in_plane_px, in_plane_px)
    origin = tuple(-(n - 1) * s / 2.0 for n, s in zip(shape[::-1], spacing))
    return ct.Geometry(shape_kji=shape, spacing_ijk=spacing, origin_lps=origin)


def chest_anatomy(geometry: ct.Geometry, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Body, chest wall, ribs, spine, heart, trachea and two vessel-filled lungs: (HU, lung mask)."""
    z, y, x = geometry.lps_coordinates()  # x towards patient left, y posterior, z superior
    body_radius = np.sqrt((x / 165.0) ** 2 + ((y + 5.0) / 115.0) ** 2)  # 1 at the skin
    volume = np.full(geometry.shape_kji, ct.AIR_HU, dtype=np.float32)
    volume[np.broadcast_to(body_radius <= 1.0, volume.shape)] = -100.0  # subcutaneous fat
    volume[np.broadcast_to(body_radius <= 0.91, volume.shape)] = ct.SOFT_TISSUE_HU  # muscle, organs
    # Ribs: a band inside the chest wall, cut into oblique bars (posterior ends higher).
    rib_band = (body_radius > 0.80) & (body_radius < 0.86)
    ribs = rib_band & (np.cos(2.0 * np.pi * (z - 25.0 * y / 115.0) / 28.0) > 0.55)
    volume[ribs] = 450.0
    spine_body = np.hypot(x, y - 75.0)
    volume[np.broadcast_to(spine_body <= 20.0, volume.shape)] = 700.0  # cortical rim
    volume[np.broadcast_to(spine_body <= 17.0, volume.shape)] = 250.0  # cancellous bone
    canal = np.hypot(x, y - 103.0)
    volume[np.broadcast_to((canal > 8.0) & (canal <= 13.0), volume.shape)] = 500.0
    volume[np.broadcast_to(canal <= 8.0, volume.shape)] = 15.0
    heart = ((x - 20.0) / 60.0) ** 2 + ((y + 30.0) / 50.0) ** 2 + ((z + 45.0) / 55.0) ** 2 <= 1.0
    aorta = np.hypot(x - 22.0, y - 50.0) <= 12.0
    trachea = (np.hypot(x, y + 10.0) <= 9.0) & (z > 30.0)

    lung_scale = np.sqrt(np.clip(1.0 - ((z + 50.0) / 135.0) ** 2, 0.0, None))  # apex tapers
    lungs = np.zeros(geometry.shape_kji, dtype=bool)
    for side in (-1.0, 1.0):
        lungs |= ((x - side * 72.0) / (58.0 * lung_scale + 1e-6)) ** 2 + (y / (82.0 * lung_scale + 1e-6)) ** 2 <= 1.0
    lungs &= (body_radius < 0.78) & ~heart & ~aorta & (spine_body > 24.0)
    parenchyma = ct.lung_parenchyma(geometry.shape_kji, geometry.spacing_kji, rng)
    volume[lungs] = parenchyma[lungs]
    ct.paint_vessels(volume, _lung_vessels(geometry, lungs, rng), region=lungs)
    volume[np.broadcast_to(trachea, volume.shape)] = ct.AIR_HU
    return volume, lungs


def _lung_vessels(geometry: ct.Geometry, lungs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vessel trees fanning out from each hilum into its lung."""

    def inside(position: np.ndarray) -> bool:
        i, j, k = np.rint(geometry.lps_to_continuous_ijk(position)).astype(int)
        nk, nj, ni = lungs.shape
        return 0 <= i < ni and 0 <= j < nj and 0 <= k < nk and bool(lungs[k, j, i])

    # Roots are lung voxels near each hilum, pointing away from it, thicker the closer they are.
    z, y, x = geometry.lps_coordinates()
    roots = []
    for side in (-1.0, 1.0):
        hilum = np.array([side * 25.0, 0.0, -5.0])
        near = lungs & (np.sqrt((x - hilum[0]) ** 2 + (y - hilum[1]) ** 2 + (z - hilum[2]) ** 2) < 55.0)
        candidates = np.argwhere(near)
        for k, j, i in candidates[rng.choice(len(candidates), size=70, replace=False)]:
            start = geometry.origin_lps + np.array([i, j, k]) * np.asarray(geometry.spacing_ijk)
            away = start - hilum
            radius = float(np.clip(4.0 - np.linalg.norm(away) / 25.0, 1.5, 4.0))
            roots.append(ct.VesselRoot(start, away, radius))
    points, radii = ct.vessel_centrelines(roots, inside, rng, taper_per_mm=0.03, branch_probability_per_mm=0.06)
    return ct.tube_fraction(geometry, points, radii)


def nodule_mask(geometry: ct.Geometry, spec: NoduleSpec, rng: np.random.Generator) -> Tuple[Tuple[slice, ...], np.ndarray]:
    """The nodule's voxels in a box around it: (box as slices of the volume, mask in that box).

    A sphere, optionally lobulated (radius raised towards a few random directions) and
    spiculated (thin tapering spikes reaching 5-12 mm beyond the surface).
    """
    radius = spec.diameter_mm / 2.0
    reach = radius * (1.0 + spec.lobulation) + (12.0 if spec.spicule_count else 0.0) + 3.0
    centre = np.asarray(spec.centre_lps, dtype=float)
    lower = np.floor(geometry.lps_to_continuous_ijk(centre - reach)).astype(int)
    upper = np.ceil(geometry.lps_to_continuous_ijk(centre + reach)).astype(int) + 1
    lower = np.maximum(lower, 0)
    upper = np.minimum(upper, np.array(geometry.shape_kji[::-1]))
    box = tuple(slice(lo, hi) for lo, hi in zip(lower[::-1], upper[::-1]))
    k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    offset = np.stack([i, j, k], axis=-1) * np.asarray(geometry.spacing_ijk) + np.asarray(geometry.origin_lps) - centre
    distance = np.linalg.norm(offset, axis=-1)
    direction = offset / np.maximum(distance, 1e-6)[..., None]
    surface = np.full(distance.shape, radius)
    if spec.lobulation:
        lobes = _random_directions(6, rng)
        bumps = np.clip(direction @ lobes.T, 0.0, None) ** 4
        surface = radius * (1.0 - spec.lobulation / 3.0 + spec.lobulation * bumps.sum(axis=-1))
    mask = distance <= surface
    for spike in _random_directions(spec.spicule_count, rng):
        length = radius + rng.uniform(5.0, 12.0)
        along = offset @ spike
        across = np.linalg.norm(offset - along[..., None] * spike, axis=-1)
        width = 0.4 + 1.3 * np.clip(1.0 - along / length, 0.0, 1.0)
        mask |= (along > 0.0) & (along < length) & (across <= width)
    return box, mask


def _random_directions(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def render_sample_ct(
    in_plane_px: int = DEFAULT_IN_PLANE_PX, slice_count: int = DEFAULT_SLICES, seed: int = SEED
) -> Tuple[np.ndarray, ct.Geometry, List[Dict]]:
    """Render the chest with its nodules: (int16 HU volume [k, j, i], geometry, nodule records)."""
    rng = np.random.default_rng(seed)
    geometry = sample_geometry(in_plane_px, slice_count)
    volume, lungs = chest_anatomy(geometry, rng)
    records = []
    for spec in NODULES:
        box, mask = nodule_mask(geometry, spec, rng)
        core = ndimage.binary_dilation(_core_sphere(geometry, box, spec), iterations=1)
        if not np.all(lungs[box][core]):
            raise ValueError(f"Nodule {spec.nodule_id} does not lie inside the lung with a margin; move it.")
        ct.paint_nodule(volume[box], mask, geometry.spacing_kji, spec.texture_rating, spec.calcification_rating, rng)
        voxel_volume = float(np.prod(geometry.spacing_ijk))
        records.append(_nodule_record(spec, float(mask.sum()) * voxel_volume))
    volume = ct.scanner_blur(volume, geometry.spacing_kji, fwhm_mm=(2.0, 1.5, 1.5))
    volume += ct.scanner_noise(geometry.shape_kji, geometry.spacing_kji, NOISE_STD_HU, rng)
    return ct.to_int16_hu(volume), geometry, records


def _core_sphere(geometry: ct.Geometry, box: Tuple[slice, ...], spec: NoduleSpec) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    position = np.stack([i, j, k], axis=-1) * np.asarray(geometry.spacing_ijk) + np.asarray(geometry.origin_lps)
    return np.linalg.norm(position - np.asarray(spec.centre_lps), axis=-1) <= spec.diameter_mm / 2.0


def _nodule_record(spec: NoduleSpec, volume_mm3: float) -> Dict:
    return {
        "id": spec.nodule_id,
        "kind": spec.kind,
        "centre_ras_mm": ct.lps_to_ras(spec.centre_lps),
        "centre_lps_mm": [float(v) for v in spec.centre_lps],
        "diameter_mm": spec.diameter_mm,
        "equivalent_sphere_diameter_mm": round(float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)), 2),
        "lidc_texture_rating": spec.texture_rating,
        "lidc_calcification_rating": spec.calcification_rating or ct.CALCIFICATION_ABSENT,
    }


def to_sitk_image(volume_kji: np.ndarray, geometry: ct.Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(volume_kji)
    image.SetSpacing([float(s) for s in geometry.spacing_ijk])
    image.SetOrigin([float(o) for o in geometry.origin_lps])
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_sample_ct(
    out_dir: Path, in_plane_px: int = DEFAULT_IN_PLANE_PX, slice_count: int = DEFAULT_SLICES, seed: int = SEED
) -> Tuple[Path, Path]:
    """Render and write the NRRD and its JSON description; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    volume, geometry, records = render_sample_ct(in_plane_px, slice_count, seed)
    nrrd_path, json_path = out_dir / NRRD_NAME, out_dir / JSON_NAME
    sitk.WriteImage(to_sitk_image(volume, geometry), str(nrrd_path), useCompression=True)
    description = {
        "description": "Synthetic chest CT rendered by cyclegan_explain_training.sample_ct; no patient data.",
        "command": COMMAND if (in_plane_px, slice_count, seed) == (DEFAULT_IN_PLANE_PX, DEFAULT_SLICES, SEED)
        else f"{COMMAND} --in-plane-px {in_plane_px} --slices {slice_count} --seed {seed}",
        "seed": seed,
        "file": NRRD_NAME,
        "file_sha256": sha256_file(nrrd_path),
        "voxels_sha256": hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest(),
        "size_ijk": list(volume.shape[::-1]),
        "spacing_mm": [round(float(s), 6) for s in geometry.spacing_ijk],
        "origin_lps_mm": [round(float(o), 6) for o in geometry.origin_lps],
        "direction": "identity (LPS axial: i to patient left, j posterior, k superior)",
        "ijk_to_ras": geometry.ijk_to_ras().round(6).tolist(),
        "units": "Hounsfield units, int16",
        "nodules": records,
    }
    json_path.write_text(json.dumps(description, indent=2) + "\n")
    return nrrd_path, json_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the NRRD and JSON")
    parser.add_argument("--in-plane-px", type=int, default=DEFAULT_IN_PLANE_PX)
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    nrrd_path, json_path = write_sample_ct(args.out, args.in_plane_px, args.slices, args.seed)
    print(f"Wrote {nrrd_path} ({nrrd_path.stat().st_size / 1e6:.2f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
