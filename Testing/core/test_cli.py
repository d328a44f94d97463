"""`cyclegan-explain explain`: outputs placed in the CT's space, summary, progress and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.cli import DEFAULT_MARKER, main
from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata, resolve_bundle, shipped_bundles
from CycleGANExplainLib.notices import LIDC_IDRI_CITATIONS, RESEARCH_NOTICE, data_attribution_text
from CycleGANExplainLib.patch_sampling import patch_to_ras_matrix
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path
from CycleGANExplainLib.volume_io import ijk_to_ras_of, write_volume


@pytest.fixture
def ct_file(lung_volume, tmp_path):
    volume, ijk_to_ras = lung_volume
    (tmp_path / "input").mkdir()
    return write_volume(volume, ijk_to_ras, tmp_path / "input" / "ct.nrrd")


def test_explain_writes_overlay_figure_and_summary(ct_file, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    seeds = ["0,0,0", "-10.5,7,2.5"]
    code = main(["explain", str(ct_file), *[f"--seed={s}" for s in seeds], "--out", str(out),
                 "--bundle", str(tiny_bundle), "--allow-unknown-bundle", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "explained 18/18 patches" in captured.err  # nine slices through each nodule (the default +/-10 mm)
    assert "UNTRAINED" in captured.out and "Research use only" in captured.out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["trained"] is False and len(summary["seeds"]) == 2
    assert summary["bundle_summary"].startswith("Untrained placeholder")
    assert str(ct_file) not in json.dumps(summary)  # nothing that could name the patient's file
    for number, seed_text in enumerate(seeds, start=1):
        seed = [float(v) for v in seed_text.split(",")]
        entry = summary["seeds"][number - 1]
        assert 0 <= entry["malignancy_probability"]["x"] <= 1
        overlay = sitk.ReadImage(str(out / entry["overlay"]))
        assert overlay.GetSize() == (64, 64, 9)  # -10 .. +10 mm in the CT's 2.5 mm slices
        stack_to_ras = patch_to_ras_matrix(np.add(seed, [0.0, 0.0, -10.0]))
        stack_to_ras[2, 2] = 2.5
        np.testing.assert_allclose(ijk_to_ras_of(overlay), stack_to_ras, atol=1e-5)
        values = sitk.GetArrayFromImage(overlay)
        assert values.min() == pytest.approx(entry["through_nodule"]["relevance"]["min"], abs=1e-6)
        assert values[4].min() == pytest.approx(entry["relevance"]["min"], abs=1e-6)  # the seed's own slice
        figure = matplotlib.image.imread(out / entry["figure"])
        assert figure.shape[0] > 200 and figure.shape[1] > 800
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["ct.nrrd"]  # nothing written beside the input


@pytest.mark.parametrize(
    "make_input, seed, message",
    [
        ("outside", "0,0,500", "Seed(s) 1 lie outside the volume"),
        ("two_d", "0,0,0", "is a 2D image"),
        ("garbage", "0,0,0", "Cannot read"),
        ("mr_like", "0,0,0", "contains air"),
        ("missing", "0,0,0", "No such file"),
    ],
)
def test_bad_input_exits_2_with_a_specific_message(make_input, seed, message, ct_file, lung_volume, tiny_bundle,
                                                  tmp_path, capsys):
    volume, ijk_to_ras = lung_volume
    path = {
        "outside": ct_file,
        "two_d": tmp_path / "slice.nrrd",
        "garbage": tmp_path / "broken.nii.gz",
        "mr_like": tmp_path / "mr.nrrd",
        "missing": tmp_path / "absent.nrrd",
    }[make_input]
    if make_input == "two_d":
        sitk.WriteImage(sitk.GetImageFromArray(volume[0]), str(path))
    elif make_input == "garbage":
        path.write_bytes(b"\x1f\x8b not really gzip")
    elif make_input == "mr_like":
        write_volume(np.abs(volume) // 2, ijk_to_ras, path)
    code = main(["explain", str(path), f"--seed={seed}", "--out", str(tmp_path / "o"), "--bundle", str(tiny_bundle), "--allow-unknown-bundle"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tampered_bundle_is_refused_by_name(ct_file, tiny_bundle, tmp_path, capsys):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with open(bundle / "generator_pos.pt", "r+b") as stream:
        stream.seek(100)
        byte = stream.read(1)
        stream.seek(100)
        stream.write(bytes([byte[0] ^ 0xFF]))
    code = main(["explain", str(ct_file), "--seed=0,0,0", "--out", str(tmp_path / "o"), "--bundle", str(bundle), "--allow-unknown-bundle"])
    assert code == 2
    assert "generator_pos.pt does not match its SHA-256 checksum" in capsys.readouterr().err


def test_malformed_seed_is_an_argument_error(ct_file):
    result = subprocess.run(
        [sys.executable, "-m", "CycleGANExplainLib.cli", "explain", str(ct_file), "--seed=1,2", "--out", "x"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "seed must be R,A,S in millimetres" in result.stderr


def test_shipped_bundle_chosen_by_name_explains_the_sample_ct(tmp_path, capsys):
    seed = ",".join(str(value) for value in sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)
    out = tmp_path / "out"
    code = main(["explain", str(sample_volume_path(SYNTHETIC_SAMPLE)), f"--seed={seed}", "--out", str(out),
                 "--bundle", "lidc-phantoms", "--device", "cpu"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    metadata = read_metadata(resolve_bundle("lidc-phantoms"))
    assert summary["bundle"] == f"lidc-phantoms {metadata.version}" and summary["trained"] is True
    assert summary["bundle_summary"] == metadata.summary
    assert f"Bundle: lidc-phantoms {metadata.version};" in capsys.readouterr().out
    # What a trained bundle promises on the sample's documented nodules (the module's self-test too),
    # within float32 rounding of saturated probabilities.
    p = summary["seeds"][0]["malignancy_probability"]
    assert p["G_neg(x)"] <= p["x"] + 1e-3 and p["x"] <= p["G_pos(x)"] + 1e-3


def test_unknown_bundle_exits_2_naming_the_shipped_bundles(ct_file, tmp_path, capsys):
    code = main(["explain", str(ct_file), "--seed=0,0,0", "--out", str(tmp_path / "o"), "--bundle", "lidc-real"])
    assert code == 2
    error = capsys.readouterr().err
    assert "No model bundle named 'lidc-real'" in error
    assert f"Shipped bundles: {', '.join(path.name for path in shipped_bundles())};" in error
    assert not (tmp_path / "o").exists()


def test_bundles_lists_each_shipped_bundle_and_marks_the_default(capsys):
    assert main(["bundles"]) == 0
    printed = capsys.readouterr().out
    for bundle_dir in shipped_bundles():
        metadata = read_metadata(bundle_dir)
        marker = f" {DEFAULT_MARKER}" if bundle_dir == default_bundle_dir() else ""
        assert f"{bundle_dir.name}{marker}: {metadata.display_name}\n" in printed
        assert f"  trained on: {metadata.trained_on}\n  evaluation: {metadata.headline_evaluation}\n" in printed
    assert printed.count(DEFAULT_MARKER) == 1
    assert RESEARCH_NOTICE in printed
    assert data_attribution_text() in printed


def test_help_lists_the_bundles_and_attributes_lidc_idri():
    help_text = subprocess.run([sys.executable, "-m", "CycleGANExplainLib.cli", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "bundles" in help_text
    for citation in LIDC_IDRI_CITATIONS:
        assert citation in help_text
    # A wide terminal: argparse otherwise wraps at hyphens ("lidc- voi").
    wide = {**os.environ, "COLUMNS": "400"}
    explain_help = " ".join(subprocess.run([sys.executable, "-m", "CycleGANExplainLib.cli", "explain", "--help"],
                                           capture_output=True, text=True, check=True, env=wide).stdout.split())
    for bundle_dir in shipped_bundles():
        assert bundle_dir.name in explain_help
    assert f"(default: {default_bundle_dir().name};" in explain_help


def test_each_warning_is_said_once_and_known_third_party_warnings_only_with_verbose(tmp_path):
    """A fresh process (filters and log levels are per process): CUDA asked for on a machine without it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, where --device cuda falls back")
    seed = "--seed=" + ",".join(str(value) for value in sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)

    def run(*options):
        return subprocess.run([sys.executable, "-m", "CycleGANExplainLib.cli", *options, "explain",
                               str(sample_volume_path(SYNTHETIC_SAMPLE)), seed, "--out", str(tmp_path / "o"), "--no-figures",
                               "--device", "cuda"], capture_output=True, text=True, check=True)

    quiet = run()
    assert quiet.stderr.count("CUDA was requested but is not available") == 1, quiet.stderr
    assert "FutureWarning" not in quiet.stderr and "deprecated" not in quiet.stderr, quiet.stderr
    verbose = run("--verbose")
    assert "`torch.jit.load` is deprecated" in verbose.stderr
    assert verbose.stderr.count("CUDA was requested but is not available") == 2  # the log's line too
