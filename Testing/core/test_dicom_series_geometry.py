"""DICOM series that are not a regular grid: uneven spacing, missing slices, gantry tilt, duplicates.

Real series written with pydicom, read back through the CLI's reader: the nodule must be where the
files say it is, not where a regular grid would put it.
"""

from __future__ import annotations

import numpy as np
import pytest

from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume

PIXEL_MM = 1.0
SIZE = 48
ORIGIN_XY = (-24.0, -24.0)
NODULE_LPS = np.array([2.0, -3.0, 30.0])
NODULE_RADIUS_MM = 6.0


def render_slices(positions_z, origins_xy):
    """Each slice's pixels sampled from a sphere at NODULE_LPS, at the slice's own position."""
    j, i = np.mgrid[0:SIZE, 0:SIZE]
    slices = []
    for z, (ox, oy) in zip(positions_z, origins_xy):
        x, y = ox + i * PIXEL_MM, oy + j * PIXEL_MM
        inside = (x - NODULE_LPS[0]) ** 2 + (y - NODULE_LPS[1]) ** 2 + (z - NODULE_LPS[2]) ** 2 <= NODULE_RADIUS_MM**2
        slices.append(np.where(inside, 40, -900))
    return np.array(slices, dtype=np.int16)


def nodule_centre_ras(loaded) -> np.ndarray:
    k, j, i = np.nonzero(np.asarray(loaded.volume_kji) > -430)
    weights = np.asarray(loaded.volume_kji)[k, j, i] + 900.0
    ijk = np.stack([i, j, k, np.ones_like(i)]).astype(float)
    return ((loaded.ijk_to_ras @ ijk) * weights).sum(axis=1)[:3] / weights.sum()


def lps_to_ras(lps):
    return np.array([-lps[0], -lps[1], lps[2]])


def test_variable_spacing_is_resampled_onto_the_files_positions(tmp_path, ct_series_writer):
    z = [0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0]
    volume = render_slices(z, [ORIGIN_XY] * len(z))
    ct_series_writer(tmp_path / "ct", volume, PIXEL_MM, z, ORIGIN_XY, 2.5, reverse_file_order=True)
    loaded = read_volume(tmp_path / "ct")
    np.testing.assert_allclose(nodule_centre_ras(loaded), lps_to_ras(NODULE_LPS), atol=1.0)
    np.testing.assert_allclose(np.linalg.norm(loaded.ijk_to_ras[:3, 2]), 2.5, atol=1e-6)
    assert loaded.volume_kji.shape[0] == 19  # 0 .. 45 mm every 2.5 mm
    assert any("varies from 2.50 to 5.00 mm" in note for note in loaded.notes)
    assert any("resampled onto a regular grid" in note for note in loaded.notes)


def test_a_missing_slice_is_reported_and_bridged(tmp_path, ct_series_writer):
    z = [20.0 + 2.0 * k for k in range(10) if k != 6]
    volume = render_slices(z, [ORIGIN_XY] * len(z))
    ct_series_writer(tmp_path / "ct", volume, PIXEL_MM, z, ORIGIN_XY, 2.0)
    loaded = read_volume(tmp_path / "ct")
    assert loaded.volume_kji.shape[0] == 10
    assert any("varies from 2.00 to 4.00 mm" in note for note in loaded.notes)
    np.testing.assert_allclose(nodule_centre_ras(loaded), lps_to_ras(NODULE_LPS), atol=1.0)


def test_gantry_tilt_is_undone(tmp_path, ct_series_writer):
    z = [10.0 + 2.5 * k for k in range(16)]
    shear = np.tan(np.radians(15.0))
    origins = [(ORIGIN_XY[0], ORIGIN_XY[1] + (value - z[0]) * shear) for value in z]
    volume = render_slices(z, origins)
    ct_series_writer(tmp_path / "ct", volume, PIXEL_MM, z, ORIGIN_XY, 2.5, slice_origins_xy_lps=origins)
    loaded = read_volume(tmp_path / "ct")
    assert any("gantry tilt of 15.0°" in note for note in loaded.notes)
    np.testing.assert_allclose(nodule_centre_ras(loaded), lps_to_ras(NODULE_LPS), atol=1.0)


def test_regular_series_is_left_as_simpleitk_reads_it(tmp_path, ct_series_writer):
    z = [20.0 + 2.0 * k for k in range(12)]
    volume = render_slices(z, [ORIGIN_XY] * len(z))
    ct_series_writer(tmp_path / "ct", volume, PIXEL_MM, z, ORIGIN_XY, 2.0)
    loaded = read_volume(tmp_path / "ct")
    assert loaded.notes == ()
    np.testing.assert_array_equal(loaded.volume_kji, volume)


def test_duplicate_slice_positions_are_refused(tmp_path, ct_series_writer):
    z = [20.0, 22.0, 24.0, 24.0, 26.0]
    volume = render_slices(z, [ORIGIN_XY] * len(z))
    ct_series_writer(tmp_path / "ct", volume, PIXEL_MM, z, ORIGIN_XY, 2.0)
    with pytest.raises(UnreadableVolumeError, match=r"as one CT volume: 1 slice\(s\) of the series lie at the same position .*24.00 mm"):
        read_volume(tmp_path / "ct")
