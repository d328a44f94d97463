"""Bundle loading: checksums verified before anything is deserialised, device choice, caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from CycleGANExplainLib.model_bundle import (
    CHECKSUM_FILE,
    DEFAULT_BUNDLE_NAME,
    METADATA_FILE,
    TRAINING_DATA_SOURCES,
    BundleError,
    BundleIntegrityError,
    default_bundle_dir,
    load_bundle,
    read_metadata,
    resolve_bundle,
    resolve_device,
    shipped_bundles,
    verify_checksums,
    write_checksums,
)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def flip_one_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def models_dir(tiny_bundle, tmp_path) -> Path:
    """A models folder like the shipped models folder holding the tiny bundle as "lidc-phantoms" only, and a
    folder that is not a bundle (no metadata.json)."""
    root = tmp_path / "Models"
    shutil.copytree(tiny_bundle, root / "lidc-phantoms")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a bundle")
    return root


def test_every_shipped_bundle_passes_its_checksums_and_says_what_it_is():
    bundles = shipped_bundles()
    assert default_bundle_dir() in bundles
    for bundle_dir in bundles:
        verify_checksums(bundle_dir)
        metadata = read_metadata(bundle_dir)
        assert metadata.name == bundle_dir.name  # the folder name is the name --bundle takes
        assert (metadata.patch_size_px, metadata.patch_extent_mm) == (64, 45.0)
        assert metadata.raw["intended_use"].startswith("Research use only")
        assert metadata.trained == ("UNTRAINED" not in metadata.display_name)
        assert metadata.trained_on in TRAINING_DATA_SOURCES.values()
        assert metadata.raw["evaluation"]["classifier_auc"] in metadata.headline_evaluation


def test_default_falls_back_to_a_shipped_bundle_until_the_default_is_installed(models_dir, tiny_bundle):
    assert DEFAULT_BUNDLE_NAME == "lidc-voi"
    assert shipped_bundles(models_dir) == [models_dir / "lidc-phantoms"]
    assert default_bundle_dir(models_dir) == models_dir / "lidc-phantoms"
    assert resolve_bundle(None, models_dir) == models_dir / "lidc-phantoms"

    shutil.copytree(tiny_bundle, models_dir / "lidc-voi")  # the default bundle arrives
    assert shipped_bundles(models_dir) == [models_dir / "lidc-phantoms", models_dir / "lidc-voi"]
    assert default_bundle_dir(models_dir) == models_dir / "lidc-voi"
    assert resolve_bundle("", models_dir) == models_dir / "lidc-voi"


def test_no_bundle_installed_is_named_when_loading(tmp_path):
    empty = tmp_path / "Models"
    empty.mkdir()
    assert shipped_bundles(empty) == [] and shipped_bundles(tmp_path / "absent") == []
    assert default_bundle_dir(empty) == empty / DEFAULT_BUNDLE_NAME
    with pytest.raises(BundleError, match="folder not found: .*lidc-voi"):
        load_bundle(default_bundle_dir(empty), "cpu", allow_unknown=True)


def test_bundle_is_resolved_by_shipped_name_or_by_path(models_dir, tiny_bundle):
    assert resolve_bundle("lidc-phantoms", models_dir) == models_dir / "lidc-phantoms"
    assert resolve_bundle(str(tiny_bundle), models_dir) == tiny_bundle
    assert resolve_bundle(tiny_bundle, models_dir) == tiny_bundle
    (models_dir.parent / "lidc-phantoms").mkdir()  # a same-named folder elsewhere does not shadow the name
    assert resolve_bundle("lidc-phantoms", models_dir) == models_dir / "lidc-phantoms"


def test_unknown_bundle_message_lists_the_shipped_names(models_dir, tiny_bundle):
    shutil.copytree(tiny_bundle, models_dir / "lidc-voi")
    with pytest.raises(BundleError) as raised:
        resolve_bundle("lidc-real", models_dir)
    message = str(raised.value)
    assert "No model bundle named 'lidc-real'" in message
    assert "Shipped bundles: lidc-phantoms, lidc-voi" in message
    assert "notes" not in message  # a folder without metadata.json is not a bundle
    with pytest.raises(BundleError, match="Shipped bundles: none"):
        resolve_bundle("lidc-voi", models_dir / "empty")


def test_training_data_and_headline_come_from_metadata(bundle_copy):
    untrained = read_metadata(bundle_copy)
    assert untrained.trained_on == "nothing (random weights)"
    assert untrained.headline_evaluation == "none: untrained, explanations are meaningless"

    raw = json.loads((bundle_copy / METADATA_FILE).read_text())
    raw["trained"], raw["evaluation"] = True, None  # exported, not evaluated yet
    (bundle_copy / METADATA_FILE).write_text(json.dumps(raw))
    assert read_metadata(bundle_copy).headline_evaluation == "not evaluated"
    raw["training_data"] = {"dataset": {"source": "voi"}}
    raw["evaluation"] = {"split": "test", "n": 267, "classifier_auc": "0.812 [0.760, 0.860]",
                         "diameter_only_auc": "0.790 [0.735, 0.842]", "targets_missed": ["mean SSIM(x, G+(x))"]}
    (bundle_copy / METADATA_FILE).write_text(json.dumps(raw))
    write_checksums(bundle_copy)
    metadata = read_metadata(bundle_copy)
    assert metadata.trained_on.startswith("real LIDC-IDRI chest CT")
    assert metadata.headline_evaluation == (
        "test split, n = 267: classifier AUC 0.812 [0.760, 0.860]; nodule diameter alone 0.790 [0.735, 0.842]; "
        "targets missed: mean SSIM(x, G+(x))"
    )
    # Real-CT evaluations also give the AUC under every condition and a second simple baseline.
    raw["evaluation"].update(condition="centre view, air fill", two_feature_auc="0.801 [0.75, 0.85]",
                             classifier_auc_by_condition={"centre view, air fill": "0.812 [0.760, 0.860]",
                                                          "seed moved 2 mm, lung fill": "0.798 [0.74, 0.85]"})
    (bundle_copy / METADATA_FILE).write_text(json.dumps(raw))
    assert read_metadata(bundle_copy).headline_evaluation == (
        "test split, n = 267 (centre view, air fill): classifier AUC 0.812 [0.760, 0.860]; by condition: "
        "centre view, air fill 0.812 [0.760, 0.860], seed moved 2 mm, lung fill 0.798 [0.74, 0.85]; "
        "nodule diameter alone 0.790 [0.735, 0.842]; mask area and mean HU alone 0.801 [0.75, 0.85]; "
        "targets missed: mean SSIM(x, G+(x))"
    )
    raw["training_data"]["dataset"]["source"] = "mri"
    (bundle_copy / METADATA_FILE).write_text(json.dumps(raw))
    assert read_metadata(bundle_copy).trained_on == "data source 'mri' (see metadata.json)"


@pytest.mark.parametrize("filename", ["classifier.pt", "generator_pos.pt", "generator_neg.pt", "metadata.json"])
def test_tampered_file_is_refused_by_name(bundle_copy, filename):
    flip_one_byte(bundle_copy / filename, offset=20)
    with pytest.raises(BundleIntegrityError, match=f"{filename} does not match its SHA-256"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_missing_file_is_refused_by_name(bundle_copy):
    (bundle_copy / "generator_neg.pt").unlink()
    with pytest.raises(BundleIntegrityError, match="generator_neg.pt is missing"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_file_left_out_of_checksums_is_refused(bundle_copy):
    sums = bundle_copy / CHECKSUM_FILE
    sums.write_text("".join(line for line in sums.read_text().splitlines(True) if "classifier.pt" not in line))
    with pytest.raises(BundleIntegrityError, match="classifier.pt is not listed"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)
    sums.unlink()
    with pytest.raises(BundleIntegrityError, match="has no SHA256SUMS"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_metadata_drives_normalisation_and_patch_contract(bundle_copy):
    raw = json.loads((bundle_copy / "metadata.json").read_text())
    raw["intensity"]["hu_window"] = [-1200.0, 600.0]
    (bundle_copy / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle_copy)  # a legitimate re-release of the bundle
    assert load_bundle(bundle_copy, "cpu", allow_unknown=True).metadata.hu_window == (-1200.0, 600.0)

    del raw["classes"]
    (bundle_copy / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle_copy)
    with pytest.raises(BundleError, match="metadata.json: classes is missing; expected two distinct class names"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_bundle_is_cached_until_a_file_changes(bundle_copy):
    first = load_bundle(bundle_copy, "cpu", allow_unknown=True)
    assert load_bundle(bundle_copy, "cpu", allow_unknown=True).classifier is first.classifier
    flip_one_byte(bundle_copy / "classifier.pt", offset=30)
    with pytest.raises(BundleIntegrityError, match="classifier.pt"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_missing_bundle_folder_is_named(tmp_path):
    with pytest.raises(BundleError, match="folder not found"):
        load_bundle(tmp_path / "nowhere", "cpu", allow_unknown=True)


def test_device_choice_and_cuda_fallback_message():
    import torch

    assert resolve_device("cpu") == ("cpu", None)
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert resolve_device("auto") == ("cuda", None)
        return
    assert resolve_device("auto") == ("cpu", None)
    device, warning = resolve_device("cuda")
    assert device == "cpu"
    assert "CUDA was requested but is not available" in warning and "running on CPU" in warning
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


def test_requested_cuda_without_gpu_loads_on_cpu_and_carries_the_warning(tiny_bundle):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        pytest.skip("a GPU is present")
    bundle = load_bundle(tiny_bundle, "cuda", allow_unknown=True)
    assert bundle.device == "cpu"
    assert any("not available" in warning for warning in bundle.warnings)


def test_every_shipped_bundle_states_the_intended_use_the_front_ends_show():
    from CycleGANExplainLib.model_bundle import shipped_bundles
    from CycleGANExplainLib.notices import INTENDED_USE

    for bundle_dir in shipped_bundles():
        assert read_metadata(bundle_dir).raw["intended_use"] == INTENDED_USE, bundle_dir.name


def test_the_bundles_listing_says_where_a_bundle_fails_beside_its_figures(capsys):
    """lidc-phantoms' test AUC (0.961) is on phantoms; on real CT it is 0.449. The listing, the web
    page and the module's help show headline_evaluation, so the limitation is part of it, read from
    metadata.json's "limitations" (which `evaluate --attach` leaves alone) (issue 23, item 22)."""
    from CycleGANExplainLib.cli import main

    phantoms = read_metadata(resolve_bundle("lidc-phantoms"))
    assert phantoms.limitations.startswith("Not for real CT: on the 267 real LIDC-IDRI test nodules its AUC is 0.449")
    assert phantoms.headline_evaluation.endswith(f"; {phantoms.limitations}")
    assert phantoms.summary.endswith(f" {phantoms.limitations}.") and phantoms.summary.count("Not for real CT") == 1
    assert main(["bundles"]) == 0
    listing = capsys.readouterr().out
    block = listing[listing.index("lidc-phantoms"):]
    evaluation_line = next(line for line in block.splitlines() if line.startswith("  evaluation: "))
    assert "AUC 0.961" in evaluation_line and "Not for real CT" in evaluation_line and "0.449" in evaluation_line
    assert read_metadata(resolve_bundle("lidc-voi")).limitations == ""
