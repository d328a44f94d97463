"""The prepared dataset: the one format `prepare` writes and training and evaluation read.

A prepared dataset is a folder holding ``patches.npz`` and ``manifest.json``. Patches are cut with
the core's ``extract_patch`` (never a second sampler) and stored in Hounsfield units; the HU
window that normalises them is the bundle's, applied at training time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from CycleGANExplainLib.model_bundle import sha256_of

PATCHES_FILE = "patches.npz"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "test")
BENIGN, MALIGNANT = 0, 1
# Each sample is one view of a nodule. "centre" is the axial plane through the nodule's centre
# (one per nodule: what evaluation reports); "off-centre" planes through other slices of the
# nodule and "seed-shifted" centres moved 2 mm in-plane add training variety and measure
# robustness to an imprecise click. Datasets without views hold centre patches only.
CENTRE, OFF_CENTRE, SEED_SHIFTED = "centre", "off-centre", "seed-shifted"
VIEWS = (CENTRE, OFF_CENTRE, SEED_SHIFTED)


@dataclass
class PreparedDataset:
    """Arrays are indexed by sample; all have the same first dimension N."""

    images_hu: np.ndarray  # float32 [N, 64, 64], Hounsfield units
    masks: np.ndarray  # uint8 [N, 64, 64], 1 inside the nodule (consensus contour)
    labels: np.ndarray  # int64 [N], 0 benign, 1 malignant
    patient_ids: np.ndarray  # str [N], e.g. LIDC-IDRI-0001 (public dataset identifiers)
    nodule_ids: np.ndarray  # str [N], unique per nodule
    diameters_mm: np.ndarray  # float32 [N], consensus diameter before any size normalisation
    splits: np.ndarray  # str [N], "train" or "test" (patient-level)
    manifest: Dict[str, Any] = field(default_factory=dict)
    valid: Optional[np.ndarray] = None  # uint8 [N, 64, 64], 1 where the pixel holds real image data
    views: Optional[np.ndarray] = None  # str [N], one of VIEWS

    def __post_init__(self) -> None:
        # Phantoms and whole-scan patches are real image everywhere and centre views only.
        if self.valid is None:
            self.valid = np.ones(self.images_hu.shape, dtype=np.uint8)
        if self.views is None:
            self.views = np.full(len(self.labels), CENTRE)

    def __len__(self) -> int:
        return len(self.labels)

    def require_patch_contract(self, size_px: int, extent_mm: float, user: str) -> None:
        """ValueError unless the patches are ``size_px`` pixels over ``extent_mm`` (``user``'s contract,
        e.g. a bundle's): networks fed patches at another pixel spacing answer without an error, wrongly."""
        recorded = self.manifest.get("patch") or {}
        if "extent_mm" not in recorded:
            raise ValueError(f"The dataset's manifest.json records no patch extent (patch.extent_mm), so it cannot be "
                             f"checked against {user}'s {int(size_px)} px over {float(extent_mm):g} mm; prepare the "
                             "data with cyclegan-explain-train prepare, which records it.")
        have = (int(self.images_hu.shape[-1]), float(recorded["extent_mm"]))
        if have[0] != int(size_px) or not abs(have[1] - float(extent_mm)) <= 1e-6:
            raise ValueError(f"The dataset's patches are {have[0]} px over {have[1]:g} mm, but {user} takes "
                             f"{int(size_px)} px over {float(extent_mm):g} mm; prepare the data with the bundle's "
                             "patch contract or choose the matching bundle.")

    def subset(self, split: str, view: Optional[str] = None) -> "PreparedDataset":
        """The samples of one split, and of one view when ``view`` is given."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
        if view is not None and view not in VIEWS:
            raise ValueError(f"Unknown view {view!r}; expected one of {VIEWS}")
        keep = self.splits == split
        if view is not None:
            keep &= self.views == view
        return self.select(keep)

    def select(self, keep: np.ndarray) -> "PreparedDataset":
        """The samples where the boolean array ``keep`` is True (or at the given indices)."""
        return PreparedDataset(
            images_hu=self.images_hu[keep],
            masks=self.masks[keep],
            labels=self.labels[keep],
            patient_ids=self.patient_ids[keep],
            nodule_ids=self.nodule_ids[keep],
            diameters_mm=self.diameters_mm[keep],
            splits=self.splits[keep],
            manifest=self.manifest,
            valid=self.valid[keep],
            views=self.views[keep],
        )

    def save(self, out_dir: Union[str, Path]) -> Path:
        """Write patches.npz and manifest.json (the manifest gains the patches' SHA-256)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out_dir / PATCHES_FILE,
            images_hu=self.images_hu.astype(np.float32),
            masks=self.masks.astype(np.uint8),
            labels=self.labels.astype(np.int64),
            patient_ids=self.patient_ids.astype(str),
            nodule_ids=self.nodule_ids.astype(str),
            diameters_mm=self.diameters_mm.astype(np.float32),
            splits=self.splits.astype(str),
            valid=self.valid.astype(np.uint8),
            views=self.views.astype(str),
        )
        manifest = dict(self.manifest)
        manifest["patches_sha256"] = sha256_of(out_dir / PATCHES_FILE)
        manifest["counts"] = counts(self)
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        self.manifest = manifest
        return out_dir


def counts(dataset: PreparedDataset) -> Dict[str, Dict[str, int]]:
    result = {}
    centre = dataset.views == CENTRE
    for split in ("all", *SPLITS):
        in_split = np.ones(len(dataset), bool) if split == "all" else dataset.splits == split
        keep = centre & in_split
        result[split] = {
            "nodules": int(keep.sum()),
            "benign": int((dataset.labels[keep] == BENIGN).sum()),
            "malignant": int((dataset.labels[keep] == MALIGNANT).sum()),
            "patients": int(len(np.unique(dataset.patient_ids[keep]))),
            "samples_all_views": int(in_split.sum()),
        }
    return result


def load_prepared(folder: Union[str, Path]) -> PreparedDataset:
    """Read a prepared dataset, refusing one whose patches do not match the manifest's hash."""
    folder = Path(folder)
    manifest_path, patches_path = folder / MANIFEST_FILE, folder / PATCHES_FILE
    if not manifest_path.is_file() or not patches_path.is_file():
        raise FileNotFoundError(f"{folder} is not a prepared dataset (needs {PATCHES_FILE} and {MANIFEST_FILE}).")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("patches_sha256") != sha256_of(patches_path):
        raise ValueError(f"{patches_path} does not match the SHA-256 in {MANIFEST_FILE}; prepare it again.")
    with np.load(patches_path) as arrays:
        return PreparedDataset(
            images_hu=arrays["images_hu"],
            masks=arrays["masks"],
            labels=arrays["labels"],
            patient_ids=arrays["patient_ids"],
            nodule_ids=arrays["nodule_ids"],
            diameters_mm=arrays["diameters_mm"],
            splits=arrays["splits"],
            manifest=manifest,
            valid=arrays["valid"] if "valid" in arrays else None,
            views=arrays["views"] if "views" in arrays else None,
        )
