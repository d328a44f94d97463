"""generator_validation: the figures that pick the exported generators, and the pick itself."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from CycleGANExplainLib.intensity import DEFAULT_HU_WINDOW
from CycleGANExplainLib.networks import MalignancyClassifier, UNetGenerator
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.config import load_config, with_overrides
from cyclegan_explain_training.context_fill import EVALUATION_FILLS
from cyclegan_explain_training.dataset import load_prepared
from cyclegan_explain_training.generator_validation import validate_generators, validation_set
from cyclegan_explain_training.run_log import read_metrics
from cyclegan_explain_training.train_classifier import train_classifier
from cyclegan_explain_training.train_cyclegan import (
    VALIDATION_CHECKS_DIR,
    VALIDATION_METRICS,
    batchnorm_patches,
    load_generators,
    train_cyclegan,
)

HU_WINDOW = list(DEFAULT_HU_WINDOW)
AIR = -1.0  # -1000 HU, the window's lower end, normalised


def _with_a_valid_box(dataset, row0=14, row1=50):
    """The dataset as if cut from sub-volumes: image only inside a central box."""
    valid = np.zeros(dataset.images_hu.shape, dtype=np.uint8)
    valid[:, row0:row1, row0:row1] = 1
    return dataclasses.replace(dataset, valid=valid)


@pytest.fixture(scope="module")
def discs(make_disc_dataset):
    return _with_a_valid_box(make_disc_dataset(16, seed=4))


@pytest.fixture(scope="module")
def classifier(discs):
    """A real (untrained) classifier whose threshold splits the patches into both decisions."""
    torch.manual_seed(0)
    network = MalignancyClassifier(4).eval()
    data = validation_set(discs, HU_WINDOW)
    with torch.no_grad():
        logits = torch.cat([network(images) for images in data.images_by_fill.values()])
        margin = logits[:, 1] - logits[:, 0]
        network.head[-1].bias[1] -= float(margin.median())
    return network


def _figures(generator_pos, generator_neg, classifier, discs):
    data = validation_set(discs, HU_WINDOW)
    return validate_generators(generator_pos, generator_neg, classifier, data,
                               batchnorm_patches(discs, HU_WINDOW), batch_size=4, device="cpu")


def _score_of(figures, fill):
    flips = [figures[f"{fill}/flip_benign_to_malignant"], figures[f"{fill}/flip_malignant_to_benign"]]
    return (np.nanmean(flips) + (figures[f"{fill}/ssim_pos"] + figures[f"{fill}/ssim_neg"]) / 2
            + figures[f"{fill}/relevance_within_5mm"] + (1.0 - figures[f"{fill}/bright_core_inserted_by_neg"])
            + figures[f"{fill}/unchanged_beyond_box"])


def test_identity_generators_flip_nothing_and_are_perfectly_similar(classifier, discs):
    torch.manual_seed(1)
    identity_pos, identity_neg = UNetGenerator(4, residual=True), UNetGenerator(4, residual=True)
    figures = _figures(identity_pos, identity_neg, classifier, discs)
    for fill in EVALUATION_FILLS:
        assert 0.0 < figures[f"{fill}/p_x"] < 1.0
        assert figures[f"{fill}/p_pos"] == figures[f"{fill}/p_neg"] == figures[f"{fill}/p_x"]
        # both decisions occur, so both flip rates are measured (not NaN) and are 0
        assert figures[f"{fill}/flip_benign_to_malignant"] == 0.0
        assert figures[f"{fill}/flip_malignant_to_benign"] == 0.0
        assert figures[f"{fill}/ssim_pos"] == pytest.approx(1.0, abs=1e-5)
        assert figures[f"{fill}/ssim_neg"] == pytest.approx(1.0, abs=1e-5)
        assert figures[f"{fill}/relevance_within_5mm"] == 0.0  # no relevance at all
        assert figures[f"{fill}/bright_core_inserted_by_neg"] == 0.0
        assert figures[f"{fill}/unchanged_beyond_box"] == 1.0
        assert figures[f"{fill}/score"] == pytest.approx(3.0, abs=1e-5)
    assert figures["score"] == pytest.approx(3.0, abs=1e-5)


class _PaintsTheAir(nn.Module):
    """Changes only air pixels (the air fill's surround); the lung fill's surround is left alone."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x <= AIR + 1e-4, torch.full_like(x, self.value), x)


class _BrightCore(nn.Module):
    """Puts the window's top (400 HU) on the patch's central 4 x 4 pixels, inside every test nodule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[..., 30:34, 30:34] = 1.0
        return y


def test_a_bright_core_inserted_by_g_minus_counts_against_the_score(classifier, discs):
    torch.manual_seed(1)
    identity = UNetGenerator(4, residual=True)
    figures = _figures(identity, _BrightCore(), classifier, discs)
    plain = _figures(identity, UNetGenerator(4, residual=True), classifier, discs)
    for fill in EVALUATION_FILLS:
        assert figures[f"{fill}/bright_core_inserted_by_neg"] == 1.0
        assert figures[f"{fill}/score"] == pytest.approx(_score_of(figures, fill), abs=1e-6)
    assert plain["air/bright_core_inserted_by_neg"] == 0.0


def test_the_score_is_the_worst_fills(classifier, discs):
    figures = _figures(_PaintsTheAir(1.0), _PaintsTheAir(0.0), classifier, discs)
    scores = {fill: figures[f"{fill}/score"] for fill in EVALUATION_FILLS}
    for fill in EVALUATION_FILLS:
        assert scores[fill] == pytest.approx(_score_of(figures, fill), abs=1e-6)
    assert figures["air/ssim_pos"] < 0.9 and figures["lung/ssim_pos"] > 0.99
    assert figures["air/unchanged_beyond_box"] < 0.5 and figures["lung/unchanged_beyond_box"] == 1.0
    assert scores["air"] < scores["lung"] - 0.05  # the fills really differ here ...
    assert figures["score"] == scores["air"] == min(scores.values())  # ... and the worse one counts


@pytest.fixture(scope="module")
def validated_runs(tmp_path_factory, make_disc_dataset):
    root = tmp_path_factory.mktemp("validated")
    dataset = _with_a_valid_box(make_disc_dataset(24, seed=2), 10, 54)
    dataset.save(root / "dataset")
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 1})
    config = with_overrides(config, "cyclegan", {"width": 4, "batch_size": 4, "steps": 6, "checkpoint_every": 6,
                                                 "validation_every": 2, "residual_generators": True,
                                                 "learning_rate": 2e-3})
    classifier = train_classifier(dataset, config, root / "classifier", device="cpu", progress=False)
    train_cyclegan(dataset, classifier, config, root / "long", "cpu", progress=False)
    log = read_metrics(root / "long" / VALIDATION_METRICS)
    best_step = log[int(np.argmax([record["score"] for record in log]))]["step"]
    # The same run stopped at the best step: training is deterministic, so its last generators
    # are the ones the long run had at that step.
    short = with_overrides(config, "cyclegan", {"steps": best_step})
    train_cyclegan(dataset, classifier, short, root / "short", "cpu", progress=False)
    return {"root": root, "log": log, "best_step": best_step, "long": load_checkpoint(root / "long" / "cyclegan.pt"),
            "short": load_checkpoint(root / "short" / "cyclegan.pt")}


def _same_weights(first: nn.Module, second: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_the_exported_generators_are_those_of_the_best_validation_step(validated_runs):
    log, best_step, long = validated_runs["log"], validated_runs["best_step"], validated_runs["long"]
    assert [record["step"] for record in log] == [2, 4, 6]
    for record in log:  # every checked pair is kept for choosing afterwards
        kept = load_checkpoint(validated_runs["root"] / "long" / VALIDATION_CHECKS_DIR / f"step-{record['step']:06d}.pt")
        assert kept["step"] == record["step"] and kept["validation"]["score"] == record["score"]
    best_kept = load_checkpoint(validated_runs["root"] / "long" / VALIDATION_CHECKS_DIR / f"step-{best_step:06d}.pt")
    assert all(torch.equal(best_kept["generator_pos"][name], value)
               for name, value in long["best"]["generator_pos"].items())
    assert long["best"]["step"] == best_step
    assert long["best"]["score"] == max(record["score"] for record in log)
    assert long["residual_generators"] is True
    best = load_generators(long, which="best")
    at_best_step = load_generators(validated_runs["short"], which="last")
    for chosen, reference in zip(best, at_best_step):
        assert _same_weights(chosen, reference)
    last = load_generators(long, which="last")
    assert _same_weights(best[0], last[0]) == (best_step == 6)  # training changed them after the best step
    with pytest.raises(ValueError, match="'first'"):
        load_generators(long, which="first")


def test_select_generators_rescores_every_check_on_shared_resamples_and_exports_the_choice(validated_runs, capsys):
    import json

    from cyclegan_explain_training.cli import main
    from cyclegan_explain_training.generator_selection import SELECTION_JSON, SELECTION_MARKDOWN

    root = validated_runs["root"]
    runs = [str(root / name / "cyclegan.pt") for name in ("long", "short")]
    code = main(["select-generators", "--cyclegan", *runs, "--dataset", str(root / "dataset"), "--out",
                 str(root / "selection"), "--bootstrap", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads((root / "selection" / SELECTION_JSON).read_text())
    rows = result["candidates"]
    assert len(rows) == 3 + len(list((root / "short" / VALIDATION_CHECKS_DIR).glob("step-*.pt")))
    for row in rows:  # re-scored on the same patients and BatchNorm patches as in training: the same score
        assert row["score"]["value"] == pytest.approx(row["training_score"], abs=1e-5)
        assert row["score"]["ci_low"] <= row["score"]["value"] <= row["score"]["ci_high"]
    chosen = result["chosen"]
    assert chosen["score"]["value"] == max(row["score"]["value"] for row in rows)
    assert chosen["chosen_minus_this"]["value"] == chosen["chosen_minus_this"]["ci_high"] == 0.0
    # the short run repeats the long one's first steps exactly: the same pair, a gap of exactly 0,
    # which the rule must not call a difference
    twin = next(row for row in rows if row["run"] == runs[1] and row["step"] == validated_runs["best_step"])
    best_long = next(row for row in rows if row["run"] == runs[0] and row["step"] == validated_runs["best_step"])
    assert twin["score"] == best_long["score"] and not twin["distinguishable"]
    markdown = (root / "selection" / SELECTION_MARKDOWN).read_text()
    assert f"(step {chosen['step']})" in markdown and "cannot be told apart" in markdown
    assert f"--generators {chosen['check']}" in captured.out

    other_check = next(row["check"] for row in rows if row["run"] != chosen["run"])
    code = main(["export", "--dataset", str(root / "dataset"), "--classifier", str(root / "classifier" / "classifier.pt"),
                 "--cyclegan", chosen["run"], "--generators", other_check, "--out", str(root / "refused")])
    assert code == 2 and "is not one of the validation checks of" in capsys.readouterr().err
    assert not (root / "refused").exists()
    code = main(["export", "--dataset", str(root / "dataset"), "--classifier", str(root / "classifier" / "classifier.pt"),
                 "--cyclegan", chosen["run"], "--generators", chosen["check"], "--out", str(root / "bundle")])
    assert code == 0, capsys.readouterr().err
    metadata = json.loads((root / "bundle" / "metadata.json").read_text())["training_data"]["cyclegan"]
    assert metadata["exported_step"] == chosen["step"]
    assert f"validation check at step {chosen['step']}" in metadata["exported_generators"]
    assert metadata["validation"]["score"] == pytest.approx(chosen["training_score"])

    # The exported bundle scored beside the runs (deciding whether to replace a shipped bundle on the
    # same validation patients): its generators are the chosen check's, so the same score.
    code = main(["select-generators", "--cyclegan", runs[0], "--dataset", str(root / "dataset"), "--out",
                 str(root / "selection-with-bundle"), "--bootstrap", "20", "--bundle", str(root / "bundle"),
                 "--allow-unknown-bundle"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((root / "selection-with-bundle" / SELECTION_JSON).read_text())["candidates"]
    bundle_row = next(row for row in rows if row["bundle"])
    assert bundle_row["check"] is None and bundle_row["training_score"] is None
    assert bundle_row["score"]["value"] == pytest.approx(chosen["score"]["value"], abs=1e-5)
    assert "bundle bundle | exported" in (root / "selection-with-bundle" / SELECTION_MARKDOWN).read_text()


def test_select_generators_refuses_runs_validated_against_different_classifiers(validated_runs, capsys, tmp_path):
    from cyclegan_explain_training.checkpoint import save_checkpoint
    from cyclegan_explain_training.cli import main

    root = validated_runs["root"]
    other = dict(validated_runs["short"], classifier_sha256="0" * 64)
    save_checkpoint(other, tmp_path / "other" / "cyclegan.pt")
    (tmp_path / "other" / VALIDATION_CHECKS_DIR).symlink_to(root / "short" / VALIDATION_CHECKS_DIR)
    code = main(["select-generators", "--cyclegan", str(root / "long" / "cyclegan.pt"),
                 str(tmp_path / "other" / "cyclegan.pt"), "--dataset", str(root / "dataset"), "--out",
                 str(tmp_path / "selection")])
    error = capsys.readouterr().err
    assert code == 2 and "validated against different classifiers" in error, error
    assert not (tmp_path / "selection").exists()


def test_select_generators_refuses_a_bundle_with_another_classifier(validated_runs, capsys, tmp_path, tiny_bundle):
    from cyclegan_explain_training.cli import main

    root = validated_runs["root"]
    code = main(["select-generators", "--cyclegan", str(root / "long" / "cyclegan.pt"), "--dataset",
                 str(root / "dataset"), "--out", str(tmp_path / "selection"), "--top", "1", "--bundle",
                 str(tiny_bundle), "--allow-unknown-bundle"])
    error = capsys.readouterr().err
    assert code == 2 and "is not the one the runs were validated against" in error, error


def test_select_generators_with_a_judge_adds_its_flips_to_the_score_and_refuses_a_maximised_one(validated_runs, capsys):
    """Transfer in the choice: a classifier on the same patients that no run maximised judges every check."""
    import json

    from cyclegan_explain_training.cli import main
    from cyclegan_explain_training.generator_selection import SELECTION_JSON, SELECTION_MARKDOWN

    root = validated_runs["root"]
    dataset = load_prepared(root / "dataset")
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 1})
    judge = train_classifier(dataset, with_overrides(config, "classifier", {"seed": 1, "validation_seed": 0}),
                             root / "judge", device="cpu", progress=False)
    other_patients = train_classifier(dataset, with_overrides(config, "classifier", {"seed": 1}),
                                      root / "judge-other-patients", device="cpu", progress=False)
    run = str(root / "long" / "cyclegan.pt")
    common = ["select-generators", "--cyclegan", run, "--dataset", str(root / "dataset"), "--bootstrap", "20"]
    assert main(common + ["--out", str(root / "plain")]) == 0, capsys.readouterr().err
    assert main(common + ["--out", str(root / "judged"), "--judge-classifier", str(judge)]) == 0, capsys.readouterr().err
    plain = json.loads((root / "plain" / SELECTION_JSON).read_text())
    judged = json.loads((root / "judged" / SELECTION_JSON).read_text())
    assert judged["judge_classifiers"][0]["path"] == str(judge) and "judges' mean flip rate" in judged["rule"]
    for before, after in zip(plain["candidates"], judged["candidates"]):
        assert before["check"] == after["check"]
        fills = [key[:-len("/score")] for key in after["figures"] if key.endswith("/score")]
        for fill in fills:
            flips = [after["figures"][f"{fill}/judge_flip_{d}"] for d in ("benign_to_malignant", "malignant_to_benign")]
            assert all(0.0 <= value <= 1.0 for value in flips if not np.isnan(value))
            assert after["figures"][f"{fill}/score"] == pytest.approx(
                before["figures"][f"{fill}/score"] + np.nanmean(flips), abs=1e-9)
    markdown = (root / "judged" / SELECTION_MARKDOWN).read_text()
    assert "judges' flips +/−" in markdown and str(judge) in markdown

    classifier = root / "classifier" / "classifier.pt"
    assert main(common + ["--out", str(root / "refused"), "--judge-classifier", str(classifier)]) == 2
    assert "is a classifier the runs maximised (L_AM)" in capsys.readouterr().err
    assert main(common + ["--out", str(root / "refused"), "--judge-classifier", str(other_patients)]) == 2
    assert "held out other validation patients" in capsys.readouterr().err
    assert not (root / "refused").exists()
