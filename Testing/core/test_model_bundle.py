"""Bundle loading: checksums verified before anything is deserialised, device choice, caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from CycleGANExplainLib.model_bundle import (
    CHECKSUM_FILE,
    BundleError,
    BundleIntegrityError,
    default_bundle_dir,
    load_bundle,
    read_metadata,
    resolve_device,
    verify_checksums,
)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def flip_one_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_shipped_bundle_passes_its_checksums_and_says_what_it_is():
    verify_checksums(default_bundle_dir())
    metadata = read_metadata(default_bundle_dir())
    assert (metadata.patch_size_px, metadata.patch_extent_mm) == (64, 45.0)
    assert metadata.raw["intended_use"].startswith("Research use only")
    assert metadata.trained == ("UNTRAINED" not in metadata.display_name)


@pytest.mark.parametrize("filename", ["classifier.pt", "generator_pos.pt", "generator_neg.pt", "metadata.json"])
def test_tampered_file_is_refused_by_name(bundle_copy, filename):
    flip_one_byte(bundle_copy / filename, offset=20)
    with pytest.raises(BundleIntegrityError, match=f"{filename} does not match its SHA-256"):
        load_bundle(bundle_copy, "cpu")


def test_missing_file_is_refused_by_name(bundle_copy):
    (bundle_copy / "generator_neg.pt").unlink()
    with pytest.raises(BundleIntegrityError, match="generator_neg.pt is missing"):
        load_bundle(bundle_copy, "cpu")


def test_file_left_out_of_checksums_is_refused(bundle_copy):
    sums = bundle_copy / CHECKSUM_FILE
    sums.write_text("".join(line for line in sums.read_text().splitlines(True) if "classifier.pt" not in line))
    with pytest.raises(BundleIntegrityError, match="classifier.pt is not listed"):
        load_bundle(bundle_copy, "cpu")
    sums.unlink()
    with pytest.raises(BundleIntegrityError, match="has no SHA256SUMS"):
        load_bundle(bundle_copy, "cpu")


def test_metadata_drives_normalisation_and_patch_contract(bundle_copy):
    from CycleGANExplainLib.model_bundle import write_checksums

    raw = json.loads((bundle_copy / "metadata.json").read_text())
    raw["intensity"]["hu_window"] = [-1200.0, 600.0]
    (bundle_copy / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle_copy)  # a legitimate re-release of the bundle
    assert load_bundle(bundle_copy, "cpu").metadata.hu_window == (-1200.0, 600.0)

    del raw["classes"]
    (bundle_copy / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle_copy)
    with pytest.raises(BundleError, match="metadata.json is malformed"):
        load_bundle(bundle_copy, "cpu")


def test_bundle_is_cached_until_a_file_changes(bundle_copy):
    first = load_bundle(bundle_copy, "cpu")
    assert load_bundle(bundle_copy, "cpu") is first
    flip_one_byte(bundle_copy / "classifier.pt", offset=30)
    with pytest.raises(BundleIntegrityError, match="classifier.pt"):
        load_bundle(bundle_copy, "cpu")


def test_missing_bundle_folder_is_named(tmp_path):
    with pytest.raises(BundleError, match="folder not found"):
        load_bundle(tmp_path / "nowhere", "cpu")


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
    bundle = load_bundle(tiny_bundle, "cuda")
    assert bundle.device == "cpu"
    assert any("not available" in warning for warning in bundle.warnings)
