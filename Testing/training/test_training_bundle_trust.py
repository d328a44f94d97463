"""The training commands that run a bundle ask for the same opt-in as `cyclegan-explain` (issue 23,
item 14): without --allow-unknown-bundle, evaluate and compare-methods refuse a bundle the package
does not ship before running any of it (exit 2, the flag named, nothing written); export checks its
own output without saying that someone allowed it."""

from __future__ import annotations

import logging

import pytest
import torch

from cyclegan_explain_training.cli import main

from CycleGANExplainLib.model_bundle import clear_bundle_cache


@pytest.mark.parametrize("command", ["evaluate", "compare-methods"])
def test_an_unknown_bundle_runs_only_with_the_flag(command, tiny_bundle, tmp_path, capsys, monkeypatch):
    def must_not_load(*_args, **_kwargs):
        raise AssertionError("torch.jit.load ran on an unknown bundle without --allow-unknown-bundle")

    clear_bundle_cache()  # a load cached by another test must not stand in for this one
    monkeypatch.setattr(torch.jit, "load", must_not_load)
    out = tmp_path / "out"
    code = main([command, "--bundle", str(tiny_bundle), "--dataset", str(tmp_path / "no-dataset"),
                 "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "not one of the bundles shipped" in err and "--allow-unknown-bundle" in err, err
    assert "Traceback" not in err and not out.exists()

    monkeypatch.undo()
    code = main([command, "--allow-unknown-bundle", "--bundle", str(tiny_bundle), "--dataset",
                 str(tmp_path / "no-dataset"), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "not one of the bundles shipped" not in err  # past the trust check: the dataset is missing


def test_export_checks_its_own_bundle_without_saying_someone_allowed_it(tmp_path, caplog):
    from cyclegan_explain_training.export import export_untrained_bundle

    with caplog.at_level(logging.WARNING):
        export_untrained_bundle(tmp_path / "bundle", classifier_width=4, generator_width=4)
    assert "you allowed it" not in caplog.text and "not shipped" not in caplog.text
