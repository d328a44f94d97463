"""Attribution methods beside CycleGAN-AM: the baselines of the paper's comparison, from maintained libraries.

Every baseline attributes the malignancy log-odds, logit[malignant] - logit[benign], of the bundle's
classifier rebuilt as an eager module (hooks and canonizers need one; TorchScript has none). A positive
value is evidence for malignant (red), a negative one for benign (blue): the sign convention of
CycleGAN-AM's R = G+(x) - G-(x). Saliency and Grad-CAM are unsigned (>= 0) by construction.

Reference images are air (normalised -1, what the patch sampler fills outside the volume with) unless a
method's notes below say otherwise. Nothing here imports torch, captum, zennit or MONAI at module load:
Slicer imports this package without them, and a method's packages are checked (missing_packages) before
it runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import re
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .inference import run_networks
from .model_bundle import BundleError
from .triton_guard import keep_triton_from_a_loaded_llvm

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from .model_bundle import ModelBundle

BASELINES_EXTRA = '"cyclegan-explain[baselines]"'
# Held at their installed versions by every install of a method's packages (the command printed
# here, the Slicer installer's constraints file): left alone, pip replaces a CPU torch by PyPI's
# default CUDA build (+4.5 GB) to satisfy zennit's torchvision, and may downgrade Slicer's numpy.
PINNED_DISTRIBUTIONS = ("numpy", "torch")
# Where a CPU torch's matching torchvision comes from (PyPI's is built against CUDA).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
AIR = -1.0
"""Normalised intensity of air: the reference image of integrated gradients and occlusion."""

IG_STEPS = 32
"""Integrated gradients' Gauss-Legendre steps (captum's default rule): the maps' sum meets f(x) - f(air)
within 1 % on the shipped classifier (the tests allow 2 %)."""
IG_IMAGES_PER_PASS = 32
"""Interpolated images evaluated together (or the batch's size, if larger): on CPU, 32 x 1-image passes
are slower from overhead and 32 x 32 images per pass (130 MB a layer at width 32) slower from memory traffic."""

OCCLUSION_WINDOW_PX = 8
OCCLUSION_STRIDE_PX = 4
"""An 8 x 8 px (5.6 mm) air square moved in steps of 4 px: 15 x 15 positions, every pixel covered 1-4 times."""

SHAP_BLUR_SIGMAS_PX = (8.0, 16.0)
"""The SHAP methods' references beside air: the patch itself, Gaussian-blurred with these sigmas (5.6 and
11 mm at 0.7 mm/px). A blurred patch keeps the local tissue level but not the nodule's shape and margin
(the "blurred baseline" of Sturmfels et al., Distill 2020); it needs no training data."""
GRADIENT_SHAP_SAMPLES = 32
"""GradientSHAP's random (reference, interpolation point) draws per image."""
GRADIENT_SHAP_SEED = 0
"""GradientSHAP draws with a fixed seed per image, so the same patch always gets the same map."""


# Each classifier runner: (log-odds model, classifier, images [B, 1, H, W], batch_size) -> maps [B, 1, H, W].
Runner = Callable[["torch.nn.Module", "torch.nn.Module", "torch.Tensor", int], "torch.Tensor"]


@dataclass(frozen=True)
class AttributionMethod:
    """One entry of the registry: what the front ends show and install, and how its maps are made.

    ``maps`` is the plugin: patches x [N, H, W] in [-1, 1] and run_networks' outputs for them ->
    maps [N, H, W]. Everything else is read by the front ends: the label and library in menus and
    legends, ``signed`` and the colour meanings in legends, ``requirements`` by pyproject's extra,
    the installer and the missing-package message.
    """

    key: str
    label: str
    library: str
    signed: bool
    """False for maps that are >= 0 by construction (saliency's |gradient|, Grad-CAM after its ReLU)."""
    requirements: Tuple[str, ...]
    """pip requirements needed beyond torch and numpy, with the bounds the code was tested within
    (pyproject's `baselines` extra holds the same; a test compares them)."""
    reading: str
    """How to read the map, one sentence for legends (the colours' meaning is overlay.colour_legend's)."""
    map_title: str
    """The map's name over its figure panel."""
    units: str
    """The maps' scale, for summaries (and the colour range's floor: overlay.display_limit)."""
    maps: Callable[["ModelBundle", np.ndarray, Dict[str, np.ndarray], int], np.ndarray]
    runner: Optional[Runner] = None
    """For a classifier attribution: the captum/zennit call (None for CycleGAN-AM, which needs the generators)."""

    @property
    def packages(self) -> Tuple[str, ...]:
        """The requirements' distribution names (each is also its import name)."""
        return tuple(re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0] for requirement in self.requirements)

    @property
    def attributes_classifier(self) -> bool:
        return self.runner is not None


INTENSITY_UNITS = "normalised intensity ([-1, 1] over the bundle's HU window)"
LOG_ODDS_UNITS = "attribution of the malignancy log-odds (the method's own scale)"


def _generator_difference(bundle: "ModelBundle", x: np.ndarray, outputs: Dict[str, np.ndarray],
                          batch_size: int) -> np.ndarray:
    """CycleGAN-AM: R = G+(x) - G-(x), from the generators' outputs."""
    return (outputs["g_pos"] - outputs["g_neg"]).astype(np.float32, copy=False)


def _classifier_attribution(key: str):
    def maps(bundle: "ModelBundle", x: np.ndarray, outputs: Dict[str, np.ndarray], batch_size: int) -> np.ndarray:
        return attribute_classifier(key, eager_classifier(bundle), x, bundle.metadata.malignant_index, batch_size)

    return maps


def _cyclegan_am() -> AttributionMethod:
    return AttributionMethod(
        "cyclegan-am", "CycleGAN-AM", "CycleGAN-AM (this bundle)", True, (),
        reading="R = G+(x) - G-(x): red where the image would change to look more malignant, blue where it "
                "would change to look more benign.", map_title="R = G\u207a(x) \u2212 G\u207b(x)",
        units=INTENSITY_UNITS, maps=_generator_difference)


def _baseline(key: str, label: str, library: str, signed: bool, requirements: Tuple[str, ...],
              runner: Runner) -> AttributionMethod:
    if signed:
        reading = "Attribution of the malignancy log-odds: red is evidence for malignant, blue for benign."
    else:
        # An unsigned map has no blue by construction: say so, lest "no blue" read as "no benign evidence".
        reading = ("This map cannot show benign-indicating evidence, so the absence of blue does not mean "
                   "there is none.")
    return AttributionMethod(key, label, library, signed, requirements, reading=reading,
                             map_title=label + ("" if signed else " (unsigned)"), units=LOG_ODDS_UNITS,
                             maps=_classifier_attribution(key), runner=runner)


def installed_constraints(distributions: Sequence[str] = PINNED_DISTRIBUTIONS) -> List[str]:
    """``name==version`` for each of ``distributions`` that is installed (pip's constraints syntax)."""
    lines = []
    for name in distributions:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


def _torch_is_cpu_build() -> bool:
    """Whether the installed torch is a CPU build, from its metadata (torch is not imported):
    CUDA builds carry a +cu label or depend on NVIDIA's nvidia-* packages."""
    try:
        version = importlib.metadata.version("torch")
        requirements = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return "+cu" not in version and not any(requirement.startswith("nvidia-") for requirement in requirements)


def install_command(requirements: Sequence[str] = (BASELINES_EXTRA,)) -> str:
    """The pip command for ``requirements`` that keeps the installed torch and numpy: they are
    pinned on the same command line (a requirement that the installed version already meets, so
    pip resolves the rest around it, as a constraints file would), and a CPU torch gets its
    torchvision from PyTorch's CPU index."""
    words = ["pip install", *requirements, *(f'"{pin}"' for pin in installed_constraints())]
    if _torch_is_cpu_build():
        words.append(f"--extra-index-url {CPU_TORCH_INDEX}")
    return " ".join(words)


class MissingDependencyError(ImportError):
    """A method's packages are not installed; the message names them and the pip command."""

    def __init__(self, packages: Sequence[str]):
        self.packages: Tuple[str, ...] = tuple(packages)
        names = ", ".join(self.packages)
        requirements = [f"'{bounded_requirement(name)}'" for name in self.packages]
        super().__init__(
            f"This attribution method needs {names}, which {'is' if len(self.packages) == 1 else 'are'} not "
            f"installed. Install the baselines, keeping the installed torch and numpy, with: {install_command()} "
            f"(or only what this method needs: {install_command(requirements)})."
        )


def bounded_requirement(package: str) -> str:
    """The registry's requirement for ``package``, with its bounds (the name alone if none names it)."""
    for method in METHODS.values():
        for requirement, name in zip(method.requirements, method.packages):
            if name == package:
                return requirement
    return package


def method_info(key: str) -> AttributionMethod:
    """The method's description; ValueError listing the known keys for an unknown one."""
    try:
        return METHODS[key]
    except KeyError:
        raise ValueError(f"Unknown attribution method {key!r}; choose one of {', '.join(METHODS)}.") from None


def missing_packages(key: str) -> List[str]:
    """The method's pip packages that cannot be imported here ([] when all are there)."""
    return [name for name in method_info(key).packages if importlib.util.find_spec(name) is None]


def _require_packages(key: str) -> None:
    missing = missing_packages(key)
    if missing:
        raise MissingDependencyError(missing)


# Eager classifiers per bundle object; an entry goes when its bundle is garbage-collected.
_eager_classifiers: Dict[int, Tuple["weakref.ref[ModelBundle]", "torch.nn.Module"]] = {}
_eager_lock = threading.Lock()


def eager_classifier(bundle: "ModelBundle") -> "torch.nn.Module":
    """The bundle's classifier as an eager MalignancyClassifier (eval mode, on the bundle's device).

    Built from the TorchScript module's state_dict: the weights are copied, so nothing done to the eager
    module (hooks, canonizers, gradients) reaches the bundle. Its parameters need no gradient: the
    attributions differentiate with respect to the input only. Cached per bundle object.
    """
    with _eager_lock:
        cached = _eager_classifiers.get(id(bundle))
        if cached is not None and cached[0]() is bundle:
            return cached[1]
    keep_triton_from_a_loaded_llvm()  # networks imports MONAI, which may import Triton
    from .networks import MalignancyClassifier

    try:
        width = int(bundle.metadata.raw["architecture"]["classifier"]["width"])
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"metadata.json does not give the classifier's width: {error!r}") from error
    model = MalignancyClassifier(width, patch_size=bundle.metadata.patch_size_px)
    model.load_state_dict(bundle.classifier.state_dict())
    model = model.to(bundle.device).eval().requires_grad_(False)
    with _eager_lock:
        _eager_classifiers[id(bundle)] = (weakref.ref(bundle), model)
    weakref.finalize(bundle, _eager_classifiers.pop, id(bundle), None)
    return model


def _log_odds_model(classifier: "torch.nn.Module", malignant_index: int) -> "torch.nn.Module":
    """The classifier with its last Linear folded into one output, logit[malignant] - logit[benign].

    One scalar per image for every method (captum's target is then 0). Folding it into the Linear layer,
    rather than subtracting after it, matters for LRP: the epsilon rule divides by each output's
    pre-activation, so relevance started as [-1, +1] on the two logits would flip sign wherever a logit is
    negative, while one log-odds output whose relevance is its own value gives a_i (w_mal - w_ben)_i.
    For the gradient methods the two are the same function.
    """
    import torch
    from torch import nn

    last = classifier.head[-1]
    if not isinstance(last, nn.Linear) or last.out_features != 2:
        raise ValueError("The classifier's head must end in a Linear layer with two logits (benign, malignant).")
    benign_index = 1 - malignant_index
    log_odds = nn.Linear(last.in_features, 1).to(device=last.weight.device, dtype=last.weight.dtype)
    with torch.no_grad():
        log_odds.weight.copy_(last.weight[malignant_index] - last.weight[benign_index])
        log_odds.bias.copy_(last.bias[malignant_index] - last.bias[benign_index])
    log_odds.requires_grad_(False)
    return nn.Sequential(classifier.features, *classifier.head[:-1], log_odds).eval()


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (captum draws GradientSHAP's samples from it), then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def shap_references(images: "torch.Tensor") -> "torch.Tensor":
    """[N, R, 1, H, W]: air and each image blurred with SHAP_BLUR_SIGMAS_PX (air beyond the edge)."""
    import torch
    from monai.networks.layers import GaussianFilter

    images = images.detach()  # references are constants: no gradient flows through the blur
    references = [torch.full_like(images, AIR)]
    for sigma in SHAP_BLUR_SIGMAS_PX:
        # GaussianFilter pads with zeros; shifting air to 0 first makes the padding air.
        blur = GaussianFilter(spatial_dims=2, sigma=sigma).to(images.device)
        references.append(blur(images - AIR) + AIR)
    return torch.stack(references, dim=1)


def _saliency(model, classifier, images, batch_size):
    from captum.attr import Saliency

    return Saliency(model).attribute(images, target=0, abs=True)


def _integrated_gradients(model, classifier, images, batch_size):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(
        images, baselines=AIR, target=0, n_steps=IG_STEPS, internal_batch_size=max(len(images), IG_IMAGES_PER_PASS)
    )


def _gradient_shap(model, classifier, images, batch_size):
    # One image per call: its references (air and its own blurs) are its own distribution, and the
    # seeded draws make its map independent of the batch it came in. A call runs its samples together.
    import torch
    from captum.attr import GradientShap

    explainer = GradientShap(model)
    references = shap_references(images)
    maps = []
    for image, image_references in zip(images, references):
        with _numpy_seed(GRADIENT_SHAP_SEED):
            maps.append(explainer.attribute(image[None], baselines=image_references, target=0,
                                            n_samples=GRADIENT_SHAP_SAMPLES))
    return torch.cat(maps)


def _deeplift_shap(model, classifier, images, batch_size):
    # DeepLiftShap averages DeepLIFT over a reference distribution shared by the inputs of one call, so
    # each image is its own call with its own references. It needs every ReLU as its own module, which
    # MONAI's Convolution blocks give (each has its own ADN activation).
    import torch
    from captum.attr import DeepLiftShap

    explainer = DeepLiftShap(model)
    references = shap_references(images)
    with warnings.catch_warnings():
        # captum says, on every call, that it hooks the activations and unhooks them afterwards.
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
        return torch.cat([
            explainer.attribute(image[None], baselines=image_references, target=0)
            for image, image_references in zip(images, references)
        ])


def _occlusion(model, classifier, images, batch_size):
    import torch
    from captum.attr import Occlusion

    with torch.no_grad():  # forward passes only
        return Occlusion(model).attribute(
            images,
            sliding_window_shapes=(1, OCCLUSION_WINDOW_PX, OCCLUSION_WINDOW_PX),
            strides=(1, OCCLUSION_STRIDE_PX, OCCLUSION_STRIDE_PX),
            baselines=AIR,
            target=0,
            perturbations_per_eval=max(1, batch_size // len(images)),
        )


def _grad_cam(model, classifier, images, batch_size):
    from captum.attr import LayerAttribution, LayerGradCam

    # The last feature block's output (after its ReLU), 8 x 8 for a 64 px patch, upsampled bilinearly.
    cam = LayerGradCam(model, classifier.features[-1]).attribute(images, target=0, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")


def merge_batch_norm_canonizer():
    """zennit's SequentialMergeBatchNorm, made exact: a new instance per use.

    MONAI's Convolution is Sequential(conv, ADN(N, A)): conv and BatchNorm are adjacent leaves, which is
    what SequentialMergeBatchNorm looks for. zennit 0.5.1 then leaves each merged BatchNorm computing
    x / sqrt(1 + eps), not x (4e-4 on the shipped classifier's logits); its unreleased fix
    (chr5tphr/zennit#240) sets running_var and eps to 0.5 each, so var + eps = 1 exactly. Done here too.
    """
    import torch
    from zennit.canonizers import SequentialMergeBatchNorm

    class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
        def register(self, linears, batch_norm):
            self.original_eps = batch_norm.eps
            super().register(linears, batch_norm)  # merges with the original eps
            batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 0.5)
            batch_norm.eps = 0.5

        def remove(self):
            super().remove()  # restores running_var
            self.batch_norm.eps = self.original_eps

    return ExactSequentialMergeBatchNorm()


def _lrp(model, classifier, images, batch_size):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    composite = EpsilonPlusFlat(canonizers=[merge_batch_norm_canonizer()])
    with Gradient(model=model, composite=composite) as attributor:
        # The output's relevance is its own value, the log-odds: positive relevance is malignant evidence.
        _, relevance = attributor(images, attr_output=lambda output: output.detach())
    return relevance


def attribute_classifier(
    key: str, classifier: "torch.nn.Module", x: np.ndarray, malignant_index: int, batch_size: int = 32
) -> np.ndarray:
    """A baseline's maps [N, H, W] (float32) of the malignancy log-odds for patches x [N, H, W] in [-1, 1].

    ``classifier`` is any MalignancyClassifier-shaped module in eval mode (BatchNorm in training mode
    would make a map depend on its batch); it runs on its own device, ``batch_size`` images at a time.
    """
    import torch

    keep_triton_from_a_loaded_llvm()  # zennit imports torchvision, which may import Triton
    method = method_info(key)
    if not method.attributes_classifier:
        raise ValueError(f"{key!r} is not a classifier attribution: it needs the bundle's generators; use attribute().")
    _require_packages(key)
    if classifier.training:
        raise ValueError("The classifier must be in eval mode (call .eval()): BatchNorm in training mode "
                         "would make each map depend on its batch.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"Patches must be a stack [N, rows, columns], got shape {x.shape}.")
    device = next(classifier.parameters()).device
    model = _log_odds_model(classifier, malignant_index)
    runner = method.runner
    maps = []
    for start in range(0, len(x), batch_size):
        images = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))[:, None].to(device)
        images.requires_grad_()  # every method but occlusion differentiates with respect to the input
        maps.append(runner(model, classifier, images, batch_size)[:, 0].detach().float().cpu().numpy())
    if not maps:
        return np.zeros_like(x)
    return np.concatenate(maps).astype(np.float32, copy=False)


def attribute(key: str, bundle: "ModelBundle", x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Maps [N, H, W] (float32) for patches x [N, H, W] in [-1, 1] with the bundle's networks.

    "cyclegan-am" is R = G+(x) - G-(x); every other key attributes the bundle's classifier, rebuilt eagerly.
    """
    method = method_info(key)
    x = np.asarray(x, dtype=np.float32)
    outputs = run_networks(bundle, x, batch_size) if not method.attributes_classifier else {}
    return method.maps(bundle, x, outputs, batch_size)


# MONAI builds the eager classifier that hooks and canonizers need (networks.MalignancyClassifier,
# whose layer names the bundles' weights follow) and blurs SHAP's references.
_MONAI = "monai>=1.3,<1.7"
# captum 0.8 and newer accept numpy 2 (Slicer 5.10 ships it).
_CAPTUM = ("captum>=0.8,<0.10", _MONAI)
# The BatchNorm canonizer workaround below is exact for zennit 0.5.
_ZENNIT = ("zennit>=0.5.1,<0.6", _MONAI)
METHODS: Dict[str, AttributionMethod] = {
    method.key: method
    for method in (
        _cyclegan_am(),
        _baseline("saliency", "Saliency (|gradient|)", "captum", False, _CAPTUM, _saliency),
        _baseline("integrated-gradients", "Integrated gradients", "captum", True, _CAPTUM, _integrated_gradients),
        _baseline("gradient-shap", "GradientSHAP", "captum", True, _CAPTUM, _gradient_shap),
        _baseline("deeplift-shap", "DeepSHAP (DeepLIFT-SHAP)", "captum", True, _CAPTUM, _deeplift_shap),
        _baseline("occlusion", "Occlusion", "captum", True, _CAPTUM, _occlusion),
        _baseline("grad-cam", "Grad-CAM", "captum", False, _CAPTUM, _grad_cam),
        _baseline("lrp", "LRP (epsilon-plus-flat)", "zennit", True, _ZENNIT, _lrp),
    )
}
CYCLEGAN_AM = "cyclegan-am"
DEFAULT_METHOD = CYCLEGAN_AM
