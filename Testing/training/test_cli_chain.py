"""The whole chain through the command line, on the tiny config: prepare -> train -> export -> evaluate.

prepare and evaluate are other modules of the package; each step is skipped (not failed) while
its module is missing, and runs for real once it exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.model_bundle import load_bundle
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.cli import main
from cyclegan_explain_training.config import load_config

TINY_CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.json"


def test_prepare_train_export_evaluate(tmp_path, lung_volume, capsys):
    data, classifier_dir, gan_dir, bundle = (tmp_path / name for name in ("data", "classifier", "gan", "bundle"))
    assert main(["prepare", "--out", str(data), "--source", "phantoms", "--limit", "40", "--quiet"]) == 0

    common = ["--dataset", str(data), "--config", str(TINY_CONFIG), "--device", "cpu", "--quiet"]
    assert main(["train-classifier", *common, "--out", str(classifier_dir), "--epochs", "3"]) == 0
    classifier = classifier_dir / "classifier.pt"
    assert load_checkpoint(classifier)["epochs_run"] <= 3  # the flag overrides the config's 6

    steps = 12  # the flag overrides the config's 24
    assert main(["train-cyclegan", *common, "--classifier", str(classifier), "--out", str(gan_dir),
                 "--steps", str(steps)]) == 0
    state = load_checkpoint(gan_dir / "cyclegan.pt")
    assert state["step"] == steps
    assert state["width"] == load_config(TINY_CONFIG).cyclegan.width == 4

    assert main(["export", "--dataset", str(data), "--classifier", str(classifier), "--cyclegan",
                 str(gan_dir / "cyclegan.pt"), "--out", str(bundle), "--name", "tiny-chain"]) == 0
    loaded = load_bundle(bundle, "cpu", allow_unknown=True)
    training = loaded.metadata.raw["training_data"]
    manifest = json.loads((data / "manifest.json").read_text())
    assert training["dataset"]["patches_sha256"] == manifest["patches_sha256"]
    assert training["commands"][0].startswith("cyclegan-explain-train train-classifier")
    assert training["commands"][-1].startswith("cyclegan-explain-train export")
    volume, ijk_to_ras = lung_volume
    result = explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], loaded)
    assert result.trained and np.isfinite(result[0].relevance).all()

    # An existing bundle is not overwritten without --overwrite: exit status 2 and a message.
    capsys.readouterr()
    assert main(["export", "--dataset", str(data), "--classifier", str(classifier), "--cyclegan",
                 str(gan_dir / "cyclegan.pt"), "--out", str(bundle)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    assert main(["evaluate", "--allow-unknown-bundle", "--bundle", str(bundle), "--dataset", str(data), "--out", str(tmp_path / "eval"),
                 "--bootstrap", "50", "--device", "cpu"]) == 0
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["bundle"]["name"] == "tiny-chain"
    assert evaluation["dataset"]["patches_sha256"] == manifest["patches_sha256"]
