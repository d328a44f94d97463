"""The bundled samples: the real CT is the default, each file matches its description, the real CT's
documented tumour is where its description says, and its attribution is there to show."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from CycleGANExplainLib.cli import main
from CycleGANExplainLib.patch_sampling import extract_patch
from CycleGANExplainLib.sample_data import (DEFAULT_SAMPLE, SAMPLES, SYNTHETIC_SAMPLE, TCIA_SAMPLE, UnknownSampleError,
                                           opening_nodule_id, sample_description, sample_description_path,
                                           sample_nodule, sample_nodules, sample_notice, sample_of_path,
                                           sample_volume_path)
from CycleGANExplainLib.volume_io import read_volume


@pytest.fixture(scope="module")
def real_ct():
    return read_volume(sample_volume_path(TCIA_SAMPLE))


def test_the_default_is_the_real_ct_and_each_opens_on_its_documented_nodule():
    assert DEFAULT_SAMPLE == TCIA_SAMPLE and set(SAMPLES) == {TCIA_SAMPLE, SYNTHETIC_SAMPLE}
    assert opening_nodule_id() == "T1" and sample_nodule().id == "T1"
    assert opening_nodule_id(SYNTHETIC_SAMPLE) == "N2"
    assert sample_nodule(sample=SYNTHETIC_SAMPLE).diameter_mm == 20.0
    assert list(sample_nodules(SYNTHETIC_SAMPLE)) == ["N1", "N2", "N3", "N4"]


def test_unknown_samples_and_nodules_are_refused_by_name():
    with pytest.raises(UnknownSampleError, match=f"No sample CT named 'Chest' \\(samples: {TCIA_SAMPLE}, "
                                                 f"{SYNTHETIC_SAMPLE}\\)"):
        sample_volume_path("Chest")
    with pytest.raises(KeyError, match=f"Nodule 'N2' is not documented in {TCIA_SAMPLE}.json \\(documented: T1\\)"):
        sample_nodule("N2")


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_file_matches_its_recorded_checksums_and_geometry(sample):
    description = sample_description(sample)
    path = sample_volume_path(sample)
    assert path.stat().st_size <= 5 * 1024 * 1024  # a few MB in the repository
    assert hashlib.sha256(path.read_bytes()).hexdigest() == description["file_sha256"]
    loaded = read_volume(path)
    assert hashlib.sha256(np.ascontiguousarray(loaded.volume_kji).tobytes()).hexdigest() == description["voxels_sha256"]
    assert list(loaded.volume_kji.shape[::-1]) == description["size_ijk"]
    np.testing.assert_allclose(loaded.ijk_to_ras, description["ijk_to_ras"], atol=1e-5)


def test_the_real_ct_is_a_whole_axial_chest_ct_around_its_tumour(real_ct):
    volume, ijk_to_ras = real_ct.volume_kji, real_ct.ijk_to_ras
    assert volume.shape[1:] == (512, 512) and volume.dtype == np.int16
    np.testing.assert_allclose(np.diag(ijk_to_ras)[:3], [-0.646484, -0.646484, 8.0], atol=1e-5)
    assert volume[:, :10, :10].mean() < -950  # air outside the body
    assert (volume > 400).sum() > 1000  # bone (spine, ribs)
    nodule = sample_nodule(sample=TCIA_SAMPLE)
    patch = extract_patch(volume, ijk_to_ras, nodule.centre_ras_mm).pixels
    # The tumour is at the patch centre, lung around it.
    assert patch[28:36, 28:36].mean() > -100.0
    assert np.percentile(patch, 10) < -700.0
    # Its boxes lie inside the volume, the documented centre inside the box of its slice.
    boxes = sample_description(TCIA_SAMPLE)["nodules"][0]["boxes"]
    centre_box = next(box for box in boxes if box["s_mm"] == nodule.centre_ras_mm[2])
    (r_a, a_a, _), (r_b, a_b, _) = centre_box["corner_ras_mm"]
    assert min(r_a, r_b) < nodule.centre_ras_mm[0] < max(r_a, r_b)
    assert min(a_a, a_b) < nodule.centre_ras_mm[1] < max(a_a, a_b)
    assert all(0 <= box["slice_k"] < volume.shape[0] for box in boxes)


def test_the_real_ct_carries_its_attribution_and_the_synthetic_needs_none():
    notice = sample_notice(TCIA_SAMPLE)
    assert "Lung-PET-CT-Dx" in notice and "CC BY 4.0" in notice
    assert "https://doi.org/10.7937/TCIA.2020.NNC2-0461" in notice and "(2) Clark K" in notice
    assert sample_notice(SYNTHETIC_SAMPLE) is None
    # Nothing that could identify the person: the description names the collection, not a subject.
    text = sample_description_path(TCIA_SAMPLE).read_text().lower()
    for word in ("patientname", "patientid", "birth", "lung_dx", "1.3.6.1.4.1"):
        assert word not in text


def test_a_sample_is_known_by_its_path_or_its_bytes(tmp_path):
    for sample in SAMPLES:
        assert sample_of_path(sample_volume_path(sample)) == sample
    copy = tmp_path / "renamed.nrrd"
    shutil.copyfile(sample_volume_path(TCIA_SAMPLE), copy)
    assert sample_of_path(copy) == TCIA_SAMPLE
    changed = bytearray(copy.read_bytes())
    changed[-1] ^= 0xFF
    copy.write_bytes(bytes(changed))  # same size, other bytes: not the sample
    assert sample_of_path(copy) is None
    assert sample_of_path(tmp_path) is None and sample_of_path(tmp_path / "missing.nrrd") is None


@pytest.mark.parametrize("sample", SAMPLES)
def test_the_command_line_prints_the_attribution_of_the_sample_it_explains(sample, tmp_path, capsys):
    seed = ",".join(str(value) for value in sample_nodule(sample=sample).centre_ras_mm)
    code = main(["explain", str(sample_volume_path(sample)), f"--seed={seed}", "--out", str(tmp_path / "out"),
                 "--no-figures", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    data_lines = [line for line in printed.splitlines() if line.startswith("Data: ")]
    assert data_lines == ([f"Data: {sample_notice(sample)}"] if sample == TCIA_SAMPLE else [])
