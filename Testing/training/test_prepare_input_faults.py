"""`cyclegan-explain-train prepare --source voi` against a damaged or inconsistent VOI folder (issue 23,
items 1, 10 and 20): each ends with exit code 2 and one message naming the file, line or nodule,
never with a traceback or a dataset built on a wrong label or split. The folder is written for real
(SimpleITK NIfTI, CSV files) in the lidc-voi layout."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cyclegan_explain_training.cli import main

NODULES = [("LIDC-0001", 1, 0), ("LIDC-0001", 2, 1), ("LIDC-0002", 1, 1), ("LIDC-0003", 1, 0)]
SPLIT = [("LIDC-0001", "train"), ("LIDC-0002", "train"), ("LIDC-0003", "test")]
COLUMNS = ["patient_id", "nodule_id", "coordX", "coordY", "coordZ", "diameter_mm", "Diagnosis_value"]


def write_csv(path: Path, columns, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def write_voi_folder(root: Path, nodules=NODULES, split=SPLIT, columns=COLUMNS) -> Path:
    """split.csv, the nodule metadata and a 48 x 48 x 16 CT VOI with its mask per nodule."""
    for patient, number, _label in nodules:
        volume = np.full((16, 48, 48), -850, np.int16)
        volume[6:10, 20:28, 20:28] = 40
        for folder, array in (("image", volume), ("nodule_mask", (volume > 0).astype(np.uint8))):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.7, 0.7, 1.25))
            (root / "data" / "VOIs" / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(root / "data" / "VOIs" / folder / f"{patient}_R_{number}.nii.gz"), True)
    rows = [[patient, number, 16.45, 16.45, 9.4, 6.0, label] for patient, number, label in nodules]
    write_csv(root / "data" / "MetadatabyNoduleMaxVoting.csv", columns,
              [[value for column, value in zip(COLUMNS, row) if column in columns] for row in rows])
    write_csv(root / "split.csv", ["patient_id", "split"], split)
    return root


def prepare(voi_dir: Path, out: Path, capsys) -> tuple:
    code = main(["prepare", "--source", "voi", "--voi-dir", str(voi_dir), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def test_a_whole_folder_prepares(tmp_path, capsys):
    code, error = prepare(write_voi_folder(tmp_path / "voi"), tmp_path / "out", capsys)
    assert code == 0, error
    assert (tmp_path / "out" / "manifest.json").is_file()


@pytest.mark.parametrize("nodules, split, message", [
    ([*NODULES[:3], ("LIDC-0003", 1, 2)], SPLIT,
     "line 5 of the nodule metadata (LIDC-0003_R_1) has Diagnosis_value 2; labels are 0 (benign) or 1 (malignant)"),
    ([*NODULES[:3], ("LIDC-0003", 1, -1)], SPLIT, "has Diagnosis_value -1"),
    ([*NODULES, ("LIDC-0001", 2, 0)], SPLIT,
     "lists nodule LIDC-0001_R_2 twice (lines 3 and 6, labels 1 and 0); keep one row per nodule"),
    (NODULES, [*SPLIT, ("LIDC-0002", "test")],
     "puts 1 patient(s) in both train and test: LIDC-0002 (lines 3, 5)"),
    (NODULES, [*SPLIT[:2], ("LIDC-0003", "validation")], "names unknown split(s) at line 4; expected train or test"),
])
def test_inconsistent_labels_and_splits_are_refused_naming_the_rows(nodules, split, message, tmp_path, capsys):
    code, error = prepare(write_voi_folder(tmp_path / "voi", nodules, split), tmp_path / "out", capsys)
    assert code == 2 and message in error and "Traceback" not in error, error
    assert not (tmp_path / "out").exists()


def test_missing_metadata_columns_are_named(tmp_path, capsys):
    voi = write_voi_folder(tmp_path / "voi", columns=[c for c in COLUMNS if c != "Diagnosis_value"])
    code, error = prepare(voi, tmp_path / "out", capsys)
    assert code == 2 and "MetadatabyNoduleMaxVoting.csv lacks the column(s) Diagnosis_value" in error, error
    write_csv(voi / "split.csv", ["patient", "split"], SPLIT)
    code, error = prepare(voi, tmp_path / "out", capsys)
    assert code == 2 and "split.csv lacks the column(s) patient_id (its columns: patient, split)" in error, error


@pytest.mark.parametrize("damage, message", [
    ("truncate", "LIDC-0002_R_1.nii.gz is truncated"),
    ("garbage", "Cannot read"),
])
def test_a_truncated_or_corrupt_voi_image_is_named(damage, message, tmp_path, capsys):
    voi = write_voi_folder(tmp_path / "voi")
    image = voi / "data" / "VOIs" / "image" / "LIDC-0002_R_1.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an image at all" * 10)
    code, error = prepare(voi, tmp_path / "out", capsys)
    assert code == 2 and message in error and "LIDC-0002_R_1.nii.gz" in error and "Traceback" not in error, error


def test_evaluate_refuses_a_bundle_whose_patch_contract_is_not_the_datasets(tmp_path, capsys, tiny_bundle):
    """A bundle made for 30 mm patches runs on the dataset's 45 mm ones without an error, wrongly."""
    from CycleGANExplainLib.model_bundle import write_checksums

    code, error = prepare(write_voi_folder(tmp_path / "voi"), tmp_path / "data", capsys)
    assert code == 0, error
    bundle = tmp_path / "bundle-30mm"
    shutil.copytree(tiny_bundle, bundle)
    metadata = json.loads((bundle / "metadata.json").read_text())
    metadata["patch"]["extent_mm"] = 30.0
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    write_checksums(bundle)
    code = main(["evaluate", "--bundle", str(bundle), "--dataset", str(tmp_path / "data"), "--out",
                 str(tmp_path / "evaluation"), "--device", "cpu", "--bootstrap", "10", "--allow-unknown-bundle"])
    error = capsys.readouterr().err
    assert code == 2 and "The dataset's patches are 64 px over 45 mm, but bundle bundle-30mm takes 64 px over " \
                         "30 mm" in error, error
    assert not (tmp_path / "evaluation").exists()


def test_evaluate_refuses_a_dataset_that_records_no_patch_extent(tmp_path, capsys, tiny_bundle):
    """A dataset written without prepare (no patch.extent_mm) cannot be checked, so it is refused by name."""
    code, error = prepare(write_voi_folder(tmp_path / "voi"), tmp_path / "data", capsys)
    assert code == 0, error
    manifest_path = tmp_path / "data" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["patch"]
    manifest_path.write_text(json.dumps(manifest))
    code = main(["evaluate", "--bundle", str(tiny_bundle), "--dataset", str(tmp_path / "data"), "--out",
                 str(tmp_path / "evaluation"), "--device", "cpu", "--bootstrap", "10", "--allow-unknown-bundle"])
    error = capsys.readouterr().err
    assert code == 2 and "records no patch extent (patch.extent_mm)" in error and "Traceback" not in error, error
    assert not (tmp_path / "evaluation").exists()
