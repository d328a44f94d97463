"""prepare(): a small configuration end to end, read back with load_prepared."""

from __future__ import annotations

import numpy as np
import pytest

from cyclegan_explain_training.dataset import load_prepared
from cyclegan_explain_training.metrics import roc_auc
from cyclegan_explain_training.prepare import prepare


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = prepare(tmp_path_factory.mktemp("prepared"), limit=12, progress=False)
    return load_prepared(folder)


def test_small_configuration_is_a_valid_prepared_dataset(small):
    assert len(small) == 12
    assert small.images_hu.shape == (12, 64, 64) and small.images_hu.dtype == np.float32
    assert small.masks.shape == (12, 64, 64) and all(m.any() for m in small.masks)
    assert set(small.splits) == {"train", "test"}
    for split in ("train", "test"):
        assert set(small.subset(split).labels) == {0, 1}, f"{split} lacks a class"
    train_patients = set(small.subset("train").patient_ids)
    assert train_patients.isdisjoint(small.subset("test").patient_ids)
    assert np.all(small.diameters_mm > 2.0)
    centres = small.images_hu[:, 31:33, 31:33].mean(axis=(1, 2))
    corners = np.median(small.images_hu[:, :8, :8], axis=(1, 2))
    assert np.all(centres > corners + 150)


def test_manifest_records_rule_counts_and_baseline(small):
    manifest = small.manifest
    assert manifest["source"] == "phantoms"
    assert manifest["cohort_counts"]["paper"] == {"nodules": 772, "malignant": 348, "benign": 424}
    assert manifest["split"]["seed"] == 0 and manifest["split"]["level"] == "patient"
    assert manifest["options"]["limit"] == 12
    assert "median reader malignancy" in manifest["cohort_rule"]["label"]
    assert manifest["counts"]["all"]["nodules"] == 12
    assert manifest["empty_mask_patches"] == 0
    test = small.subset("test")
    assert manifest["diameter_only_auc"]["test"] == pytest.approx(roc_auc(test.labels, test.diameters_mm), abs=1e-4)


def test_unknown_source_and_normalised_dicom_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown source 'scanner'"):
        prepare(tmp_path, source="scanner")
    with pytest.raises(ValueError, match="phantoms only"):
        prepare(tmp_path, source="dicom", size_normalised=True)
