"""Fixtures for the training suite: small prepared datasets of synthetic nodules, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cyclegan_explain_training.dataset import PreparedDataset

PIXEL_MM = 45.0 / 64


def disc_dataset(count: int = 40, seed: int = 0, test_fraction: float = 0.3) -> PreparedDataset:
    """Soft-tissue discs in noisy lung: malignant ones 12-20 mm across, benign ones 4-8 mm.

    Two nodules per patient (same label), splits by patient, so patient-level logic is exercised.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(count // 2) % 2, 2)
    diameters = np.where(labels == 1, rng.uniform(12, 20, count), rng.uniform(4, 8, count)).astype(np.float32)
    rows, columns = np.mgrid[:64, :64]
    centres = rng.uniform(28, 36, (count, 2))
    radius_px = np.hypot(rows[None] - centres[:, 0, None, None], columns[None] - centres[:, 1, None, None])
    inside = radius_px < diameters[:, None, None] / PIXEL_MM / 2
    images = np.where(inside, 30.0, -850.0) + rng.normal(0, 40, (count, 64, 64))
    patients = np.array([f"LIDC-IDRI-{index // 2 + 1:04d}" for index in range(count)])
    test_patients = rng.permutation(np.unique(patients))[: int(round(test_fraction * count / 2))]
    return PreparedDataset(
        images_hu=images.astype(np.float32),
        masks=inside.astype(np.uint8),
        labels=labels.astype(np.int64),
        patient_ids=patients,
        nodule_ids=np.array([f"nodule-{index}" for index in range(count)]),
        diameters_mm=diameters,
        splits=np.where(np.isin(patients, test_patients), "test", "train"),
        manifest={"source": "synthetic discs (test fixture)", "patch": {"size_px": 64, "extent_mm": 45.0}},
    )


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Train on one thread: on this shared 2-core machine two OpenMP threads run up to 40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_disc_dataset() -> Callable[..., PreparedDataset]:
    """Factory for in-memory disc datasets (see disc_dataset)."""
    return disc_dataset



SHARED_LIDC_VOI = Path(__file__).resolve().parents[2].parent / "shared" / "lidc-voi"


def require_shared_folder(folder: Path, needed: str = "split.csv") -> Path:
    """``folder`` if it holds ``needed``; otherwise fail under CI (CI=true) and skip elsewhere.

    Data outside the repository is optional on a developer's machine, but a CI run without it
    would pass while testing nothing, so there its absence is an error.
    """
    if (folder / needed).exists():
        return folder
    message = f"{folder / needed} is missing: the real-data tests need a folder laid out like lidc-voi there."
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_folder_rule() -> Callable[..., Path]:
    """require_shared_folder, for the test of the rule itself."""
    return require_shared_folder


@pytest.fixture(scope="session")
def lidc_voi_dir() -> Path:
    """../shared/lidc-voi from the repository root: real nodule VOIs with split.csv."""
    return require_shared_folder(SHARED_LIDC_VOI)
