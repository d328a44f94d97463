"""CycleGAN-AM's realism terms (locality, new brightness) and L_AM over several classifiers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from cyclegan_explain_training.checkpoint import load_checkpoint
from cyclegan_explain_training.config import load_config, with_overrides
from cyclegan_explain_training.context_fill import random_context, random_context_and_visible
from cyclegan_explain_training.losses import (
    DSSIM,
    LossWeights,
    activation_maximisation_loss,
    generator_loss,
    locality_loss,
    new_brightness_loss,
)
from cyclegan_explain_training.networks import held_out_classifier
from cyclegan_explain_training.train_classifier import build_classifier, load_classifier, train_classifier
from cyclegan_explain_training.train_cyclegan import images_and_forbidden_change, train_cyclegan
from cyclegan_explain_training.nodule_regions import PIXEL_MM


def test_locality_loss_counts_change_only_where_it_is_forbidden():
    x = torch.zeros(2, 1, 8, 8)
    generated = x.clone()
    generated[0, 0, 0, 0] = 0.5  # forbidden pixel
    generated[1, 0, 4, 4] = 0.9  # allowed pixel
    forbidden = torch.ones(2, 1, 8, 8)
    forbidden[1, 0, 4, 4] = 0.0
    assert locality_loss(x, generated, forbidden).item() == pytest.approx(0.5 / (2 * 64))


def test_new_brightness_counts_only_brightness_x_did_not_have():
    x = torch.full((2, 1, 8, 8), -0.5)
    x[1, 0, 2, 2] = 0.9  # already bright in x: keeping it costs nothing
    generated = x.clone()
    generated[0, 0, 3, 3] = 0.8  # a new bright core pixel: 0.2 above the threshold
    generated[0, 0, 3, 4] = 0.5  # brighter than x but below the threshold: free
    generated[1, 0, 2, 2] = 0.95  # 0.05 brighter than the already-bright x
    loss = new_brightness_loss(x, generated, threshold=0.6)
    assert loss.item() == pytest.approx((0.2 + 0.05) / 2)
    assert new_brightness_loss(x, x, threshold=0.6).item() == 0.0


def test_activation_term_is_the_mean_over_the_classifiers_and_realism_terms_are_weighted_in():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    generated = torch.clamp(x + 0.3, -1, 1)
    outputs = [(torch.randn(3, 2, 2, 2), torch.randint(0, 2, (3, 2, 2)))]
    logits = [torch.randn(3, 2), torch.randn(3, 2)]
    forbidden = torch.ones(3, 1, 16, 16)
    weights = LossWeights(locality=10.0, new_brightness=2.0, brightness_threshold=0.5)
    total, terms = generator_loss(DSSIM(), x, generated, x, outputs, logits, 1, weights, forbidden)
    expected_activation = np.mean([activation_maximisation_loss(one, 1).item() for one in logits])
    assert terms["activation"] == pytest.approx(expected_activation, rel=1e-5)
    assert terms["locality"] == pytest.approx(locality_loss(x, generated, forbidden).item(), rel=1e-5)
    assert terms["new_brightness"] == pytest.approx(new_brightness_loss(x, generated, 0.5).item(), rel=1e-5)
    plain_total, plain = generator_loss(DSSIM(), x, generated, x, outputs, logits, 1)
    assert "locality" not in plain and "new_brightness" not in plain
    assert total.item() == pytest.approx(plain_total.item() + 10.0 * terms["locality"] + 2.0 * terms["new_brightness"],
                                         rel=1e-5)
    with pytest.raises(ValueError, match="locality term needs"):
        generator_loss(DSSIM(), x, generated, x, outputs, logits, 1, weights)


def _box_dataset(make_disc_dataset, count: int = 6):
    dataset = make_disc_dataset(count, seed=3)
    valid = np.zeros(dataset.images_hu.shape, dtype=np.uint8)
    valid[:, 16:48, 16:48] = 1  # a sub-volume's box: the rest of each patch holds no image
    return dataclasses.replace(dataset, valid=valid)


def test_visible_map_marks_exactly_the_pixels_that_were_not_filled(make_disc_dataset):
    dataset = _box_dataset(make_disc_dataset)
    images = dataset.images_hu.copy()
    images[dataset.valid == 1] = 123.0  # a value no fill produces
    filled, visible = random_context_and_visible(images, dataset.valid, dataset.masks, np.random.default_rng(4))
    assert np.array_equal(visible, filled == 123.0)
    assert (visible <= dataset.valid.astype(bool)).all()
    # The same draws as the images-only function: the classifier's training data are unchanged.
    alone = random_context(images, dataset.valid, dataset.masks, np.random.default_rng(4))
    assert np.array_equal(alone, filled)


def test_forbidden_change_is_beyond_the_box_and_beyond_the_distance_from_the_mask(make_disc_dataset):
    dataset = _box_dataset(make_disc_dataset)
    dataset.masks[:] = 0
    dataset.masks[0, 30:34, 30:34] = 1  # patch 0 has a nodule; patch 1 misses it (off-centre plane)
    indices = np.array([0, 1])
    images, forbidden = images_and_forbidden_change(dataset, indices, [-1000, 400], np.random.default_rng(0), 5.0)
    assert images.shape == forbidden.shape == (2, 1, 64, 64)
    forbidden = forbidden[:, 0].numpy().astype(bool)
    assert forbidden[:, :16, :].all() and forbidden[:, :, 48:].all()  # beyond the box
    assert not forbidden[0, 30:34, 30:34].any()  # on the nodule
    reach = int(5.0 / PIXEL_MM)
    assert not forbidden[0, 30 - reach + 1, 31] and forbidden[0, 30 - reach - 2, 31]
    assert not forbidden[1, 31, 31] and forbidden[1, 31 - reach - 2, 31]  # no mask: around the click


def test_held_out_architecture_trains_loads_and_is_not_the_bundled_one():
    network = held_out_classifier("resnet", 4)
    assert network(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
    assert type(network) is not type(build_classifier("paper", 4))
    with pytest.raises(ValueError, match="Unknown classifier architecture 'vgg'"):
        build_classifier("vgg", 4)


@pytest.fixture(scope="module")
def twins(tmp_path_factory, make_disc_dataset):
    root = tmp_path_factory.mktemp("twins")
    dataset = make_disc_dataset(24, seed=2)
    config = with_overrides(load_config(), "classifier", {"width": 4, "batch_size": 8, "max_epochs": 1})
    config = with_overrides(config, "cyclegan", {"width": 4, "batch_size": 4, "steps": 2, "checkpoint_every": 2,
                                                 "residual_generators": True, "locality_l1": 10.0,
                                                 "new_brightness": 1.0})
    paths = {}
    for name, overrides in {"bundle": {}, "twin": {"seed": 1, "validation_seed": 0},
                            "other_patients": {"seed": 1}, "resnet": {"architecture": "resnet", "validation_seed": 0,
                                                                      "seed": 5}}.items():
        paths[name] = train_classifier(dataset, with_overrides(config, "classifier", overrides), root / name,
                                       device="cpu", progress=False)
    return root, dataset, config, paths


def test_twin_shares_the_validation_patients_and_a_differently_seeded_split_does_not(twins):
    _, _, _, paths = twins
    states = {name: load_checkpoint(path, "classifier") for name, path in paths.items()}
    assert states["twin"]["validation_patients"] == states["bundle"]["validation_patients"]
    assert states["other_patients"]["validation_patients"] != states["bundle"]["validation_patients"]
    assert states["resnet"]["architecture"] == "resnet"
    assert type(load_classifier(states["resnet"])) is type(held_out_classifier("resnet", 4))


def test_cyclegan_with_a_twin_records_it_logs_the_realism_terms_and_refuses_mismatches(twins):
    root, dataset, config, paths = twins
    checkpoint = train_cyclegan(dataset, paths["bundle"], config, root / "gan", "cpu", progress=False,
                                also_maximised_for=[paths["twin"]])
    state = load_checkpoint(checkpoint)
    assert [record["path"] for record in state["activation_twins"]] == [str(paths["twin"])]
    with pytest.raises(ValueError, match="held out other validation patients"):
        train_cyclegan(dataset, paths["bundle"], config, root / "gan-bad", "cpu", progress=False,
                       also_maximised_for=[paths["other_patients"]])
    longer = with_overrides(config, "cyclegan", {"steps": 4})
    with pytest.raises(ValueError, match="maximised the activation of other classifiers"):
        train_cyclegan(dataset, paths["bundle"], longer, root / "gan", "cpu", resume=True, progress=False)
    from cyclegan_explain_training.run_log import read_metrics
    from cyclegan_explain_training.train_cyclegan import CYCLEGAN_METRICS

    record = read_metrics(root / "gan" / CYCLEGAN_METRICS)[-1]
    for generator in ("generator_pos", "generator_neg"):
        assert math.isfinite(record[f"{generator}/locality"]) and math.isfinite(record[f"{generator}/new_brightness"])


def test_a_warm_started_run_begins_from_the_other_runs_networks_records_it_and_refuses_a_mismatch(twins):
    """Adding a twin to a run already trained: the new run starts from its networks (not from scratch)."""
    from cyclegan_explain_training.train_cyclegan import CycleGANAMTrainer, Distributed, _warm_start

    root, dataset, config, paths = twins
    source = train_cyclegan(dataset, paths["bundle"], config, root / "warm-source", "cpu", progress=False)
    saved = load_checkpoint(source, "cyclegan")
    fresh_config = with_overrides(config, "cyclegan", {"seed": 7})  # another initialisation than the source's
    trainer = CycleGANAMTrainer(fresh_config, load_classifier(load_checkpoint(paths["bundle"])), "cpu", Distributed())
    assert not all(torch.equal(value, saved["generator_pos"][key])
                   for key, value in trainer.networks["generator_pos"].state_dict().items())
    record = _warm_start(trainer, source, config, paths["bundle"], dataset.manifest.get("patches_sha256"))
    for name in ("generator_pos", "generator_neg", "discriminator_pos", "discriminator_neg"):
        for key, value in trainer.networks[name].state_dict().items():
            assert torch.equal(value, saved[name][key]), (name, key)
    assert record["step"] == 2 and record["sha256"] and record["path"] == str(source)

    warmed = train_cyclegan(dataset, paths["bundle"], config, root / "warmed", "cpu", progress=False,
                            also_maximised_for=[paths["twin"]], warm_start=source)
    state = load_checkpoint(warmed, "cyclegan")
    assert state["warm_start"]["sha256"] == record["sha256"] and state["step"] == 2
    wider = with_overrides(config, "cyclegan", {"width": 8})
    with pytest.raises(ValueError, match="Cannot warm-start from .*cyclegan.width is 4 there, 8 here"):
        train_cyclegan(dataset, paths["bundle"], wider, root / "warm-wider", "cpu", progress=False, warm_start=source)
    with pytest.raises(ValueError, match="trained against another classifier"):
        train_cyclegan(dataset, paths["twin"], config, root / "warm-other", "cpu", progress=False, warm_start=source)


def test_a_run_warm_started_from_a_bundle_begins_from_its_generators_and_refuses_another_classifier(twins, tmp_path):
    """A bundle keeps only its networks: a run can start from its generators (the shipped ones
    included) against the classifier it ships, with fresh discriminators."""
    from CycleGANExplainLib.model_bundle import bundle_digest, load_bundle
    from cyclegan_explain_training.cli import main
    from cyclegan_explain_training.dataset import load_prepared
    from cyclegan_explain_training.export import generators_of_bundle
    from cyclegan_explain_training.train_cyclegan import CycleGANAMTrainer, Distributed, _warm_start_from_bundle

    _, dataset, config, _ = twins
    dataset = load_prepared(dataset.save(tmp_path / "dataset"))  # export checks the patches' digest
    paths = {name: train_classifier(dataset, with_overrides(config, "classifier", overrides), tmp_path / f"classifier-{name}",
                                    device="cpu", progress=False)
             for name, overrides in {"bundle": {}, "twin": {"seed": 1, "validation_seed": 0}}.items()}
    source = train_cyclegan(dataset, paths["bundle"], config, tmp_path / "source", "cpu", progress=False)
    assert main(["export", "--dataset", str(tmp_path / "dataset"), "--classifier", str(paths["bundle"]),
                 "--cyclegan", str(source), "--out", str(tmp_path / "bundle")]) == 0
    bundled = generators_of_bundle(load_bundle(tmp_path / "bundle", "cpu", allow_unknown=True))
    classifier_state = load_checkpoint(paths["bundle"], "classifier")

    trainer = CycleGANAMTrainer(with_overrides(config, "cyclegan", {"seed": 7}), load_classifier(classifier_state),
                                "cpu", Distributed())
    record = _warm_start_from_bundle(trainer, tmp_path / "bundle", config, classifier_state, True)
    for role, generator in zip(("generator_pos", "generator_neg"), bundled):
        for key, value in generator.state_dict().items():
            assert torch.equal(trainer.networks[role].state_dict()[key], value), (role, key)
    assert record["digest"] == bundle_digest(tmp_path / "bundle") and "started fresh" in record["networks"]

    warmed = train_cyclegan(dataset, paths["bundle"], config, tmp_path / "warmed", "cpu", progress=False,
                            warm_start=tmp_path / "bundle", allow_unknown_bundle=True)
    assert load_checkpoint(warmed, "cyclegan")["warm_start"]["bundle"] == record["bundle"]
    with pytest.raises(ValueError, match="Cannot warm-start from the bundle .*its classifier is not this run's"):
        train_cyclegan(dataset, paths["twin"], config, tmp_path / "other", "cpu", progress=False,
                       warm_start=tmp_path / "bundle", allow_unknown_bundle=True)
    with pytest.raises(ValueError, match="cyclegan.width is 4 there, 8 here"):
        train_cyclegan(dataset, paths["bundle"], with_overrides(config, "cyclegan", {"width": 8}), tmp_path / "wider",
                       "cpu", progress=False, warm_start=tmp_path / "bundle", allow_unknown_bundle=True)
    with pytest.raises(Exception, match="is not one of the bundles shipped with CycleGANExplain"):
        train_cyclegan(dataset, paths["bundle"], config, tmp_path / "unknown", "cpu", progress=False,
                       warm_start=tmp_path / "bundle")


def test_same_nodule_view_moves_pixels_without_changing_them_and_keeps_gradients():
    from cyclegan_explain_training.augment import same_nodule_view

    torch.manual_seed(3)
    images = torch.randn(3, 1, 16, 16, requires_grad=True)
    assert same_nodule_view(images, 0) is images
    with pytest.raises(ValueError, match="max_shift_px must be 0 or more, not -1"):
        same_nodule_view(images, -1)
    views = [same_nodule_view(images, 2) for _ in range(20)]
    assert all(view.shape == images.shape for view in views)
    assert any(not torch.equal(view, images) for view in views)
    for view in views:
        # Every output pixel is an input pixel of the same image (no interpolation), the centre survives.
        for index in range(3):
            assert set(view[index].flatten().tolist()) <= set(images[index].flatten().tolist())
        centre = view[:, :, 6:10, 6:10].detach()
        assert all(set(centre[i].flatten().tolist()) <= set(images[i, :, 4:12, 4:12].flatten().tolist())
                   for i in range(3))
    views[0].sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0


def test_a_run_with_same_nodule_views_trains_and_records_the_setting(twins):
    root, dataset, config, paths = twins
    viewed = with_overrides(config, "cyclegan", {"activation_view_shift_px": 2})
    checkpoint = train_cyclegan(dataset, paths["bundle"], viewed, root / "gan-views", "cpu", progress=False,
                                also_maximised_for=[paths["twin"]])
    state = load_checkpoint(checkpoint, "cyclegan")
    assert state["config"]["cyclegan"]["activation_view_shift_px"] == 2 and state["step"] == 2


def test_a_run_trains_with_its_deadband_and_export_records_or_overrides_it(twins, tmp_path, capsys):
    """The change deadband (test_change_deadband.py) from config to checkpoint to bundle."""
    import json

    from CycleGANExplainLib.intensity import hu_change_to_normalised
    from CycleGANExplainLib.model_bundle import load_bundle
    from cyclegan_explain_training.cli import main
    from cyclegan_explain_training.dataset import load_prepared
    from cyclegan_explain_training.export import generators_of_bundle
    from cyclegan_explain_training.train_cyclegan import load_generators

    _, dataset, config, _ = twins
    dataset = load_prepared(dataset.save(tmp_path / "dataset"))  # export checks the patches' digest
    classifier = train_classifier(dataset, config, tmp_path / "classifier", device="cpu", progress=False)
    run = train_cyclegan(dataset, classifier, with_overrides(config, "cyclegan", {"change_deadband_hu": 70.0}),
                         tmp_path / "gan", "cpu", progress=False)
    state = load_checkpoint(run, "cyclegan")
    assert state["config"]["cyclegan"]["change_deadband_hu"] == 70.0
    generator_pos, _ = load_generators(state)
    assert generator_pos.change_deadband == pytest.approx(hu_change_to_normalised(70.0, state["hu_window"]))
    assert load_generators(state, change_deadband_hu=0.0)[0].change_deadband == 0.0

    exported = {}
    for name, flags in {"as-trained": [], "override": ["--change-deadband-hu", "5"]}.items():
        assert main(["export", "--dataset", str(tmp_path / "dataset"), "--classifier", str(classifier),
                     "--cyclegan", str(run), "--out", str(tmp_path / name), *flags]) == 0
        exported[name] = json.loads((tmp_path / name / "metadata.json").read_text())
    assert exported["as-trained"]["architecture"]["generator"]["change_deadband_hu"] == 70.0
    assert exported["as-trained"]["training_data"]["cyclegan"]["change_deadband_hu"]["note"] == "as trained"
    override = exported["override"]
    assert override["architecture"]["generator"]["change_deadband_hu"] == 5.0
    assert "changes under 5 HU dropped" in override["architecture"]["generator"]["output"]
    assert override["training_data"]["cyclegan"]["change_deadband_hu"] == {
        "trained_with": 70.0, "exported_with": 5.0,
        "note": "set at export; the networks were trained with 70 HU"}
    assert main(["export", "--dataset", str(tmp_path / "dataset"), "--classifier", str(classifier),
                 "--cyclegan", str(run), "--out", str(tmp_path / "negative"), "--change-deadband-hu", "-5"]) == 2
    assert "The change deadband must be 0 HU or more, got -5 HU." in capsys.readouterr().err
    assert not (tmp_path / "negative").exists()
    bundle = load_bundle(tmp_path / "override", "cpu", allow_unknown=True)
    rebuilt, _ = generators_of_bundle(bundle)
    assert rebuilt.change_deadband == pytest.approx(hu_change_to_normalised(5.0, bundle.metadata.hu_window))
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), bundle.generator_pos(x), atol=1e-6, rtol=0)
