"""CycleGAN-AM training: bit-for-bit resume, frozen classifier, labels unused, metrics, export."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.model_bundle import load_bundle
from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.cli import main as cli_main
from cyclegan_explain_training.config import load_config, with_overrides
from cyclegan_explain_training.export import export_from_checkpoints
from cyclegan_explain_training.run_log import read_metrics
from cyclegan_explain_training.train_classifier import load_classifier, train_classifier
from cyclegan_explain_training.train_cyclegan import (
    CYCLEGAN_METRICS,
    NETWORK_NAMES,
    CycleGANAMTrainer,
    Distributed,
    epoch_pairs,
    train_cyclegan,
)

TINY_CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.json"

# 16 training images, of which the classifier's validation patients (4 images) are left out: 12 in
# batches of 4 make 3 steps an epoch, so the resumed part crosses an epoch.
STEPS, INTERRUPTED_AT = 6, 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_disc_dataset):
    root = tmp_path_factory.mktemp("cyclegan")
    dataset = make_disc_dataset(24, seed=2)
    dataset.save(root / "dataset")
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 2})
    config = with_overrides(config, "cyclegan", {"width": 4, "batch_size": 4, "steps": STEPS, "checkpoint_every": 2})
    classifier = train_classifier(dataset, config, root / "classifier", device="cpu", progress=False, command="c")

    uninterrupted = train_cyclegan(dataset, classifier, config, root / "uninterrupted", "cpu", progress=False)
    # The interrupted run sees inverted labels: CycleGAN-AM must never read them.
    relabelled = dataclasses.replace(dataset, labels=1 - dataset.labels)
    train_cyclegan(relabelled, classifier, config, root / "resumed", "cpu", stop_at_step=INTERRUPTED_AT,
                   progress=False)
    interrupted_state = load_checkpoint(root / "resumed" / "cyclegan.pt")
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # a fresh process would not share state
    resumed = train_cyclegan(relabelled, classifier, config, root / "resumed", "cpu", resume=True, progress=False,
                             command="resume")
    return {"root": root, "config": config, "dataset": dataset, "classifier": classifier,
            "uninterrupted": uninterrupted, "resumed": resumed, "interrupted_state": interrupted_state}


def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(runs):
    assert runs["interrupted_state"]["step"] == INTERRUPTED_AT
    uninterrupted, resumed = load_checkpoint(runs["uninterrupted"]), load_checkpoint(runs["resumed"])
    assert uninterrupted["step"] == resumed["step"] == STEPS
    for name in NETWORK_NAMES:
        assert uninterrupted[name].keys() == resumed[name].keys()
        for key, value in uninterrupted[name].items():  # parameters and BatchNorm buffers
            assert torch.equal(value, resumed[name][key]), f"{name}.{key} differs after resume"
        # ...and the steps after the interruption did change them (the comparison is not vacuous).
        last_layer = "output.weight" if name.startswith("generator") else "heads.0.weight"
        assert not torch.equal(uninterrupted[name][last_layer], runs["interrupted_state"][name][last_layer])
    for key in ("optimiser_generators", "optimiser_discriminators"):
        for index, state in uninterrupted[key]["state"].items():
            assert torch.equal(state["exp_avg"], resumed[key]["state"][index]["exp_avg"])
    assert resumed["commands"] == [None, "resume"]


def test_metrics_log_has_every_loss_term_per_epoch_and_survives_resume(runs):
    uninterrupted = read_metrics(runs["root"] / "uninterrupted" / CYCLEGAN_METRICS)
    resumed = read_metrics(runs["root"] / "resumed" / CYCLEGAN_METRICS)
    assert [record["step"] for record in uninterrupted] == [3, 6]  # epoch ends (3 steps each)
    assert sum(record["steps_averaged"] for record in uninterrupted) == STEPS
    for first, second in zip(uninterrupted, resumed):
        assert first.keys() == second.keys()
        for key, value in first.items():
            if key != "seconds":
                assert value == second[key], key
    record = uninterrupted[0]
    for generator in ("generator_pos", "generator_neg"):
        for term in ("cycle", "similarity", "adversarial", "activation"):
            assert np.isfinite(record[f"{generator}/{term}"])
    assert all(0.0 <= record[key] <= 1.0 for key in ("p_x", "p_pos", "p_neg"))
    assert record["seconds"] > 0


def test_classifier_is_frozen_during_a_step(runs):
    classifier = load_classifier(load_checkpoint(runs["classifier"]))
    before = {key: value.clone() for key, value in classifier.state_dict().items()}
    trainer = CycleGANAMTrainer(runs["config"], classifier, "cpu", Distributed())
    images = torch.rand(8, 1, 64, 64) * 2 - 1
    trainer.step(images[:4], images[4:])
    assert not classifier.training
    assert not any(parameter.requires_grad for parameter in classifier.parameters())
    for key, value in classifier.state_dict().items():  # weights and BatchNorm running statistics
        assert torch.equal(value, before[key]), key


def test_existing_run_needs_resume_and_resume_refuses_other_settings(runs):
    config, dataset = runs["config"], runs["dataset"]
    with pytest.raises(FileExistsError, match="--resume"):
        train_cyclegan(dataset, runs["classifier"], config, runs["root"] / "resumed", "cpu", progress=False)
    wider = with_overrides(config, "cyclegan", {"width": 8})
    with pytest.raises(ValueError, match="cyclegan.width was 4"):
        train_cyclegan(dataset, runs["classifier"], wider, runs["root"] / "resumed", "cpu", resume=True,
                       progress=False)


def test_exported_bundle_loads_explains_and_records_its_training(runs, lung_volume):
    root = runs["root"]
    bundle_dir = export_from_checkpoints(runs["classifier"], runs["uninterrupted"], root / "dataset",
                                         root / "bundle", "test-bundle", "0.1.0", command="export")
    bundle = load_bundle(bundle_dir, "cpu", allow_unknown=True)
    assert bundle.metadata.trained
    training = bundle.metadata.raw["training_data"]
    manifest = runs["dataset"].manifest
    assert training["dataset"]["patches_sha256"] == manifest["patches_sha256"]
    assert training["cyclegan"]["steps"] == STEPS and training["cyclegan"]["width"] == 4
    assert training["classifier"]["width"] == 4
    assert training["commands"] == ["c", None, "export"]
    attribution = bundle.metadata.raw["data_attribution"]  # CC BY 3.0 travels with the weights
    assert "CC BY 3.0" in attribution["licence"] and any("10.7937/K9/TCIA.2015.LO9QL9SX" in c for c in attribution["citations"])
    assert bundle.metadata.raw["architecture"]["generator"]["stage_widths"] == [4, 8, 16, 32]

    volume, ijk_to_ras = lung_volume
    result = explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], bundle)
    relevance = result[0].relevance
    assert relevance.shape == (64, 64) and np.isfinite(relevance).all()
    # The bundle's generators are the trained ones with BatchNorm statistics recomputed on the
    # real training patches: the checkpoint's G+ after that step reproduces the bundle's G+.
    state = load_checkpoint(runs["uninterrupted"])
    from cyclegan_explain_training.train_cyclegan import (
        batchnorm_patches, load_generators, recompute_batchnorm_statistics, split_like_classifier)

    generator_pos, _ = load_generators(state)
    fit, _ = split_like_classifier(runs["dataset"], load_checkpoint(runs["classifier"]))
    training_images = batchnorm_patches(fit, bundle.metadata.hu_window)
    recompute_batchnorm_statistics(generator_pos, training_images, batch_size=4)
    with torch.no_grad():
        expected = generator_pos(torch.from_numpy(result[0].x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(result[0].g_pos, expected, atol=1e-5)
    assert f"on the {len(training_images)} real training patches" in training["cyclegan"]["batchnorm_statistics"]
    assert len(training_images) < len(runs["dataset"].subset("train"))  # the validation patients are left out


def test_recomputed_batchnorm_statistics_match_the_batch_and_leave_the_weights():
    from CycleGANExplainLib.networks import UNetGenerator
    from cyclegan_explain_training.train_cyclegan import recompute_batchnorm_statistics

    torch.manual_seed(0)
    generator = UNetGenerator(width=4)
    images = torch.rand(64, 1, 64, 64) * 2 - 1
    weights = {name: value.clone() for name, value in generator.named_parameters()}
    for module in generator.modules():  # statistics far from these images', as after training on fakes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(3.0)
            module.running_var.fill_(0.01)

    def eval_minus_batch_mode() -> float:
        with torch.no_grad():
            in_eval = generator.eval()(images)
            in_training = generator.train()(images)
        generator.eval()
        return float((in_eval - in_training).abs().max())

    assert eval_minus_batch_mode() > 0.1
    recompute_batchnorm_statistics(generator, images, batch_size=64)
    # One batch of all images: the running statistics are that batch's (variance unbiased, 64/63).
    assert eval_minus_batch_mode() < 0.02
    assert not generator.training
    for name, value in generator.named_parameters():
        assert torch.equal(value, weights[name])


def test_export_refuses_checkpoints_that_do_not_belong_together(runs, tmp_path):
    config = runs["config"]
    other = train_classifier(runs["dataset"], config, tmp_path / "other", device="cpu", progress=False)
    with pytest.raises(ValueError, match="another classifier"):
        export_from_checkpoints(other, runs["uninterrupted"], runs["root"] / "dataset", tmp_path / "bundle",
                                "x", "0")
    assert not (tmp_path / "bundle").exists()


def test_ranks_take_disjoint_shards_of_the_same_epoch_order():
    one = epoch_pairs(16, 2, seed=3, epoch=1, ranks=Distributed())
    ranks = [epoch_pairs(16, 2, seed=3, epoch=1, ranks=Distributed(rank, 2, rank)) for rank in (0, 1)]
    shards = [torch.cat([a for a, _ in pairs]) for pairs in ranks]
    assert len(one) == 8 and [len(pairs) for pairs in ranks] == [4, 4]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(16))
    first_a = torch.cat([a for a, _ in one])
    assert not torch.equal(first_a, torch.cat([a for a, _ in epoch_pairs(16, 2, 3, 2, Distributed())]))
    assert not torch.equal(first_a, torch.cat([b for _, b in one]))  # x_a and x_b are paired at random


def test_torchrun_with_two_cpu_processes(runs, tmp_path):
    """The DDP path (gloo on CPU): both ranks train, rank 0 alone writes the checkpoint and log."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "cyclegan_explain_training.cli",
               "train-cyclegan", "--dataset", str(runs["root"] / "dataset"), "--classifier", str(runs["classifier"]),
               "--out", str(out), "--config", str(TINY_CONFIG), "--steps", "2", "--batch-size", "2",
               "--device", "cpu", "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    state = load_checkpoint(out / "cyclegan.pt")
    assert state["step"] == 2
    assert len(read_metrics(out / CYCLEGAN_METRICS)) == 1  # one writer: one record for the two steps
    assert finished.stdout.count("CycleGAN-AM checkpoint:") == 2  # both ranks finished


@pytest.mark.parametrize("spoil, message", [
    ("truncated", "cannot be read as a cyclegan checkpoint made by train-cyclegan"),
    ("empty", "is empty; expected a cyclegan checkpoint"),
    ("random", "cannot be read as a cyclegan checkpoint"),
    ("classifier", "holds a classifier checkpoint; expected a cyclegan checkpoint"),
])
def test_resume_from_a_spoilt_checkpoint_exits_2_naming_it(runs, tmp_path, capsys, spoil, message):
    run = tmp_path / "run"
    run.mkdir()
    good = (runs["root"] / "resumed" / "cyclegan.pt").read_bytes()
    contents = {"truncated": good[: len(good) // 2], "empty": b"",
                "random": np.random.default_rng(0).bytes(4096),
                "classifier": Path(runs["classifier"]).read_bytes()}[spoil]
    (run / "cyclegan.pt").write_bytes(contents)
    code = cli_main(["train-cyclegan", "--dataset", str(runs["root"] / "dataset"), "--classifier",
                     str(runs["classifier"]), "--out", str(run), "--resume", "--steps", str(STEPS + 1),
                     "--width", "4", "--batch-size", "4", "--quiet"])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and str(run / "cyclegan.pt") in error
    assert (run / "cyclegan.pt").read_bytes() == contents  # the evidence is kept


def test_truncated_classifier_exits_2_naming_it(runs, tmp_path, capsys):
    truncated = tmp_path / "classifier.pt"
    truncated.write_bytes(Path(runs["classifier"]).read_bytes()[:1000])
    code = cli_main(["train-cyclegan", "--dataset", str(runs["root"] / "dataset"), "--classifier", str(truncated),
                     "--out", str(tmp_path / "run"), "--width", "4", "--batch-size", "4", "--quiet"])
    assert code == 2
    assert f"{truncated} cannot be read as a classifier checkpoint made by train-classifier" in capsys.readouterr().err
    code = cli_main(["export", "--classifier", str(runs["uninterrupted"]), "--cyclegan", str(runs["uninterrupted"]),
                     "--dataset", str(runs["root"] / "dataset"), "--out", str(tmp_path / "bundle")])
    assert code == 2
    assert "holds a cyclegan checkpoint; expected a classifier checkpoint" in capsys.readouterr().err


def test_import_classifier_gives_back_the_bundled_classifier_and_its_validation_patients(runs, tmp_path, capsys,
                                                                                        make_disc_dataset):
    root = runs["root"]
    bundle_dir = export_from_checkpoints(runs["classifier"], runs["uninterrupted"], root / "dataset",
                                         tmp_path / "bundle", "test-bundle", "0.1.0")
    out = tmp_path / "imported"
    assert cli_main(["import-classifier", "--bundle", str(bundle_dir), "--dataset", str(root / "dataset"),
                     "--out", str(out)]) == 2
    assert "--allow-unknown-bundle" in capsys.readouterr().err  # a bundle the package does not ship runs code
    assert cli_main(["import-classifier", "--bundle", str(bundle_dir), "--dataset", str(root / "dataset"),
                     "--out", str(out), "--allow-unknown-bundle"]) == 0
    imported, original = load_checkpoint(out / "classifier.pt", "classifier"), load_checkpoint(runs["classifier"])
    assert imported["validation_patients"] == original["validation_patients"]
    assert imported["hu_window"] == original["hu_window"] and imported["width"] == original["width"]
    for name, value in original["state_dict"].items():
        assert torch.equal(imported["state_dict"][name], value), name
    # New generators train against it exactly as against the original checkpoint.
    train_cyclegan(runs["dataset"], out / "classifier.pt", runs["config"], tmp_path / "gan", "cpu", progress=False,
                   stop_at_step=1)
    make_disc_dataset(24, seed=7).save(tmp_path / "other-dataset")
    assert cli_main(["import-classifier", "--bundle", str(bundle_dir), "--dataset", str(tmp_path / "other-dataset"),
                     "--out", str(out), "--allow-unknown-bundle"]) == 2
    assert "was not trained on the prepared dataset" in capsys.readouterr().err
