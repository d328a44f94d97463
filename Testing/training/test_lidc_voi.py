"""Real nodule VOIs (../shared/lidc-voi): the voi source end to end, its patches against SimpleITK,
and the fixed split's test patients kept out of every training set.

These tests need the shared data: they skip without it on a developer's machine and fail under CI
(the ``lidc_voi_dir`` fixture).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.model_bundle import load_bundle
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.cli import main
from cyclegan_explain_training.dataset import load_prepared
from cyclegan_explain_training.run_log import read_metrics
from cyclegan_explain_training.train_cyclegan import VALIDATION_METRICS, split_like_classifier

TINY_CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.json"
LIMIT = 16
GAN_STEPS, VALIDATION_EVERY = 6, 2
PATCH_SIZE, PATCH_EXTENT_MM = 64, 45.0


def _split_csv(voi_dir: Path) -> dict:
    with open(voi_dir / "split.csv", newline="") as handle:
        return {row["patient_id"]: row["split"] for row in csv.DictReader(handle)}


def _patients_of(split: dict, name: str) -> set:
    return {patient for patient, value in split.items() if value == name}


@pytest.fixture(scope="module")
def voi_run(tmp_path_factory, lidc_voi_dir):
    """prepare --source voi -> tiny classifier -> tiny residual CycleGAN-AM with validation -> export."""
    root = tmp_path_factory.mktemp("voi")
    paths = {name: root / name for name in ("data", "classifier", "gan", "bundle")}
    gan_config = json.loads(TINY_CONFIG.read_text())
    gan_config["cyclegan"].update(validation_every=VALIDATION_EVERY, residual_generators=True)
    (root / "gan.json").write_text(json.dumps(gan_config))

    assert main(["prepare", "--source", "voi", "--voi-dir", str(lidc_voi_dir), "--limit", str(LIMIT),
                 "--out", str(paths["data"]), "--quiet"]) == 0
    common = ["--dataset", str(paths["data"]), "--device", "cpu", "--quiet"]
    assert main(["train-classifier", *common, "--config", str(TINY_CONFIG), "--epochs", "3",
                 "--out", str(paths["classifier"])]) == 0
    classifier = paths["classifier"] / "classifier.pt"
    assert main(["train-cyclegan", *common, "--config", str(root / "gan.json"), "--classifier", str(classifier),
                 "--steps", str(GAN_STEPS), "--out", str(paths["gan"])]) == 0
    assert main(["export", "--dataset", str(paths["data"]), "--classifier", str(classifier), "--cyclegan",
                 str(paths["gan"] / "cyclegan.pt"), "--out", str(paths["bundle"]), "--name", "voi-tiny"]) == 0
    return {**paths, "root": root, "classifier_checkpoint": classifier, "voi_dir": lidc_voi_dir}


# --- the shared-data rule -------------------------------------------------------------------------


def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(shared_folder_rule, tmp_path, monkeypatch):
    (tmp_path / "present").mkdir()
    (tmp_path / "present" / "split.csv").write_text("patient_id,split\n")
    assert shared_folder_rule(tmp_path / "present") == tmp_path / "present"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set.*missing"):
        shared_folder_rule(tmp_path / "absent")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="missing"):
        shared_folder_rule(tmp_path / "absent")


# --- end to end -----------------------------------------------------------------------------------


def test_voi_source_prepares_trains_and_exports_a_bundle(voi_run):
    dataset = load_prepared(voi_run["data"])
    manifest = dataset.manifest
    assert manifest["source"] == "voi" and manifest["options"]["limit"] == LIMIT
    assert manifest["counts"]["all"]["nodules"] == LIMIT
    assert set(dataset.views) == {"centre", "seed-shifted", "off-centre"}
    assert 0 < dataset.valid.mean() < 1  # the VOIs end inside the 45 mm patches
    assert (dataset.images_hu[dataset.valid == 0] == -1000.0).all()

    log = read_metrics(voi_run["gan"] / VALIDATION_METRICS)
    assert [record["step"] for record in log] == list(range(VALIDATION_EVERY, GAN_STEPS + 1, VALIDATION_EVERY))
    gan = load_checkpoint(voi_run["gan"] / "cyclegan.pt")
    assert gan["residual_generators"] is True and gan["best"]["step"] in [record["step"] for record in log]

    bundle = load_bundle(voi_run["bundle"], "cpu", allow_unknown=True)
    training = bundle.metadata.raw["training_data"]
    assert training["dataset"]["patches_sha256"] == manifest["patches_sha256"]
    assert training["cyclegan"]["exported_step"] == gan["best"]["step"]
    assert training["commands"][0].startswith("cyclegan-explain-train train-classifier")


def test_voi_bundle_evaluates(voi_run):
    out = voi_run["root"] / "evaluation"
    assert main(["evaluate", "--allow-unknown-bundle", "--bundle", str(voi_run["bundle"]), "--dataset", str(voi_run["data"]),
                 "--out", str(out), "--bootstrap", "20", "--device", "cpu"]) == 0
    assert (out / "evaluation.json").is_file()
    json.loads((out / "evaluation.json").read_text())


# --- the patches against SimpleITK ----------------------------------------------------------------


def _reference_grid(centre_lps) -> sitk.Image:
    """The patch contract's grid in LPS: columns to patient left (+x), rows to posterior (+y),
    45 mm across 64 pixels, the nodule centre at pixel index (31.5, 31.5)."""
    spacing = PATCH_EXTENT_MM / PATCH_SIZE
    grid = sitk.Image([PATCH_SIZE, PATCH_SIZE, 1], sitk.sitkFloat32)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin([centre_lps[0] - 31.5 * spacing, centre_lps[1] - 31.5 * spacing, centre_lps[2]])
    return grid


def _resampled(image: sitk.Image, grid: sitk.Image, outside: float) -> np.ndarray:
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear,
                              outside, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)[0]


def _metadata_centres(voi_dir: Path) -> dict:
    with open(voi_dir / "data" / "MetadatabyNoduleMaxVoting.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    axes = ("coordX", "coordY", "coordZ")
    return {f"{row['patient_id']}_R_{int(row['nodule_id'])}": [float(row[axis]) for axis in axes] for row in rows}


def test_centre_patches_valid_and_masks_match_simpleitk(voi_run):
    voi_dir = voi_run["voi_dir"]
    dataset = load_prepared(voi_run["data"])
    centre = dataset.select(dataset.views == "centre")
    centres = _metadata_centres(voi_dir)
    compared, with_edges = 0, 0
    for split in ("train", "test"):
        for index in np.flatnonzero(centre.splits == split):
            nodule_id = str(centre.nodule_ids[index])
            image = sitk.ReadImage(str(voi_dir / "data" / "VOIs" / "image" / f"{nodule_id}.nii.gz"))
            mask = sitk.ReadImage(str(voi_dir / "data" / "VOIs" / "nodule_mask" / f"{nodule_id}.nii.gz"))
            mask = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayFromImage(mask) > 0).astype(np.float32)),
                             sitk.sitkFloat32)
            mask.CopyInformation(image)
            centroid_kji = np.argwhere(sitk.GetArrayFromImage(mask) > 0).mean(axis=0)
            centroid = image.TransformContinuousIndexToPhysicalPoint(centroid_kji[::-1].tolist())
            if np.linalg.norm(np.subtract(centroid, centres[nodule_id])) > 5.0:
                continue  # prepare centres these few on the mask centroid instead: not this comparison
            grid = _reference_grid(centres[nodule_id])
            expected_hu = _resampled(image, grid, -1000.0)
            ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
            ones.CopyInformation(image)
            expected_valid = _resampled(ones, grid, 0.0) > 0.5
            expected_mask = _resampled(mask, grid, 0.0)
            decided = np.abs(expected_mask - 0.5) > 1e-4  # a mask value of exactly 0.5 may round either way

            np.testing.assert_allclose(centre.images_hu[index], expected_hu, atol=0.5, err_msg=nodule_id)
            np.testing.assert_array_equal(centre.valid[index].astype(bool), expected_valid, err_msg=nodule_id)
            np.testing.assert_array_equal(centre.masks[index][decided].astype(bool),
                                          (expected_mask >= 0.5)[decided], err_msg=nodule_id)
            assert centre.masks[index].sum() > 0, nodule_id
            compared += 1
            with_edges += int(not expected_valid.all())
            if compared in (3, 6):
                break  # three nodules of each split
    assert compared == 6 and with_edges > 0


# --- no test patient in any training set ----------------------------------------------------------


def test_no_test_patient_in_any_training_set(voi_run):
    split = _split_csv(voi_run["voi_dir"])
    test_patients, train_patients = _patients_of(split, "test"), _patients_of(split, "train")
    dataset = load_prepared(voi_run["data"])

    # The prepared split is split.csv's, sample by sample, and the test split is not empty.
    assert all(split[patient] == name for patient, name in zip(dataset.patient_ids, dataset.splits))
    assert (dataset.splits == "test").any()
    assert not set(dataset.patient_ids[dataset.splits == "train"]) & test_patients
    # Off-centre views (training variety) exist only for training nodules; test nodules have
    # exactly their centre and seed-shifted views.
    off_centre = dataset.views == "off-centre"
    assert off_centre.any() and set(dataset.patient_ids[off_centre]) <= train_patients
    test_views = dataset.views[dataset.splits == "test"]
    assert sorted(set(test_views)) == ["centre", "seed-shifted"]
    assert (test_views == "centre").sum() == (test_views == "seed-shifted").sum()

    # The classifier: validation patients and the fitting patients (the rest of train).
    classifier = load_checkpoint(voi_run["classifier_checkpoint"])
    validation_patients = set(classifier["validation_patients"])
    train = dataset.subset("train")
    fit_patients = set(train.patient_ids) - validation_patients
    assert validation_patients and fit_patients
    assert validation_patients <= train_patients and fit_patients <= train_patients
    fitting = np.isin(train.patient_ids, list(fit_patients))
    assert classifier["counts"]["fit_samples"] == int(fitting.sum())
    assert classifier["counts"]["fit_nodules"] == len(set(train.nodule_ids[fitting]))
    assert classifier["counts"]["validation_patients"] == len(validation_patients)

    # The GAN fits on the classifier's fitting patients and validates on its validation patients.
    fit, validation = split_like_classifier(dataset, classifier)
    assert set(fit.patient_ids) == fit_patients
    assert set(validation.patient_ids) == validation_patients
    assert set(fit.splits) == set(validation.splits) == {"train"}


def test_phantom_pre_training_data_leaves_out_the_test_patients(lidc_voi_dir, tmp_path, capsys):
    split_csv = lidc_voi_dir / "split.csv"
    test_patients = _patients_of(_split_csv(lidc_voi_dir), "test")
    common = ["prepare", "--source", "phantoms", "--limit", "8", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    assert main([*common, "--out", str(tmp_path / "excluded"), "--exclude-patients-of", str(split_csv)]) == 0
    everyone = set(load_prepared(tmp_path / "all").patient_ids)
    excluded = load_prepared(tmp_path / "excluded")
    assert everyone & test_patients  # without the option the first patients include test ones ...
    assert not set(excluded.patient_ids) & test_patients  # ... with it, none
    assert set(excluded.patient_ids) == everyone - test_patients
    assert excluded.manifest["options"]["excluded_patients"] == len(test_patients)

    other = tmp_path / "patients.csv"
    other.write_text(split_csv.read_text())
    assert main([*common, "--out", str(tmp_path / "refused"), "--exclude-patients-of", str(other)]) == 2
    assert "split.csv" in capsys.readouterr().err
