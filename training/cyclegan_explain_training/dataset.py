"""The prepared dataset: the one format `prepare` writes and training and evaluation read.

A prepared dataset is a folder holding ``patches.npz`` and ``manifest.json``. Patches are cut with
the core's ``extract_patch`` (never a second sampler) and stored in Hounsfield units; the HU
window that normalises them is the bundle's, applied at training time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np

from CycleGANExplainLib.model_bundle import sha256_of

PATCHES_FILE = "patches.npz"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "test")
BENIGN, MALIGNANT = 0, 1


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

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, split: str) -> "PreparedDataset":
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
        keep = self.splits == split
        return PreparedDataset(
            images_hu=self.images_hu[keep],
            masks=self.masks[keep],
            labels=self.labels[keep],
            patient_ids=self.patient_ids[keep],
            nodule_ids=self.nodule_ids[keep],
            diameters_mm=self.diameters_mm[keep],
            splits=self.splits[keep],
            manifest=self.manifest,
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
        )
        manifest = dict(self.manifest)
        manifest["patches_sha256"] = sha256_of(out_dir / PATCHES_FILE)
        manifest["counts"] = counts(self)
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        self.manifest = manifest
        return out_dir


def counts(dataset: PreparedDataset) -> Dict[str, Dict[str, int]]:
    result = {}
    for split in ("all", *SPLITS):
        keep = np.ones(len(dataset), bool) if split == "all" else dataset.splits == split
        result[split] = {
            "nodules": int(keep.sum()),
            "benign": int((dataset.labels[keep] == BENIGN).sum()),
            "malignant": int((dataset.labels[keep] == MALIGNANT).sum()),
            "patients": int(len(np.unique(dataset.patient_ids[keep]))),
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
        )
