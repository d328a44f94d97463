"""`cyclegan-explain explain` says when an explanation failed: in summary.json, on the console and in the figure."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np

from CycleGANExplainLib.caveats import G_NEG_NOT_BENIGN
from CycleGANExplainLib.cli import main
from CycleGANExplainLib.explanation_figure import CAVEAT_COLOUR
from CycleGANExplainLib.formatting import probability_text
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path

# On the sample CT, the shipped default bundle's G-(x) does not reach benign beside the mediastinum
# (p about 0.99); the small solid nodule N1 is explained without a caveat.
G_NEG_FAILS_RAS = "30,20,-20"


def caveat_pixels(figure_path, rows: int = 40) -> int:
    """Pixels of the caveats' red in the figure's top band (heading and caveats, above the panels' titles)."""
    rgb = matplotlib.image.imread(figure_path)[:rows, :, :3]
    red = np.array([int(CAVEAT_COLOUR[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return int((np.abs(rgb - red).max(axis=-1) < 0.1).sum())


def test_a_counterfactual_that_did_not_reach_benign_is_in_the_summary_console_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    nodule = ",".join(f"{value}" for value in sample_nodule("N1", SYNTHETIC_SAMPLE).centre_ras_mm)
    code = main(["explain", str(sample_volume_path(SYNTHETIC_SAMPLE)), f"--seed={nodule}", f"--seed={G_NEG_FAILS_RAS}",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    clean, failed = summary["seeds"]
    assert clean["caveats"] == []
    p_neg = failed["malignancy_probability"]["G_neg(x)"]
    assert p_neg >= 0.5
    [caveat] = failed["caveats"]
    assert caveat["code"] == G_NEG_NOT_BENIGN
    assert caveat["text"].startswith(f"G-(x) did not reach benign (p = {probability_text(p_neg)}, not below 0.500)")

    lines = capsys.readouterr().out.splitlines()
    seed_lines = [number for number, line in enumerate(lines) if line.startswith("seed ")]
    assert lines[seed_lines[1] + 1] == f"  caveat: {caveat['text']}"  # under its seed
    assert not any("caveat" in line for line in lines[seed_lines[0]:seed_lines[1]])

    clean_figure, failed_figure = (matplotlib.image.imread(out / seed["figure"]) for seed in (clean, failed))
    assert failed_figure.shape[0] > clean_figure.shape[0]  # a line more, for the caveat
    assert caveat_pixels(out / failed["figure"]) > 100 and caveat_pixels(out / clean["figure"]) == 0
