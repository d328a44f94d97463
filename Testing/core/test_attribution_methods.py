"""attribution_methods: the eager classifier, every baseline's maps, their behaviour on a task with a known answer."""

from __future__ import annotations

import importlib.metadata
import re
import sys

import numpy as np
import pytest
import torch

from CycleGANExplainLib.attribution_methods import (
    AIR,
    METHODS,
    MissingDependencyError,
    attribute,
    attribute_classifier,
    eager_classifier,
    install_command,
    merge_batch_norm_canonizer,
    shap_references,
)
from CycleGANExplainLib.model_bundle import default_bundle_dir, load_bundle
from CycleGANExplainLib.networks import MalignancyClassifier

BASELINES = [key for key in METHODS if key != "cyclegan-am"]
SIGNED_BASELINES = [key for key in BASELINES if METHODS[key].signed]
SIZE = 64
ROWS, COLUMNS = np.mgrid[0:SIZE, 0:SIZE]


def lung_patches(count: int, seed: int = 0) -> np.ndarray:
    """Normalised patches: lung-like background with a soft-tissue disc near the centre."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-0.78, 0.04, (count, SIZE, SIZE))
    for image, radius in zip(x, rng.uniform(6, 12, count)):
        image[(ROWS - 32) ** 2 + (COLUMNS - 30) ** 2 <= radius**2] = 0.45
    return np.clip(x, -1, 1).astype(np.float32)


def log_odds(classifier: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = classifier(torch.from_numpy(np.ascontiguousarray(x))[:, None])
    return (logits[:, 1] - logits[:, 0]).numpy()


@pytest.fixture(scope="module")
def shipped_bundle():
    return load_bundle(default_bundle_dir(), "cpu")


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_eager_classifier_reproduces_the_torchscript_logits(which, tiny_bundle, shipped_bundle):
    bundle = shipped_bundle if which == "shipped" else load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    model = eager_classifier(bundle)
    assert model is eager_classifier(bundle)  # cached per bundle
    assert not model.training and not any(parameter.requires_grad for parameter in model.parameters())
    x = torch.from_numpy(lung_patches(4))[:, None]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), bundle.classifier(x).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", list(METHODS))
def test_maps_are_float32_finite_and_do_not_depend_on_the_batch(key, tiny_bundle):
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    x = lung_patches(3)
    together = attribute(key, bundle, x, batch_size=3)
    one_by_one = attribute(key, bundle, x, batch_size=1)
    assert together.shape == (3, SIZE, SIZE) and together.dtype == np.float32
    assert np.isfinite(together).all() and np.abs(together).max() > 0
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-5 * np.abs(together).max())
    if not METHODS[key].signed:
        assert together.min() >= 0
    # The eager copy took the gradients; the bundle's TorchScript classifier has none.
    assert all(parameter.grad is None for parameter in bundle.classifier.parameters())


def test_integrated_gradients_add_up_to_the_log_odds_change_from_air(shipped_bundle):
    x = lung_patches(3, seed=1)
    maps = attribute("integrated-gradients", shipped_bundle, x)
    classifier = eager_classifier(shipped_bundle)
    change = log_odds(classifier, x) - log_odds(classifier, np.full_like(x, AIR))
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), change, rtol=0.02, atol=0.05)


def test_deeplift_shap_adds_up_to_the_change_from_the_mean_reference(shipped_bundle):
    # DeepLIFT is exact on conv/BatchNorm/ReLU networks, so this also checks the references used.
    x = lung_patches(2, seed=2)
    maps = attribute("deeplift-shap", shipped_bundle, x)
    classifier = eager_classifier(shipped_bundle)
    references = shap_references(torch.from_numpy(x)[:, None]).numpy()[:, :, 0]
    assert references.shape == (2, 3, SIZE, SIZE)
    np.testing.assert_allclose(references[:, 0], AIR)
    mean_reference = np.mean([log_odds(classifier, references[:, index]) for index in range(3)], axis=0)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), log_odds(classifier, x) - mean_reference, rtol=1e-3, atol=1e-3)


def test_lrp_canonizer_merges_every_monai_batchnorm_without_changing_the_output(shipped_bundle):
    classifier = eager_classifier(shipped_bundle)
    x = torch.from_numpy(lung_patches(2))[:, None]
    with torch.no_grad():
        before = classifier(x)
    merges = merge_batch_norm_canonizer().apply(classifier)
    try:
        norms = [module for module in classifier.modules() if isinstance(module, torch.nn.BatchNorm2d)]
        assert len(merges) == len(norms) == 4
        with torch.no_grad():
            np.testing.assert_allclose(classifier(x).numpy(), before.numpy(), atol=1e-5, rtol=0)
        # Merged: each BatchNorm now leaves its input as it is.
        probe = torch.randn(1, norms[-1].num_features, 4, 4)
        for norm in norms:
            np.testing.assert_allclose(norm(probe[:, : norm.num_features]).detach().numpy(),
                                       probe[:, : norm.num_features].numpy(), atol=1e-6)
    finally:
        for merge in merges:
            merge.remove()
    with torch.no_grad():
        np.testing.assert_allclose(classifier(x).numpy(), before.numpy(), atol=1e-6, rtol=0)
    assert all(norm.eps == 1e-5 for norm in norms)


# --- behaviour on a task with a known answer ------------------------------------------------------------

CUE_CENTRE, DISTRACTOR_CENTRE = np.array([16, 16]), np.array([48, 48])


def disc(centre: np.ndarray, radius: float) -> np.ndarray:
    return (ROWS - centre[0]) ** 2 + (COLUMNS - centre[1]) ** 2 <= radius**2


def quadrant_task(labels: np.ndarray, rng: np.random.Generator):
    """Every image has a bright blob in the lower-right quadrant; "malignant" ones also one in the upper left.

    Returns (images, masks of the upper-left blob).
    """
    x = rng.normal(-0.8, 0.05, (len(labels), SIZE, SIZE))
    cues = np.zeros(x.shape, dtype=bool)
    for image, cue, label in zip(x, cues, labels):
        image[disc(DISTRACTOR_CENTRE + rng.integers(-4, 5, 2), rng.uniform(4, 7))] = 0.4
        if label:
            cue |= disc(CUE_CENTRE + rng.integers(-4, 5, 2), rng.uniform(4, 7))
            image[cue] = 0.4
    return np.clip(x, -1, 1).astype(np.float32), cues


def anywhere_task(labels: np.ndarray, rng: np.random.Generator):
    """One disc per image at a random place: bright for "malignant", dim for "benign". Returns (images, discs)."""
    x = rng.normal(-0.8, 0.05, (len(labels), SIZE, SIZE))
    discs = np.zeros(x.shape, dtype=bool)
    for image, mask, label in zip(x, discs, labels):
        mask |= disc(rng.integers(12, SIZE - 12, 2), rng.uniform(5, 7))
        image[mask] = 0.4 if label else -0.3
    return np.clip(x, -1, 1).astype(np.float32), discs


def train_small_classifier(task, seed: int, steps: int, learning_rate: float) -> MalignancyClassifier:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MalignancyClassifier(width=4)
    optimiser = torch.optim.Adam(model.parameters(), learning_rate)
    for _ in range(steps):
        labels = rng.integers(0, 2, 32)
        images, _ = task(labels, rng)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(images)[:, None]), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def test_baselines_find_the_cue_and_not_the_blob_both_classes_share():
    # Seeded: 40 Adam steps learn this task (checked below before anything is attributed).
    model = train_small_classifier(quadrant_task, seed=1, steps=40, learning_rate=1e-2)
    labels = np.array([1, 1, 1, 0, 0, 0])
    x, cues = quadrant_task(labels, np.random.default_rng(100))
    assert ((log_odds(model, x) > 0) == labels.astype(bool)).all()
    malignant, cues = x[:3], cues[:3]
    upper_left = (ROWS < 32) & (COLUMNS < 32)
    for key in BASELINES:
        if key == "grad-cam":
            continue  # see test_grad_cam_finds_a_bright_disc_wherever_it_is
        maps = attribute_classifier(key, model, malignant, malignant_index=1)
        magnitude = np.abs(maps)
        ratio = magnitude[:, upper_left].mean(axis=1) / magnitude[:, ~upper_left].mean(axis=1)
        assert (ratio > 3).all(), (key, ratio)
        if METHODS[key].signed:
            inside_cue = np.array([image_map[cue].sum() for image_map, cue in zip(maps, cues)])
            assert (inside_cue > 0).all(), (key, inside_cue)


def test_grad_cam_finds_a_bright_disc_wherever_it_is():
    # Grad-CAM weighs each channel by its gradient averaged over the positions, and this classifier's
    # Flatten + Linear head gives each position its own weight: a channel that answers a blob in either
    # quadrant of the task above gets one mixed weight, so Grad-CAM cannot tell cue from distractor
    # there. Where the evidence is what a blob looks like rather than where it is, it localises.
    model = train_small_classifier(anywhere_task, seed=1, steps=60, learning_rate=3e-3)
    labels = np.array([1, 1, 1, 0, 0, 0])
    x, discs = anywhere_task(labels, np.random.default_rng(100))
    assert ((log_odds(model, x) > 0) == labels.astype(bool)).all()
    maps = attribute_classifier("grad-cam", model, x[:3], malignant_index=1)
    near_disc = [mask | np.roll(mask, 3, 0) | np.roll(mask, -3, 0) | np.roll(mask, 3, 1) | np.roll(mask, -3, 1)
                 for mask in discs[:3]]
    ratio = np.array([image_map[mask].mean() / image_map[~mask].mean() for image_map, mask in zip(maps, near_disc)])
    assert (ratio > 5).all(), ratio


# --- errors ---------------------------------------------------------------------------------------------


def test_unknown_method_names_the_known_ones(tiny_bundle):
    with pytest.raises(ValueError, match="'gradcam'") as error:
        attribute("gradcam", load_bundle(tiny_bundle, "cpu", allow_unknown=True), lung_patches(1))
    assert all(key in str(error.value) for key in METHODS)


def test_cyclegan_am_is_not_a_classifier_attribution(tiny_bundle):
    classifier = eager_classifier(load_bundle(tiny_bundle, "cpu", allow_unknown=True))
    with pytest.raises(ValueError, match="generators"):
        attribute_classifier("cyclegan-am", classifier, lung_patches(1), malignant_index=1)


def test_missing_captum_names_the_package_and_the_pip_command(tiny_bundle, monkeypatch):
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    with pytest.raises(MissingDependencyError, match="captum") as error:
        attribute("occlusion", bundle, lung_patches(1))
    assert error.value.packages == ("captum",)
    held = f'"torch=={importlib.metadata.version("torch")}"'  # never a pip command that swaps torch
    assert f'pip install "cyclegan-explain[baselines]" "numpy=={np.__version__}" {held}' in str(error.value)
    assert f"pip install 'captum>=0.8,<0.10' \"numpy=={np.__version__}\" {held}" in str(error.value)  # the bounds
    assert attribute("cyclegan-am", bundle, lung_patches(1)).shape == (1, SIZE, SIZE)  # needs no captum


def test_classifier_in_training_mode_is_refused(tiny_bundle):
    classifier = MalignancyClassifier(width=4)  # a new module is in training mode
    with pytest.raises(ValueError, match="eval mode"):
        attribute_classifier("saliency", classifier, lung_patches(2), malignant_index=1)


def test_the_baselines_extra_is_the_registry_s_requirements():
    """pip's extra and the Slicer installer ask for the same bounded requirements."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extra = set(pyproject["project"]["optional-dependencies"]["baselines"])
    registry = {requirement for method in METHODS.values() for requirement in method.requirements}
    assert extra == registry
    assert all(re.search(r"[<=]", requirement) for requirement in registry), "every requirement has an upper bound"
    assert METHODS["lrp"].packages == ("zennit", "monai")


def test_the_pip_command_keeps_a_cpu_torch(monkeypatch):
    """A core install's CPU torch: the baselines' torchvision must come from PyTorch's CPU index, with
    torch pinned, or pip swaps in PyPI's CUDA build (+4.5 GB) (issue 23, item 23). The installed
    torch's metadata is read, not the module; here it is made to read as a CPU build's."""
    real_version, real_requires = importlib.metadata.version, importlib.metadata.requires
    cuda_build = install_command()
    assert ("--extra-index-url" in cuda_build) == (not any(
        line.startswith("nvidia-") for line in real_requires("torch") or []) and "+cu" not in real_version("torch"))
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.13.0+cpu" if name == "torch" else real_version(name))
    monkeypatch.setattr(importlib.metadata, "requires",
                        lambda name: ["filelock", "sympy"] if name == "torch" else real_requires(name))
    assert install_command() == (f'pip install "cyclegan-explain[baselines]" "numpy=={np.__version__}" '
                                 '"torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu')
