"""Real LIDC-IDRI nodules from a folder of nodule sub-volumes (VOIs), cut into the patch contract.

The folder is laid out as the ML4PM course data (see training/README.md, "Real CT"):

    DIR/split.csv                                    patient_id,split (train | test), by patient
    DIR/data/MetadatabyNoduleMaxVoting.csv           one row per nodule: centre (coordX/Y/Z, LPS mm
                                                     in the VOI's frame), diameter_mm, Diagnosis_value
    DIR/data/VOIs/image/<patient>_R_<nodule>.nii.gz  CT sub-volume in HU
    DIR/data/VOIs/nodule_mask/<same name>            consensus nodule mask on the same grid

Every patch is cut by the core's ``extract_patch`` (the one sampler). Per nodule this gives the
centre view (the plane through the nodule's centre: what evaluation reports), a view with the
seed moved 2 mm in a random in-plane direction (an imprecise click), and for training nodules
planes through up to ``OFF_CENTRE_SLICES`` other slices of the nodule. Each view keeps its mask
patch and a ``valid`` patch marking where the VOI had image data.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from CycleGANExplainLib.patch_sampling import PATCH_SIZE_PX, extract_patch
from CycleGANExplainLib.volume_io import read_volume

from .dataset import CENTRE, OFF_CENTRE, SEED_SHIFTED

METADATA_CSV = Path("data") / "MetadatabyNoduleMaxVoting.csv"
SPLIT_CSV = Path("split.csv")
IMAGE_DIR = Path("data") / "VOIs" / "image"
MASK_DIR = Path("data") / "VOIs" / "nodule_mask"
SEED_SHIFT_MM = 2.0
OFF_CENTRE_SLICES = 4
# The metadata centre agrees with the mask centroid to < 1 mm for 99 % of nodules; where it is
# further off than this (one nodule lies 33 mm off, outside its VOI) the centroid is used.
MAX_CENTRE_OFFSET_MM = 5.0


@dataclass(frozen=True)
class VoiNodule:
    patient_id: str
    nodule_id: str  # "<patient>_R_<nodule>", the VOI file's stem
    label: int  # Diagnosis_value: 1 malignant, 0 benign
    diameter_mm: float
    centre_lps: Tuple[float, float, float]
    split: str


@dataclass
class NoduleView:
    nodule: VoiNodule
    view: str
    image_hu: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    seed_ras: np.ndarray


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (is --voi-dir a folder laid out like lidc-voi?)")
    return path


def rows_of(path: Path, what: str, columns: Sequence[str]) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, row) of a CSV file, refused when it lacks one of ``columns``."""
    with open(_require(path, what), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} (its columns: "
                             f"{', '.join(reader.fieldnames or []) or 'none'}).")
        return [(reader.line_num, row) for row in reader]


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:5])
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{' ...' if len(numbers) > 5 else ''}"


def read_split(voi_dir: Path) -> Dict[str, str]:
    """patient_id -> "train" | "test" from split.csv, refusing any other split name and a patient
    listed in both (the last row would win, putting a test patient into training)."""
    path = voi_dir / SPLIT_CSV
    split: Dict[str, str] = {}
    lines: Dict[str, List[int]] = {}
    unknown: List[int] = []
    for line, row in rows_of(path, "split file", ("patient_id", "split")):
        if row["split"] not in ("train", "test"):
            unknown.append(line)
        if split.setdefault(row["patient_id"], row["split"]) != row["split"]:
            split[row["patient_id"]] = "both"
        lines.setdefault(row["patient_id"], []).append(line)
    if unknown:
        raise ValueError(f"{path} names unknown split(s) at {_lines(unknown)}; expected train or test.")
    both = sorted(patient for patient, name in split.items() if name == "both")
    if both:
        raise ValueError(f"{path} puts {len(both)} patient(s) in both train and test: "
                         + "; ".join(f"{patient} ({_lines(lines[patient])})" for patient in both[:5]) + ".")
    return split


_METADATA_COLUMNS = ("patient_id", "nodule_id", "Diagnosis_value", "diameter_mm", "coordX", "coordY", "coordZ")


def _nodule_of(line: int, row: Dict[str, str], split: str) -> VoiNodule:
    """One metadata row as a nodule; ValueError naming the line when a value is not what it must be."""
    try:
        label = int(row["Diagnosis_value"])
        diameter, *centre = (float(row[column]) for column in ("diameter_mm", "coordX", "coordY", "coordZ"))
        stem = f"{row['patient_id']}_R_{int(row['nodule_id'])}"
    except ValueError as error:
        raise ValueError(f"line {line} of the nodule metadata has a value that is not a number ({error}).") from None
    if label not in (0, 1):
        raise ValueError(f"line {line} of the nodule metadata ({stem}) has Diagnosis_value {label}; labels are 0 "
                         "(benign) or 1 (malignant).")
    if not all(np.isfinite([diameter, *centre])):
        raise ValueError(f"line {line} of the nodule metadata ({stem}) has a non-finite diameter or centre.")
    return VoiNodule(patient_id=row["patient_id"], nodule_id=stem, label=label, diameter_mm=diameter,
                     centre_lps=tuple(centre), split=split)


def read_nodules(voi_dir: Path) -> Tuple[List[VoiNodule], List[str]]:
    """The nodules that have an image, a mask and a split, and the stems left out (with why).
    A nodule listed twice is refused, naming its lines: with opposite labels it has no label, and
    either way it would count twice."""
    voi_dir = Path(voi_dir)
    split = read_split(voi_dir)
    nodules, left_out = [], []
    seen: Dict[str, Tuple[int, int]] = {}
    for line, row in rows_of(voi_dir / METADATA_CSV, "nodule metadata", _METADATA_COLUMNS):
        nodule = _nodule_of(line, row, split.get(row["patient_id"], ""))
        if nodule.nodule_id in seen:
            first_line, first_label = seen[nodule.nodule_id]
            raise ValueError(
                f"{voi_dir / METADATA_CSV} lists nodule {nodule.nodule_id} twice (lines {first_line} and {line}, "
                f"labels {first_label} and {nodule.label}); keep one row per nodule.")
        seen[nodule.nodule_id] = (line, nodule.label)
        stem = nodule.nodule_id
        if not (voi_dir / IMAGE_DIR / f"{stem}.nii.gz").is_file() or not (voi_dir / MASK_DIR / f"{stem}.nii.gz").is_file():
            left_out.append(f"{stem}: no image or mask file")
            continue
        if row["patient_id"] not in split:
            left_out.append(f"{stem}: patient not in split.csv")
            continue
        nodules.append(nodule)
    return nodules, left_out


def _lps_to_ras(point: Sequence[float]) -> np.ndarray:
    return np.array([-point[0], -point[1], point[2]], dtype=float)


def _cut(volume: np.ndarray, mask: np.ndarray, ones: np.ndarray, ijk_to_ras: np.ndarray,
         seed_ras: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = extract_patch(volume, ijk_to_ras, seed_ras).pixels
    mask_patch = extract_patch(mask, ijk_to_ras, seed_ras).pixels >= 0.5
    # Outside the volume the sampler gives -1000: an all-ones volume marks where data was.
    valid = extract_patch(ones, ijk_to_ras, seed_ras).pixels > 0.5
    return image, mask_patch.astype(np.uint8), valid.astype(np.uint8)


@dataclass
class _NoduleVolumes:
    volume: np.ndarray
    mask: np.ndarray
    ones: np.ndarray  # marks where the VOI has data (the sampler gives -1000 HU beyond it)
    ijk_to_ras: np.ndarray
    centre_ras: np.ndarray


def _read_nodule(voi_dir: Path, nodule: VoiNodule) -> _NoduleVolumes:
    """One nodule's image and mask volumes and its centre (RAS)."""
    # The core's reader, as the command line's and the web viewer's: a truncated or damaged file is
    # refused (UnreadableVolumeError, naming it) instead of read with missing slices as 0 HU.
    image = read_volume(voi_dir / IMAGE_DIR / f"{nodule.nodule_id}.nii.gz", max_voxels=None)
    mask_image = read_volume(voi_dir / MASK_DIR / f"{nodule.nodule_id}.nii.gz", max_voxels=None)
    volume = image.volume_kji.astype(np.float32)
    mask = (mask_image.volume_kji > 0).astype(np.float32)
    if mask.shape != volume.shape:
        raise ValueError(f"{nodule.nodule_id}: mask shape {mask.shape} differs from image shape {volume.shape}.")
    ijk_to_ras = image.ijk_to_ras
    centre = _lps_to_ras(nodule.centre_lps)
    if mask.any():
        centroid_kji = np.argwhere(mask > 0).mean(axis=0)
        centroid = (ijk_to_ras @ np.array([*centroid_kji[::-1], 1.0]))[:3]
        if np.linalg.norm(centroid - centre) > MAX_CENTRE_OFFSET_MM:
            centre = centroid
    return _NoduleVolumes(volume, mask, np.ones_like(volume), ijk_to_ras, centre)


def shifted_seed(centre_ras: np.ndarray, angle: float) -> np.ndarray:
    """The seed moved SEED_SHIFT_MM in the axial plane, towards ``angle`` (radians from R): an imprecise click."""
    return centre_ras + SEED_SHIFT_MM * np.array([np.cos(angle), np.sin(angle), 0.0])


def nodule_views(voi_dir: Path, nodule: VoiNodule, rng: np.random.Generator) -> List[NoduleView]:
    """The views of one nodule (centre, seed-shifted and, for training nodules, off-centre)."""
    volumes = _read_nodule(voi_dir, nodule)
    centre = volumes.centre_ras
    seeds = [(CENTRE, centre), (SEED_SHIFTED, shifted_seed(centre, rng.uniform(0.0, 2.0 * np.pi)))]
    if nodule.split == "train":
        seeds += [(OFF_CENTRE, seed) for seed in _off_centre_seeds(volumes.mask, volumes.ijk_to_ras, centre)]
    views = []
    for view, seed in seeds:
        patch, mask_patch, valid = _cut(volumes.volume, volumes.mask, volumes.ones, volumes.ijk_to_ras, seed)
        views.append(NoduleView(nodule, view, patch, mask_patch, valid, seed))
    return views


def redrawn_seed_shifts(voi_dir: Path, nodule_ids: Sequence[str], angles: np.ndarray
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nodules' centre patches [N, H, W] and their seed-shifted patches and valid masks
    [D, N, H, W], the seed moved towards ``angles`` [D, N]: one draw of the shifts per row, each
    VOI read once, every patch cut by the one sampler as ``nodule_views`` cuts it.

    ValueError when the folder lacks some of the nodules (counted, not named: the names hold
    patient identifiers)."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != len(nodule_ids):
        raise ValueError(f"Expected one angle per draw and nodule ({len(nodule_ids)} nodules), got shape "
                         f"{angles.shape}.")
    known = {nodule.nodule_id: nodule for nodule in read_nodules(Path(voi_dir))[0]}
    missing = sum(1 for nodule_id in nodule_ids if nodule_id not in known)
    if missing:
        raise ValueError(f"{voi_dir} lacks {missing} of the {len(nodule_ids)} nodules to redraw (no metadata row, "
                         "image or mask): it is not the folder the dataset was prepared from.")
    size = (len(nodule_ids), PATCH_SIZE_PX, PATCH_SIZE_PX)
    centres = np.empty(size, np.float32)
    images = np.empty((len(angles),) + size, np.float32)
    valid = np.empty((len(angles),) + size, np.uint8)
    for index, nodule_id in enumerate(nodule_ids):
        volumes = _read_nodule(Path(voi_dir), known[nodule_id])
        cut = (volumes.volume, volumes.mask, volumes.ones, volumes.ijk_to_ras)
        centres[index] = _cut(*cut, volumes.centre_ras)[0]
        for draw, angle in enumerate(angles[:, index]):
            patch, _, inside = _cut(*cut, shifted_seed(volumes.centre_ras, angle))
            images[draw, index], valid[draw, index] = patch, inside
    return centres, images, valid


def _off_centre_seeds(mask: np.ndarray, ijk_to_ras: np.ndarray, centre: np.ndarray) -> List[np.ndarray]:
    """Seeds on other slices that cut the nodule: the centre moved along S onto each slice whose
    mask is not empty, at most OFF_CENTRE_SLICES of them spread evenly."""
    slice_z = np.array([(ijk_to_ras @ np.array([0.0, 0.0, k, 1.0]))[2] for k in range(mask.shape[0])])
    nodule_slices = [k for k in range(mask.shape[0]) if mask[k].any() and abs(slice_z[k] - centre[2]) > 0.25]
    if len(nodule_slices) > OFF_CENTRE_SLICES:
        chosen = np.linspace(0, len(nodule_slices) - 1, OFF_CENTRE_SLICES).round().astype(int)
        nodule_slices = [nodule_slices[i] for i in chosen]
    return [np.array([centre[0], centre[1], slice_z[k]]) for k in nodule_slices]


def voi_views(voi_dir: Path, nodules: Sequence[VoiNodule], seed: int = 0,
              progress: Optional[Callable[[int, int], None]] = None) -> List[NoduleView]:
    """Every view of every nodule, in nodule order; seeded (the seed-shift directions)."""
    rng = np.random.default_rng(seed)
    views: List[NoduleView] = []
    for done, nodule in enumerate(nodules, start=1):
        views.extend(nodule_views(Path(voi_dir), nodule, rng))
        if progress is not None:
            progress(done, len(nodules))
    return views
