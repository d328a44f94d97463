"""`cyclegan-explain explain --method`: a baseline's map for the same seed, recorded and drawn like ours."""

from __future__ import annotations

import json
import sys

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS
from CycleGANExplainLib.cli import main
from CycleGANExplainLib.volume_io import write_volume

SEED = "-3,4.5,2.5"


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """The lung_volume fixture's CT as NRRD (rebuilt here: function-scoped fixtures cannot be shared)."""
    rng = np.random.default_rng(7)
    volume = np.full((30, 80, 80), -850.0) + rng.normal(0, 20, (30, 80, 80))
    k, j, i = np.mgrid[0:30, 0:80, 0:80]
    volume[((i - 40) * 1.5) ** 2 + ((j - 40) * 1.5) ** 2 + ((k - 15) * 2.5) ** 2 <= 8.0**2] = 40.0
    ijk_to_ras = np.array([[-1.5, 0, 0, 60.0], [0, -1.5, 0, 60.0], [0, 0, 2.5, -37.5], [0, 0, 0, 1]])
    return write_volume(volume.astype(np.int16), ijk_to_ras, tmp_path_factory.mktemp("ct") / "ct.nrrd")


def run_cli(ct_file, bundle, out, *extra) -> int:
    """The seed's slice only (--half-extent-mm 0): a baseline costs a pass per slice."""
    return main(["explain", str(ct_file), f"--seed={SEED}", "--out", str(out), "--bundle", str(bundle), "--allow-unknown-bundle",
                 "--device", "cpu", "--half-extent-mm", "0", *extra])


@pytest.fixture(scope="module")
def ours(ct_file, tiny_bundle, tmp_path_factory):
    """CycleGAN-AM's summary and map for the seed (no --method: the default)."""
    out = tmp_path_factory.mktemp("ours")
    assert run_cli(ct_file, tiny_bundle, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    return summary, sitk.GetArrayFromImage(sitk.ReadImage(str(out / summary["seeds"][0]["overlay"])))


def test_default_method_is_cyclegan_am_and_recorded(ours):
    summary, _ = ours
    assert summary["method"] == {"key": DEFAULT_METHOD, "label": METHODS[DEFAULT_METHOD].label, "signed": True}
    assert summary["colours"].startswith("red = malignancy-indicating")


@pytest.mark.parametrize("method", ["integrated-gradients", "saliency", "occlusion"])
def test_baseline_map_for_the_same_seed(method, ours, ct_file, tiny_bundle, tmp_path, capsys):
    code = run_cli(ct_file, tiny_bundle, tmp_path, "--method", method)
    assert code == 0, capsys.readouterr().err
    assert METHODS[method].label in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    info = METHODS[method]
    assert summary["method"] == {"key": method, "label": info.label, "signed": info.signed}
    seed = summary["seeds"][0]
    our_summary, our_map = ours
    # Same networks, same patch: the probabilities agree; the map is the baseline's, not G+ - G-.
    assert seed["malignancy_probability"] == pytest.approx(our_summary["seeds"][0]["malignancy_probability"], abs=1e-6)
    overlay = sitk.ReadImage(str(tmp_path / seed["overlay"]))
    relevance = sitk.GetArrayFromImage(overlay)
    assert relevance.shape == our_map.shape == (1, 64, 64)
    assert np.all(np.isfinite(relevance)) and np.abs(relevance).max() > 0
    assert not np.allclose(relevance, our_map, atol=1e-4)
    assert seed["relevance"]["min"] == pytest.approx(float(relevance.min()), abs=1e-6)
    assert "log-odds" in seed["relevance"]["units"]
    if not info.signed:
        assert relevance.min() >= 0.0
        assert summary["colours"].startswith("unsigned map")
    assert matplotlib.image.imread(tmp_path / seed["figure"]).shape[1] > 800


def test_unknown_method_exits_2_listing_the_choices(ct_file, tiny_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(ct_file, tiny_bundle, tmp_path / "o", "--method", "deep-dream")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'deep-dream'" in err and "integrated-gradients" in err
    assert not (tmp_path / "o").exists()


def test_method_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for key, info in METHODS.items():
        assert key in help_text and info.label in help_text


def test_missing_package_exits_2_naming_the_pip_command(ct_file, tiny_bundle, tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "captum", None)
    code = run_cli(ct_file, tiny_bundle, tmp_path / "o", "--method", "integrated-gradients")
    assert code == 2
    err = capsys.readouterr().err
    assert "captum" in err and "pip install" in err
    assert not (tmp_path / "o").exists()
