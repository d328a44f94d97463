"""CycleGAN-AM beside the attribution baselines and two model-free controls, on one classifier and one
set of test patches.

The patches are the test split's centre views (one per nodule), with the pixels beyond the nodule's
sub-volume filled by one of the evaluation surrounds (context_fill.fill_outside), normalised with the
bundle's HU window. Every method explains the bundle's classifier (CycleGAN-AM through its generators,
the baselines on the classifier rebuilt eagerly, attribution_methods.attribute for all); the controls
use no model. Each map is scored with the same per-patch measures (attribution_metrics), timed, and
the model methods are put through the same randomisation test; the report (comparison_report)
bootstraps the means and pairs every other row with CycleGAN-AM.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from CycleGANExplainLib.attribution_methods import (
    CYCLEGAN_AM, METHODS, SHAP_BLUR_SIGMAS_PX, attribute, attribute_classifier, eager_classifier, method_info,
)
from CycleGANExplainLib.intensity import normalise_hu
from CycleGANExplainLib.model_bundle import BundleMetadata, ModelBundle, load_bundle, sha256_of
from CycleGANExplainLib.patch_sampling import PATCH_SIZE_PX

from . import attribution_metrics as measures
from .batched_inference import malignancy_probabilities
from .context_fill import EVALUATION_FILLS, fill_outside
from .dataset import CENTRE, MANIFEST_FILE, PreparedDataset, load_prepared
from .metrics import flip_rates
from .nodule_regions import PIXEL_MM

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

logger = logging.getLogger(__name__)

DEFAULT_FILL = "lung"  # of EVALUATION_FILLS, the surround closest to a real CT
SPEED_BATCH_SIZES = (1, 32)
SPEED_PATCHES_AT_BATCH_1 = 8  # one at a time is slow (occlusion: 226 passes of one image per map); 8 time it
RANDOMISATION_PATCHES = 64  # the randomisation test re-runs every model method: 64 patches (seeded draw) suffice

GAUSSIAN_CONTROL_SIGMA_MM = 5.0
EDGE_CONTROL_SIGMA_MM = 1.5
BLURRED_REFERENCE_SIGMA_MM = SHAP_BLUR_SIGMAS_PX[0] * PIXEL_MM
"""5.6 mm: the blur of the SHAP baselines' first blurred reference, so "blurred x" means one thing here."""
PERTURBATION_REFERENCES = {
    "air": f"every pixel {measures.AIR:g} (normalised: air, -1000 HU)",
    "lung": "context_fill's lung texture (-850 HU, smoothed noise) with the fill's seed: under --fill lung "
            "identical to the surround",
    "blurred": f"x blurred with a Gaussian of sigma {BLURRED_REFERENCE_SIGMA_MM:.2f} mm (the SHAP baselines' "
               "first blur), edges extended"}
"""What deleted pixels become and where insertion starts, as the report describes them (perturbation_references)."""


@dataclass(frozen=True)
class Control:
    key: str
    label: str
    description: str


CONTROLS: Dict[str, Control] = {
    control.key: control
    for control in (
        Control("control-centred-gaussian", f"Control: centred Gaussian (sigma {GAUSSIAN_CONTROL_SIGMA_MM:g} mm)",
                f"exp(-r^2 / (2 sigma^2)), r = distance (mm) from the patch centre (the seed, pixel 31.5, 31.5), "
                f"sigma = {GAUSSIAN_CONTROL_SIGMA_MM:g} mm; the same map for every patch"),
        Control("control-edge-map", f"Control: edge map |x - blur(x)| (sigma {EDGE_CONTROL_SIGMA_MM:g} mm)",
                f"|x - gaussian_blur(x)| on the normalised patch as compared (fill included), Gaussian sigma "
                f"{EDGE_CONTROL_SIGMA_MM:g} mm (scipy.ndimage.gaussian_filter, edges extended)"),
    )
}
CONTROL_RANDOMISATION_REASON = (
    "not applicable: a control uses no model, so randomising the classifier cannot change it (its Spearman "
    "would be 1 by construction, a property of the control, not a test result)")


def centred_gaussian_map(count: int, sigma_mm: float = GAUSSIAN_CONTROL_SIGMA_MM,
                         size_px: int = PATCH_SIZE_PX) -> np.ndarray:
    """The centred-Gaussian control [count, size, size] (float32, peak 1 at the centre)."""
    centre = (size_px - 1) / 2.0  # the seed, as nodule_regions.within_mm_of_centre places it
    rows, columns = np.mgrid[0:size_px, 0:size_px]
    radius_mm = np.hypot(rows - centre, columns - centre) * PIXEL_MM
    single = np.exp(-(radius_mm**2) / (2.0 * sigma_mm**2)).astype(np.float32)
    return np.repeat(single[None], count, axis=0)


def edge_map(x: np.ndarray, sigma_mm: float = EDGE_CONTROL_SIGMA_MM) -> np.ndarray:
    """The edge-map control: |x - blur(x)| per patch [N, H, W]."""
    x = np.asarray(x, dtype=np.float32)
    return np.abs(x - measures.gaussian_blur(x, sigma_mm))


def control_maps(key: str, x: np.ndarray) -> np.ndarray:
    if key == "control-centred-gaussian":
        return centred_gaussian_map(len(x), size_px=x.shape[-1])
    if key == "control-edge-map":
        return edge_map(x)
    raise ValueError(f"Unknown control {key!r}; choose one of {', '.join(CONTROLS)}.")


def describe(key: str) -> Dict[str, Any]:
    """Label, library and kind of a method or control, for the report."""
    if key in CONTROLS:
        control = CONTROLS[key]
        return {"label": control.label, "library": "no model (control)", "signed": False, "control": True,
                "description": control.description}
    info = method_info(key)
    return {"label": info.label, "library": info.library, "signed": info.signed, "control": False}


def ordered_methods(methods: Optional[Sequence[str]]) -> List[str]:
    """CycleGAN-AM first, then the chosen baselines in METHODS order (duplicates dropped)."""
    chosen = list(methods or METHODS)
    for key in chosen:
        method_info(key)  # unknown keys fail before anything runs
    if CYCLEGAN_AM not in chosen:
        raise ValueError(f"The comparison is against {CYCLEGAN_AM}; include it in --methods.")
    return [key for key in METHODS if key in chosen]


def check_dataset_matches_bundle(data: PreparedDataset, metadata: BundleMetadata, dataset_dir: Path) -> None:
    """Refuse patches the bundle's classifier was not made for (another size or field of view).

    The HU window needs no check: prepared patches are stored in HU and normalised here with the
    bundle's own window.
    """
    size = metadata.patch_size_px
    if data.images_hu.shape[1:] != (size, size) or data.masks.shape != data.images_hu.shape:
        raise ValueError(
            f"{dataset_dir} holds patches of {data.images_hu.shape[1:]} px (masks {data.masks.shape[1:]}), but bundle "
            f"{metadata.name} expects {size} x {size} px; prepare the dataset with the bundle's patch contract.")
    extent = (data.manifest.get("patch") or {}).get("extent_mm")
    if extent is not None and abs(float(extent) - metadata.patch_extent_mm) > 1e-6:
        raise ValueError(
            f"{dataset_dir} was cut with {extent} mm patches, but bundle {metadata.name} expects "
            f"{metadata.patch_extent_mm} mm; prepare the dataset with the bundle's patch contract.")


def centre_views(dataset_dir: Path, split: str, metadata: BundleMetadata) -> PreparedDataset:
    """The split's centre views (one per nodule), refused when empty or not cut for the bundle."""
    data = load_prepared(dataset_dir).subset(split, view=CENTRE)
    if len(data) == 0:
        raise ValueError(f"The {split!r} split of {dataset_dir} has no centre views.")
    check_dataset_matches_bundle(data, metadata, dataset_dir)
    return data


def _coverage(valid: np.ndarray, regions: Dict[float, np.ndarray]) -> Dict[str, Any]:
    """How much of the compared patches holds image, and how much of them each region covers."""
    return {"median_valid_fraction": float(np.median(valid.reshape(len(valid), -1).mean(axis=1))),
            "region_area_fraction": {f"{d:g}mm": float(region.mean()) for d, region in regions.items()}}


def select_patches(count: int, limit: Optional[int], seed: int) -> np.ndarray:
    """Indices of the patches to compare: all, or ``limit`` of them drawn at random (seeded), in order."""
    if limit is None or limit >= count:
        return np.arange(count)
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}.")
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def malignancy_of(bundle: ModelBundle, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """images [M, H, W] (normalised) -> p(malignant) [M] of the bundle's own (TorchScript) classifier."""
    def malignancy(images: np.ndarray) -> np.ndarray:
        return malignancy_probabilities(bundle.classifier, images, bundle.device, batch_size,
                                        bundle.metadata.malignant_index).numpy()

    return malignancy


def perturbation_references(images_hu: np.ndarray, x: np.ndarray, hu_window: Sequence[float],
                            seed: int) -> Dict[str, np.ndarray]:
    """The deletion/insertion references [N, H, W] (normalised): air, lung texture, blurred x.

    The lung reference is context_fill's lung texture drawn with the same seed and shape as the lung
    fill, so under --fill lung it equals the surround already there (deleting the surround changes nothing).
    """
    lung = fill_outside(images_hu, np.zeros(images_hu.shape, dtype=np.uint8), "lung", seed)
    return {"air": np.full(x.shape, measures.AIR, dtype=np.float32),
            "lung": normalise_hu(lung, hu_window),
            "blurred": measures.gaussian_blur(x, BLURRED_REFERENCE_SIGMA_MM)}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch thread(s)"


def timed_maps(compute: Callable[[np.ndarray, int], np.ndarray], x: np.ndarray, batch_size: int) -> Dict[str, Any]:
    """compute(x, batch_size)'s maps and how fast they came (after one untimed warm-up map: imports, eager model)."""
    compute(x[:1], 1)
    started = time.perf_counter()
    maps = compute(x, batch_size)
    seconds = time.perf_counter() - started
    return {"maps": maps, "seconds": seconds, "maps_per_second": len(x) / seconds, "patches": len(x),
            "batch_size": batch_size}


def score_maps(maps: np.ndarray, x: np.ndarray, regions: Dict[float, np.ndarray], valid: np.ndarray,
               references: Dict[str, np.ndarray],
               malignancy: Callable[[np.ndarray], np.ndarray]) -> Dict[str, np.ndarray]:
    """Every per-patch measure of attribution_metrics for one method's maps."""
    scores = measures.localisation_scores(maps, regions, valid)
    for name, reference in references.items():
        deletion, insertion = measures.perturbation_curves(malignancy, x, maps, reference)
        scores[f"deletion_auc_{name}"] = measures.area_under_perturbation_curves(deletion)
        scores[f"insertion_auc_{name}"] = measures.area_under_perturbation_curves(insertion)
    scores["sparseness_gini"] = measures.sparseness_gini(maps)
    scores["complexity_entropy"] = measures.complexity_entropy(maps)
    return scores


def maps_and_scores(bundle: ModelBundle, model_methods: Sequence[str], x: np.ndarray,
                    regions: Dict[float, np.ndarray], valid: np.ndarray, references: Dict[str, np.ndarray],
                    malignancy: Callable[[np.ndarray], np.ndarray]) -> Tuple[Dict[str, np.ndarray],
                                                                             Dict[str, Dict[str, np.ndarray]],
                                                                             Dict[str, Dict[str, Any]],
                                                                             Dict[str, float]]:
    """Every method's and control's maps, per-patch scores and speed, and the seconds each stage took
    (the randomisation stage's is filled in by the caller)."""
    computers: Dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        key: (lambda images, batch_size, key=key: attribute(key, bundle, images, batch_size=batch_size))
        for key in model_methods}
    computers.update({key: (lambda images, batch_size, key=key: control_maps(key, images)) for key in CONTROLS})
    maps: Dict[str, np.ndarray] = {}
    per_patch: Dict[str, Dict[str, np.ndarray]] = {}
    speed: Dict[str, Dict[str, Any]] = {}
    stage_seconds = {"maps": 0.0, "scores": 0.0, "randomisation": 0.0}
    for key, compute in computers.items():
        logger.info("%s: maps for %d patches.", key, len(x))
        started = time.perf_counter()
        run = timed_maps(compute, x, SPEED_BATCH_SIZES[-1])
        one_by_one = timed_maps(compute, x[:SPEED_PATCHES_AT_BATCH_1], SPEED_BATCH_SIZES[0])
        maps[key] = run.pop("maps")
        one_by_one.pop("maps")
        speed[key] = {"batch_1": one_by_one, f"batch_{SPEED_BATCH_SIZES[-1]}": run}
        stage_seconds["maps"] += time.perf_counter() - started
        started = time.perf_counter()
        per_patch[key] = score_maps(maps[key], x, regions, valid, references, malignancy)
        stage_seconds["scores"] += time.perf_counter() - started
    return maps, per_patch, speed, stage_seconds


def randomised_classifier(bundle: ModelBundle, seed: int) -> "torch.nn.Module":
    """The bundle's classifier architecture with freshly initialised weights (randomise-classifier's recipe)."""
    from .train_classifier import load_classifier, randomised_classifier_checkpoint

    trained = eager_classifier(bundle)
    width = int(bundle.metadata.raw["architecture"]["classifier"]["width"])
    checkpoint = {"kind": "classifier", "width": width, "state_dict": trained.state_dict()}
    return load_classifier(randomised_classifier_checkpoint(checkpoint, seed)).to(bundle.device).eval()


def load_sanity_bundle(path: Union[str, Path], bundle: ModelBundle, data: PreparedDataset, dataset_dir: Path,
                       device: str, allow_unknown: bool = True) -> ModelBundle:
    """The sanity bundle, refused when it cannot be the bundle's randomised twin."""
    sanity = load_bundle(path, device, allow_unknown=allow_unknown)
    check_dataset_matches_bundle(data, sanity.metadata, dataset_dir)
    if tuple(sanity.metadata.hu_window) != tuple(bundle.metadata.hu_window):
        raise ValueError(f"The sanity bundle's HU window {sanity.metadata.hu_window} differs from "
                         f"the bundle's {bundle.metadata.hu_window}.")
    trained, randomised = eager_classifier(bundle).state_dict(), eager_classifier(sanity).state_dict()
    if trained.keys() != randomised.keys() or any(trained[k].shape != randomised[k].shape for k in trained):
        raise ValueError("The sanity bundle's classifier has another architecture than the bundle's.")
    if all(bool((trained[k] == randomised[k]).all()) for k in trained):
        raise ValueError("The sanity bundle's classifier is the bundle's own trained classifier; it must be the "
                         "randomised classifier its generators were trained against (randomise-classifier).")
    return sanity


def cyclegan_flip_test(bundle: ModelBundle, sanity: ModelBundle, x: np.ndarray,
                       malignancy: Callable[[np.ndarray], np.ndarray]) -> Dict[str, Any]:
    """Do generators trained against a randomised classifier still flip the TRAINED one? (They should not.)"""
    from CycleGANExplainLib.inference import run_networks

    real, randomised = run_networks(bundle, x), run_networks(sanity, x)
    p_x = malignancy(x)
    randomised_pos, randomised_neg = malignancy(randomised["g_pos"]), malignancy(randomised["g_neg"])
    return {
        "sanity_bundle": {"name": sanity.metadata.name, "version": sanity.metadata.version,
                          "directory": str(sanity.directory)},
        "flip_rates_trained_generators": flip_rates(p_x, real["p_pos"], real["p_neg"]),
        "flip_rates_randomised_generators": flip_rates(p_x, randomised_pos, randomised_neg),
        "mean_malignancy": {"x": float(np.mean(p_x)),
                            "trained_g_pos": float(np.mean(real["p_pos"])),
                            "trained_g_neg": float(np.mean(real["p_neg"])),
                            "randomised_g_pos": float(np.mean(randomised_pos)),
                            "randomised_g_neg": float(np.mean(randomised_neg))},
    }


def randomisation_test(methods: Sequence[str], bundle: ModelBundle, sanity: Optional[ModelBundle], x: np.ndarray,
                       maps: Dict[str, np.ndarray], indices: np.ndarray, seed: int) -> Dict[str, Any]:
    """Spearman(|map| trained, |map| randomised) on the same patches and randomised classifier for every method.

    With a sanity bundle, its classifier (the randomised one its generators were trained against) is
    the randomised classifier of the baselines too, and CycleGAN-AM's randomised map is the sanity
    bundle's R; without one, the baselines get the bundle's architecture re-initialised with ``seed``
    and CycleGAN-AM is not run (its R cannot be recomputed for a new classifier without training).
    """
    from CycleGANExplainLib.inference import run_networks

    if sanity is not None:
        random_model = eager_classifier(sanity)
        source = (f"the sanity bundle's classifier ({sanity.metadata.name} {sanity.metadata.version}): the randomised "
                  "classifier its generators were trained against")
    else:
        random_model = randomised_classifier(bundle, seed)
        source = (f"the bundle's classifier architecture with every weight freshly initialised (torch seed {seed}, "
                  "train_classifier.randomised_classifier_checkpoint, the recipe of randomise-classifier)")
    patches = x[indices]
    values: Dict[str, np.ndarray] = {}
    for key in methods:
        if key == CYCLEGAN_AM:
            if sanity is None:
                continue
            outputs = run_networks(sanity, patches)
            values[key] = measures.rank_correlation(maps[key][indices], outputs["g_pos"] - outputs["g_neg"])
        else:
            random_maps = attribute_classifier(key, random_model, patches, bundle.metadata.malignant_index)
            values[key] = measures.rank_correlation(maps[key][indices], random_maps)
    return {"values": values, "patches": int(len(indices)), "randomised_classifier": source,
            "re_initialisation": "full (all layers at once)", "similarity": "Spearman rank correlation of |map|",
            "controls": CONTROL_RANDOMISATION_REASON}


def compare_methods(
    bundle_dir: Union[str, Path],
    dataset_dir: Union[str, Path],
    methods: Optional[Sequence[str]] = None,
    limit: Optional[int] = None,
    sanity_bundle_dir: Optional[Union[str, Path]] = None,
    seed: int = 0,
    device: str = "cpu",
    fill: str = DEFAULT_FILL,
    split: str = "test",
    allow_unknown_bundle: bool = True,
) -> Dict[str, Any]:
    """Maps, per-patch measures, randomisation test and speed of every method and control; see comparison_report.

    ``allow_unknown_bundle``: run bundles the package does not ship (as evaluate.evaluate; the
    command line passes its --allow-unknown-bundle)."""
    model_methods = ordered_methods(methods)
    if fill not in EVALUATION_FILLS:
        raise ValueError(f"Unknown fill {fill!r}; expected one of {EVALUATION_FILLS}.")
    bundle = load_bundle(bundle_dir, device, allow_unknown=allow_unknown_bundle)
    dataset_dir = Path(dataset_dir)
    data = centre_views(dataset_dir, split, bundle.metadata)
    sanity = None if sanity_bundle_dir is None else load_sanity_bundle(sanity_bundle_dir, bundle, data, dataset_dir,
                                                                       device, allow_unknown_bundle)
    chosen = select_patches(len(data), limit, seed)
    window = bundle.metadata.hu_window
    images_hu, valid = data.images_hu[chosen], data.valid[chosen].astype(np.uint8)
    x = normalise_hu(fill_outside(images_hu, valid, fill, seed), window)
    masks, labels = data.masks[chosen], data.labels[chosen]
    malignancy = malignancy_of(bundle)
    p_x = malignancy(x)
    regions = measures.localisation_regions(masks, valid)
    references = perturbation_references(images_hu, x, window, seed)

    maps, per_patch, speed, stage_seconds = maps_and_scores(bundle, model_methods, x, regions, valid, references,
                                                            malignancy)
    started = time.perf_counter()
    randomisation = randomisation_test(model_methods, bundle, sanity, x, maps,
                                       select_patches(len(x), RANDOMISATION_PATCHES, seed), seed)
    flip_test = None if sanity is None else cyclegan_flip_test(bundle, sanity, x, malignancy)
    stage_seconds["randomisation"] = time.perf_counter() - started

    metadata = bundle.metadata
    return {
        "bundle": {"name": metadata.name, "version": metadata.version, "trained": metadata.trained,
                   "directory": str(bundle.directory), "hu_window": list(window)},
        "dataset": {"directory": str(dataset_dir), "manifest_sha256": sha256_of(dataset_dir / MANIFEST_FILE),
                    "patches_sha256": data.manifest.get("patches_sha256"), "source": data.manifest.get("source"),
                    "split": split, "view": CENTRE, "split_size": int(len(data)), "n": int(len(x)), "limit": limit,
                    "benign": int(np.sum(labels == 0)), "malignant": int(np.sum(labels == 1)),
                    "fill": fill, "fill_seed": seed, **_coverage(valid, regions)},
        "methods": [*model_methods, *CONTROLS],
        "descriptions": {key: describe(key) for key in [*model_methods, *CONTROLS]},
        "x": x, "labels": labels, "p_x": p_x, "maps": maps,
        "groups": measures.predicted_groups(p_x),
        "per_patch": per_patch,
        "perturbation": {"references": dict(PERTURBATION_REFERENCES), "steps": measures.PERTURBATION_STEPS},
        "randomisation": randomisation,
        "cyclegan_sanity": flip_test,
        "speed": {"device": device_name(bundle.device), "per_method": speed,
                  "patches_at_batch_1": SPEED_PATCHES_AT_BATCH_1},
        "stage_seconds": stage_seconds,
    }
