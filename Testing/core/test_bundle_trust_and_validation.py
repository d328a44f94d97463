"""Bundles as an attacker or a careless exporter would make them: unknown or re-signed bundles,
symbolic links, duplicate checksum lines, metadata out of range, networks of the wrong shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from CycleGANExplainLib import model_bundle
from CycleGANExplainLib.bundle_trust import KNOWN_BUNDLE_DIGESTS
from CycleGANExplainLib.cli import main
from CycleGANExplainLib.model_bundle import (BundleError, BundleIntegrityError, UntrustedBundleError, bundle_digest,
                                             default_bundle_dir, load_bundle, read_metadata, shipped_bundles,
                                             write_checksums)
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def rewrite_metadata(bundle: Path, change) -> None:
    raw = json.loads((bundle / "metadata.json").read_text())
    change(raw)
    (bundle / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle)  # re-signed: the checksums alone cannot tell


def test_every_shipped_bundle_is_known_by_its_digest():
    for bundle_dir in shipped_bundles():
        metadata = read_metadata(bundle_dir)
        key = f"{metadata.name} {metadata.version}"
        assert KNOWN_BUNDLE_DIGESTS.get(key) == bundle_digest(bundle_dir), (
            f"add {key!r}: {bundle_digest(bundle_dir)!r} to bundle_trust.KNOWN_BUNDLE_DIGESTS to ship it")
        bundle = load_bundle(bundle_dir, "cpu")
        assert bundle.shipped and bundle.warnings == []


def test_unknown_bundle_is_refused_before_any_file_is_deserialised(bundle_copy, monkeypatch):
    def must_not_load(*_args, **_kwargs):
        raise AssertionError("torch.jit.load ran on an unknown bundle")

    monkeypatch.setattr(torch.jit, "load", must_not_load)
    with pytest.raises(UntrustedBundleError, match="not one of the bundles shipped.*--allow-unknown-bundle"):
        load_bundle(bundle_copy, "cpu")


def test_allowed_unknown_bundle_runs_with_a_warning(bundle_copy):
    bundle = load_bundle(bundle_copy, "cpu", allow_unknown=True)
    assert not bundle.shipped
    assert any("was not shipped with CycleGANExplain" in warning and "you allowed it" in warning
               for warning in bundle.warnings)


def test_resigned_copy_of_a_shipped_bundle_is_unknown(tmp_path, capsys):
    copy = Path(shutil.copytree(default_bundle_dir(), tmp_path / "lidc-voi"))
    rewrite_metadata(copy, lambda raw: raw.update(summary="re-signed by someone else"))
    with pytest.raises(UntrustedBundleError):
        load_bundle(copy, "cpu")
    seed = ",".join(str(value) for value in sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)
    code = main(["explain", str(sample_volume_path(SYNTHETIC_SAMPLE)), f"--seed={seed}", "--out", str(tmp_path / "out"),
                 "--bundle", str(copy), "--device", "cpu"])
    assert code == 2 and "--allow-unknown-bundle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("linked", ["classifier.pt", "SHA256SUMS"])
def test_symbolic_links_inside_a_bundle_are_refused(bundle_copy, tmp_path, linked):
    outside = tmp_path / f"elsewhere-{linked}"
    (bundle_copy / linked).rename(outside)
    (bundle_copy / linked).symlink_to(outside)
    with pytest.raises(BundleIntegrityError, match=f"{linked} in .* is a symbolic link"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_duplicate_checksum_entries_are_refused(bundle_copy):
    sums = bundle_copy / "SHA256SUMS"
    lines = sums.read_text().splitlines(True)
    sums.write_text("".join(lines) + lines[1])
    with pytest.raises(BundleIntegrityError, match=r"lists \S+ twice"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


@pytest.mark.parametrize("field, value, message", [
    ("patch.size_px", 0, "patch.size_px is 0; expected an integer from 16 to 512"),
    ("patch.size_px", -4, "patch.size_px is -4"),
    ("patch.size_px", 64.5, "patch.size_px is 64.5"),
    ("patch.size_px", "64", "patch.size_px is '64'"),
    ("patch.extent_mm", 0, "patch.extent_mm is 0; expected a number from 5 to 300"),
    ("patch.extent_mm", "nan", "patch.extent_mm is 'nan'"),
    ("patch.extent_mm", float("nan"), "patch.extent_mm is nan"),
    ("intensity.hu_window", [400, -1000], "intensity.hu_window is \\[400, -1000\\]"),
    ("intensity.hu_window", [-1000, float("inf")], "intensity.hu_window is \\[-1000, inf\\]"),
    ("classes", ["benign", "malignant", "other"], "classes is \\['benign', 'malignant', 'other'\\]"),
    ("classes", ["benign", "cancer"], 'classes is .* one of them "malignant"'),
    ("trained", "false", "trained is 'false'; expected true or false \\(a JSON boolean, not a string\\)"),
    ("name", "", "name is ''; expected a non-empty string"),
])
def test_metadata_out_of_range_is_refused_naming_the_field(bundle_copy, field, value, message):
    def change(raw):
        target = raw
        *parents, leaf = field.split(".")
        for key in parents:
            target = target[key]
        target[leaf] = value

    rewrite_metadata(bundle_copy, change)
    with pytest.raises(BundleError, match=f"metadata.json: {message}"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


class WrongChannels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)


class ThreeLogits(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 3)


class FixedSize(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, 32, 32)


@pytest.mark.parametrize("filename, network, message", [
    ("generator_pos.pt", WrongChannels(), r"generator_pos.pt returns \(2, 2, 64, 64\) .* expected \(2, 1, 64, 64\)"),
    ("classifier.pt", ThreeLogits(), r"classifier.pt returns \(2, 3\) .* expected \(2, 2\)"),
    ("generator_neg.pt", FixedSize(), r"generator_neg.pt fails on a 64x64 patch batch"),
])
def test_networks_of_the_wrong_shape_are_refused_at_load(bundle_copy, filename, network, message):
    torch.jit.script(network).save(str(bundle_copy / filename))
    write_checksums(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)


def test_broken_bundle_on_the_command_line_exits_2_naming_the_field(bundle_copy, tmp_path, capsys):
    rewrite_metadata(bundle_copy, lambda raw: raw["patch"].update(size_px=-4))
    seed = ",".join(str(value) for value in sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)
    code = main(["explain", str(sample_volume_path(SYNTHETIC_SAMPLE)), f"--seed={seed}", "--out", str(tmp_path / "out"),
                 "--bundle", str(bundle_copy), "--allow-unknown-bundle", "--device", "cpu"])
    assert code == 2 and "patch.size_px is -4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bundles_command_prints_each_digest(capsys):
    assert main(["bundles"]) == 0
    out = capsys.readouterr().out
    for bundle_dir in shipped_bundles():
        assert f"SHA256SUMS digest: {bundle_digest(bundle_dir)} (known: shipped with this package)" in out
    assert model_bundle.DEFAULT_BUNDLE_NAME in out


def test_web_viewer_refuses_an_unknown_bundle_at_start(bundle_copy, capsys):
    from cyclegan_explain_web.cli import main as web_main

    assert web_main(["--bundle", str(bundle_copy), "--port", "0"]) == 2
    assert "--allow-unknown-bundle" in capsys.readouterr().err


def test_the_deprecated_web_command_runs_the_viewer_s_own_command(bundle_copy, capsys):
    assert main(["web", "--bundle", str(bundle_copy), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "'cyclegan-explain web' is deprecated; use 'cyclegan-explain-web'" in err
    assert "--allow-unknown-bundle" in err


class ConstantLogits(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), 42.0)


def test_a_file_swapped_after_its_check_is_never_the_one_loaded(bundle_copy, tmp_path, monkeypatch):
    """Trust and checksums are decided on the bytes that are deserialised (issue 23, item 13): a
    classifier.pt replaced right after its checksum was computed (here: from inside the hash, the
    narrowest window there is) is not the network that runs, and the next load refuses the file."""
    import hashlib

    classifier = bundle_copy / "classifier.pt"
    checked_digest = hashlib.sha256(classifier.read_bytes()).hexdigest()
    swapped_in = tmp_path / "swapped_in.pt"
    torch.jit.script(ConstantLogits()).save(str(swapped_in))
    real_sha256 = hashlib.sha256

    class SwapAfterHashing:
        def __init__(self, data: bytes = b"") -> None:
            self._hash = real_sha256(data)

        def update(self, data: bytes) -> None:
            self._hash.update(data)

        def hexdigest(self) -> str:
            digest = self._hash.hexdigest()
            if digest == checked_digest:
                classifier.write_bytes(swapped_in.read_bytes())
            return digest

    monkeypatch.setattr(model_bundle.hashlib, "sha256", SwapAfterHashing)
    bundle = load_bundle(bundle_copy, "cpu", allow_unknown=True)
    monkeypatch.undo()
    assert classifier.read_bytes() == swapped_in.read_bytes()  # the swap did happen
    with torch.inference_mode():
        logits = bundle.classifier(torch.zeros(1, 1, 64, 64))
    assert not torch.equal(logits, torch.full((1, 2), 42.0))  # the checked network ran, not the swapped one
    with pytest.raises(BundleIntegrityError, match="classifier.pt does not match its SHA-256 checksum"):
        load_bundle(bundle_copy, "cpu", allow_unknown=True)
