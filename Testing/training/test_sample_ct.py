"""The bundled synthetic chest CT: its nodules are where its JSON says, and it regenerates exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.package_resources import sample_data_dir
from CycleGANExplainLib.patch_sampling import extract_patch
from cyclegan_explain_training import ct_rendering as ct
from cyclegan_explain_training import sample_ct

SAMPLE_DIR = sample_data_dir()
NRRD = SAMPLE_DIR / sample_ct.NRRD_NAME
DESCRIPTION = SAMPLE_DIR / sample_ct.JSON_NAME
PATCH_PIXEL_MM = 45.0 / 64


@pytest.fixture(scope="module")
def committed():
    image = sitk.ReadImage(str(NRRD))
    return image, sitk.GetArrayFromImage(image), json.loads(DESCRIPTION.read_text())


def _ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """Slicer's IJK-to-RAS from SimpleITK's LPS geometry (flip the first two axes)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps


def _distance_from_centre_mm() -> np.ndarray:
    rows, columns = np.mgrid[0:64, 0:64]
    return np.hypot(rows - 31.5, columns - 31.5) * PATCH_PIXEL_MM


def test_committed_file_is_small_and_matches_its_recorded_checksum(committed):
    _, _, description = committed
    assert NRRD.stat().st_size <= 5 * 1024 * 1024
    assert sample_ct.sha256_file(NRRD) == description["file_sha256"]


def test_geometry_is_an_axial_lps_ct_and_the_json_matrix_agrees(committed):
    image, volume, description = committed
    assert volume.dtype == np.int16
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert list(image.GetSize()) == description["size_ijk"]
    np.testing.assert_allclose(image.GetSpacing(), description["spacing_mm"])
    np.testing.assert_allclose(_ijk_to_ras_from_image(image), description["ijk_to_ras"], atol=1e-6)
    # Air outside the body at the corners, lung-to-bone range inside.
    assert volume[:, :5, :5].mean() < -950
    assert volume.max() > 300


@pytest.mark.parametrize("index", range(len(sample_ct.NODULES)))
def test_each_documented_nodule_is_at_its_ras_centre(committed, index):
    image, volume, description = committed
    nodule = description["nodules"][index]
    ijk_to_ras = _ijk_to_ras_from_image(image)
    patch = extract_patch(volume, ijk_to_ras, nodule["centre_ras_mm"]).pixels
    distance = _distance_from_centre_mm()
    radius = nodule["diameter_mm"] / 2.0
    core = patch[distance <= 0.3 * radius].mean()
    # Just outside the nodule the median is lung: the nodule is where the JSON says, not larger.
    surrounding = np.median(patch[(distance >= 1.6 * radius) & (distance <= 1.6 * radius + 4.0)])
    assert surrounding < -600, f"{nodule['id']}: surroundings {surrounding:.0f} HU are not lung"
    if nodule["lidc_calcification_rating"] != ct.CALCIFICATION_ABSENT:
        assert core > 200, f"{nodule['id']}: calcified centre only {core:.0f} HU"
    elif nodule["lidc_texture_rating"] >= 4:
        assert core > -300, f"{nodule['id']}: solid centre only {core:.0f} HU"
    else:
        assert -800 < core < -400, f"{nodule['id']}: ground-glass centre {core:.0f} HU"
        assert core - surrounding > 100


def test_regenerating_gives_identical_voxels_and_nodule_table(committed, tmp_path):
    _, volume, description = committed
    nrrd_path, json_path = sample_ct.write_sample_ct(tmp_path)
    regenerated = sitk.GetArrayFromImage(sitk.ReadImage(str(nrrd_path)))
    np.testing.assert_array_equal(regenerated, volume)
    fresh = json.loads(json_path.read_text())
    assert fresh["nodules"] == description["nodules"]
    assert fresh["voxels_sha256"] == description["voxels_sha256"]


def test_a_different_seed_changes_the_texture_but_not_the_nodule_table():
    small_a, _, records_a = sample_ct.render_sample_ct(in_plane_px=96, slice_count=30, seed=1)
    small_b, _, records_b = sample_ct.render_sample_ct(in_plane_px=96, slice_count=30, seed=2)
    assert [r["centre_ras_mm"] for r in records_a] == [r["centre_ras_mm"] for r in records_b]
    assert np.mean(small_a != small_b) > 0.5


def test_tubes_have_the_requested_radius_in_mm():
    geometry = ct.Geometry(shape_kji=(20, 40, 40), spacing_ijk=(0.5, 0.5, 1.0), origin_lps=(0.0, 0.0, 0.0))
    # A straight vessel along z through (x, y) = (10, 10) mm with a 3 mm radius.
    points = np.array([[10.0, 10.0, z] for z in np.arange(0.0, 20.0, 0.5)])
    fraction = ct.tube_fraction(geometry, points, np.full(len(points), 3.0))
    row = fraction[10, 20, :]  # y = 10 mm, along x
    x = np.arange(40) * 0.5
    assert np.all(row[np.abs(x - 10.0) <= 2.5] == 1.0)
    assert np.all(row[np.abs(x - 10.0) >= 3.5] == 0.0)
