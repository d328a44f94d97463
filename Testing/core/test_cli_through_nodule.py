"""`cyclegan-explain explain` through the nodule: one overlay per nodule that lines up with the CT in patient
space, each slice's probabilities in summary.json and the figure, --half-extent-mm checked."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.cli import main
from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.overlay import BENIGN_RGB, MALIGNANT_RGB
from CycleGANExplainLib.patch_sampling import extract_patch
from CycleGANExplainLib.volume_io import write_volume

SEED_RAS = np.array([-3.0, 4.5, 2.5])  # on a CT slice, as a click in the axial view places it


@pytest.fixture
def ct_file(lung_volume, tmp_path):
    volume, ijk_to_ras = lung_volume
    (tmp_path / "input").mkdir()
    return write_volume(volume, ijk_to_ras, tmp_path / "input" / "ct.nrrd")


def run(ct_file, bundle, out, *extra) -> int:
    return main(["explain", str(ct_file), "--seed={},{},{}".format(*SEED_RAS), "--out", str(out), "--bundle",
                 str(bundle), "--allow-unknown-bundle", "--device", "cpu", *extra])


def lps(ras) -> np.ndarray:
    return np.asarray(ras, dtype=float) * [-1.0, -1.0, 1.0]


def test_the_overlay_lies_on_the_ct_slices_through_the_nodule(ct_file, tiny_bundle, lung_volume, tmp_path):
    assert run(ct_file, tiny_bundle, tmp_path / "out", "--no-figures") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    entry = summary["seeds"][0]
    overlay = sitk.ReadImage(str(tmp_path / "out" / entry["overlay"]))
    ct = sitk.ReadImage(str(ct_file))
    assert overlay.GetSize() == (64, 64, 9)
    # An axial stack: patch columns towards L, rows towards P, slices towards S (identity in LPS).
    np.testing.assert_allclose(np.reshape(overlay.GetDirection(), (3, 3)), np.eye(3), atol=1e-9)
    np.testing.assert_allclose(overlay.GetSpacing(), [45 / 64, 45 / 64, 2.5], rtol=1e-6)
    seed_index_ct = np.array(ct.TransformPhysicalPointToContinuousIndex(lps(SEED_RAS).tolist()))
    values = sitk.GetArrayFromImage(overlay)
    volume, ijk_to_ras = lung_volume
    for k in range(9):
        offset = (k - 4) * 2.5
        for column, row in ((0, 0), (63, 0), (0, 63), (40, 17)):
            point = np.array(overlay.TransformIndexToPhysicalPoint((column, row, k)))
            # The same place the sampler cut this slice's patch pixel from ...
            patch = extract_patch(volume, ijk_to_ras, SEED_RAS + [0.0, 0.0, offset])
            np.testing.assert_allclose(point, lps((patch.patch_to_ras @ [column, row, 0, 1])[:3]), atol=1e-4)
            # ... on the CT's slice `offset` mm above the seed's (what the axial view scrolls to).
            index = np.array(ct.TransformPhysicalPointToContinuousIndex(point.tolist()))
            assert index[2] == pytest.approx(seed_index_ct[2] + offset / 2.5, abs=1e-6)
    # Resampled onto the CT's grid (what Slicer's coronal and sagittal views do), the map fills the CT slices
    # the stack spans and its values come back at the CT voxels on the stack's slices.
    resampled = sitk.GetArrayFromImage(sitk.Resample(overlay, ct, sitk.Transform(), sitk.sitkNearestNeighbor, np.nan))
    covered = np.flatnonzero(np.any(np.isfinite(resampled), axis=(1, 2)))
    seed_k = int(round(seed_index_ct[2]))
    assert covered.tolist() == list(range(seed_k - 4, seed_k + 5))
    centre_voxel = np.rint(seed_index_ct).astype(int)
    nearest = overlay.TransformPhysicalPointToIndex(ct.TransformIndexToPhysicalPoint(centre_voxel.tolist()))
    assert resampled[tuple(centre_voxel[::-1])] == values[nearest[2], nearest[1], nearest[0]]


def test_summary_lists_each_slice_and_keeps_the_seeds_own_fields(ct_file, tiny_bundle, lung_volume, tmp_path):
    assert run(ct_file, tiny_bundle, tmp_path / "out", "--half-extent-mm", "5") == 0
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["seeds"][0]
    through = entry["through_nodule"]
    assert through["offsets_mm"] == [-5.0, -2.5, 0.0, 2.5, 5.0] and through["centre_slice"] == 2
    assert through["half_extent_mm"] == 5.0 and through["step_mm"] == 2.5 and through["dropped_offsets_mm"] == []
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    for index, offset in enumerate(through["offsets_mm"]):
        alone = explain(volume, ijk_to_ras, [SEED_RAS + [0.0, 0.0, offset]], bundle)[0]
        for key, value in (("x", alone.p_x), ("G_neg(x)", alone.p_neg), ("G_pos(x)", alone.p_pos)):
            assert through["malignancy_probability"][key][index] == pytest.approx(value, abs=1e-5)
    # The fields a single-slice run wrote are still the seed's slice.
    for key in ("x", "G_neg(x)", "G_pos(x)"):
        assert entry["malignancy_probability"][key] == through["malignancy_probability"][key][2]
    overlay = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / entry["overlay"])))
    assert float(overlay[2].max()) == pytest.approx(entry["relevance"]["max"], abs=1e-6)
    assert float(overlay.max()) == pytest.approx(through["relevance"]["max"], abs=1e-6)
    # The figure: the four images and, right of them, the slices' probabilities in the legend's colours.
    figure = matplotlib.image.imread(tmp_path / "out" / entry["figure"])[..., :3]
    assert figure.shape[1] == 1300
    plot = figure[:, 1000:]
    for rgb in (BENIGN_RGB, MALIGNANT_RGB):
        assert np.any(np.all(np.abs(plot - np.array(rgb)) < 0.02, axis=-1)), rgb


def test_half_extent_zero_is_the_seeds_slice_alone(ct_file, tiny_bundle, lung_volume, tmp_path):
    assert run(ct_file, tiny_bundle, tmp_path / "out", "--half-extent-mm", "0", "--no-figures") == 0
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["seeds"][0]
    overlay = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / entry["overlay"])))
    volume, ijk_to_ras = lung_volume
    alone = explain(volume, ijk_to_ras, [SEED_RAS], load_bundle(tiny_bundle, "cpu", allow_unknown=True))[0]
    assert overlay.shape == (1, 64, 64) and entry["through_nodule"]["offsets_mm"] == [0.0]
    np.testing.assert_array_equal(overlay[0], alone.relevance)


def test_slices_beyond_the_ct_are_left_out_with_a_warning(ct_file, tiny_bundle, tmp_path, capsys):
    code = main(["explain", str(ct_file), "--seed=0,0,33", "--out", str(tmp_path / "out"), "--bundle", str(tiny_bundle),
                 "--allow-unknown-bundle", "--device", "cpu", "--no-figures"])
    assert code == 0
    assert "the slices at +5.0, +7.5, +10.0 mm along S were not explained" in capsys.readouterr().err
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["seeds"][0]
    assert entry["through_nodule"]["offsets_mm"][-1] == 2.5 and len(entry["through_nodule"]["offsets_mm"]) == 6


@pytest.mark.parametrize("value, message", [
    ("-1", "from 0 to 40 mm"),
    ("100", "from 0 to 40 mm"),
    ("nan", "a distance in millimetres (a number), got 'nan'"),
    ("1_0", "got '1_0'"),
    ("ten", "got 'ten'"),
])
def test_bad_half_extent_exits_2_with_a_message(value, message, ct_file, tiny_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run(ct_file, tiny_bundle, tmp_path / "out", f"--half-extent-mm={value}")
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "--half-extent-mm" in error and message in error
    assert not (tmp_path / "out").exists()
