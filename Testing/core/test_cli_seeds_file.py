"""`cyclegan-explain explain --seeds-file`: every nodule of a case from a CSV or JSON file in RAS or LPS, with
its label kept through summary.json, the case's table (case_summary.csv and .md) and the console; bad files
refused with exit 2 before anything is written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.case_summary import CSV_FILE, MARKDOWN_FILE
from CycleGANExplainLib.cli import EXIT_BAD_INPUT, main
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.patch_sampling import patch_to_ras_matrix
from CycleGANExplainLib.volume_io import ijk_to_ras_of, write_volume


@pytest.fixture
def ct_file(lung_volume, tmp_path):
    volume, ijk_to_ras = lung_volume
    (tmp_path / "input").mkdir()
    return write_volume(volume, ijk_to_ras, tmp_path / "input" / "ct.nrrd")


def run(ct, out, bundle, *extra):
    return main(["explain", str(ct), "--out", str(out), "--bundle", str(bundle), "--allow-unknown-bundle",
                 "--device", "cpu", "--no-figures", *extra])


def test_csv_in_lps_labels_every_output(ct_file, tiny_bundle, tmp_path, capsys):
    seeds = tmp_path / "input" / "nodules.csv"
    seeds.write_text("label,L,P,S\nright upper,-10,5,2.5\nN|2,0,0,0\n", encoding="utf-8")
    out = tmp_path / "out"
    # One slice per seed: the overlay is then the seed's own patch (stacks: test_cli_through_nodule).
    assert run(ct_file, out, tiny_bundle, "--seed=1,2,3", "--seeds-file", str(seeds), "--half-extent-mm", "0") == 0
    console = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    assert [seed["label"] for seed in summary["seeds"]] == [None, "right upper", "N|2"]
    expected_ras = [[1, 2, 3], [10, -5, 2.5], [0, 0, 0]]
    assert [seed["seed_ras_mm"] for seed in summary["seeds"]] == expected_ras
    # The overlay of the LPS row lies on the patch around its RAS position.
    overlay = sitk.ReadImage(str(out / summary["seeds"][1]["overlay"]))
    # In-plane axes and origin; the one slice's thickness is the CT's step along S, not the patch's.
    np.testing.assert_allclose(ijk_to_ras_of(overlay)[:, [0, 1, 3]], patch_to_ras_matrix(expected_ras[1])[:, [0, 1, 3]],
                               atol=1e-5)
    assert summary["files"] == [CSV_FILE, MARKDOWN_FILE]

    with open(out / CSV_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["seed 1", "right upper", "N|2"]
    for row, entry in zip(rows, summary["seeds"]):
        p = entry["malignancy_probability"]
        assert [float(row[key]) for key in ("R_mm", "A_mm", "S_mm")] == pytest.approx(entry["seed_ras_mm"], abs=0.05)
        assert (row["p_x"], row["p_G_neg"], row["p_G_pos"]) == tuple(
            probability_text(p[key]) for key in ("x", "G_neg(x)", "G_pos(x)"))
        assert row["G_neg_reached_benign"] == ("yes" if p["G_neg(x)"] < 0.5 else "no")
        assert row["G_pos_reached_malignant"] == ("yes" if p["G_pos(x)"] > 0.5 else "no")
        assert row["caveats"].split() == [caveat["code"] for caveat in entry["caveats"]]
        assert row["overlay"] == entry["overlay"] and (out / row["overlay"]).is_file()
        assert "figure" not in row  # --no-figures: no column for files never written
    markdown = (out / MARKDOWN_FILE).read_text(encoding="utf-8")
    assert "| 3 | N\\|2 | 0.0 | 0.0 | 0.0 |" in markdown and "Research use only" in markdown
    assert "seed 2 (right upper) [10.0, -5.0, 2.5]: p(malignant)" in console
    assert f"{out / CSV_FILE}" in console
    assert sorted(path.name for path in (tmp_path / "input").iterdir()) == ["ct.nrrd", "nodules.csv"]

    # A second run into the same folder replaces the first whole: the case's files are the run's own.
    assert run(ct_file, out, tiny_bundle, "--seeds-file", str(seeds)) == 0
    with open(out / CSV_FILE, newline="", encoding="utf-8") as handle:
        assert [row["label"] for row in csv.DictReader(handle)] == ["right upper", "N|2"]


def test_slicer_markups_file(ct_file, tiny_bundle, tmp_path):
    markups = {"markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [
        {"label": "F-1", "position": [4.0, -3.0, 1.0], "positionStatus": "defined"}]}]}
    seeds = tmp_path / "points.mrk.json"
    seeds.write_text(json.dumps(markups), encoding="utf-8")
    assert run(ct_file, tmp_path / "out", tiny_bundle, "--seeds-file", str(seeds)) == 0
    [entry] = json.loads((tmp_path / "out" / "summary.json").read_text())["seeds"]
    assert entry["label"] == "F-1" and entry["seed_ras_mm"] == [4.0, -3.0, 1.0]


@pytest.mark.parametrize("name, text, message", [
    ("s.csv", "R,A,S\n1,2,x\n", "s.csv line 2, column S: 'x' is not a number"),
    ("s.csv", "id,R,A,S\nN1,1,2,3\nN1,4,5,6\n", "'N1' is given twice (" ),
    ("s.json", '{"seeds": [[1, 2, 3]]}', "no coordinate_system (RAS or LPS) is stated"),
    ("s.csv", "id,R,A,S\nfar,0,0,500\n", "Seed(s) 1 (far, "),
])
def test_bad_seeds_file_exits_2_and_writes_nothing(ct_file, tiny_bundle, tmp_path, capsys, name, text, message):
    seeds = tmp_path / name
    seeds.write_text(text, encoding="utf-8")
    assert run(ct_file, tmp_path / "out", tiny_bundle, "--seeds-file", str(seeds)) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert message in error and str(seeds) in error
    assert not (tmp_path / "out").exists()


def test_no_seed_at_all_exits_2(ct_file, tiny_bundle, tmp_path, capsys):
    assert run(ct_file, tmp_path / "out", tiny_bundle) == EXIT_BAD_INPUT
    assert "No nodule to explain: give --seed R,A,S, --seeds-file FILE or --seeds-from-dicom SR|SEG" in \
        capsys.readouterr().err


def test_out_holding_the_seeds_file_is_refused(ct_file, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    seeds = out / "s.csv"
    seeds.write_text("R,A,S\n0,0,0\n", encoding="utf-8")
    assert run(ct_file, out, tiny_bundle, "--seeds-file", str(seeds)) == EXIT_BAD_INPUT
    assert "is or holds the input s.csv" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["s.csv"]
