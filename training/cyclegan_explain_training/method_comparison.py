"""CycleGAN-AM beside the attribution baselines on one classifier and one set of test patches (issue 6).

Every method explains the bundle's classifier (CycleGAN-AM through its generators, the baselines on
the classifier rebuilt eagerly, attribution_methods.attribute for all), on the same patches
normalised with the bundle's HU window. Each map is then scored with the same per-patch measures
(attribution_metrics), timed, and checked with the model-parameter randomisation test; the report
(comparison_report) bootstraps the means and pairs every baseline with CycleGAN-AM.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Union

import numpy as np

from CycleGANExplainLib.attribution_methods import (
    CYCLEGAN_AM, METHODS, attribute, attribute_classifier, eager_classifier, method_info,
)
from CycleGANExplainLib.intensity import normalise_hu
from CycleGANExplainLib.model_bundle import BundleMetadata, ModelBundle, load_bundle, sha256_of

from . import attribution_metrics as measures
from .dataset import MANIFEST_FILE, PreparedDataset, load_prepared
from .metrics import flip_rates

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

logger = logging.getLogger(__name__)

SPEED_BATCH_SIZES = (1, 32)
SPEED_PATCHES_AT_BATCH_1 = 16  # one at a time is slow for the perturbation methods; 16 is enough to time
RANDOMISATION_PATCHES = 64  # the randomisation test re-runs every baseline: the first 64 patches suffice


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


def select_patches(count: int, limit: Optional[int], seed: int) -> np.ndarray:
    """Indices of the patches to compare: all, or ``limit`` of them drawn at random (seeded), in order."""
    if limit is None or limit >= count:
        return np.arange(count)
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}.")
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def class_probabilities(bundle: ModelBundle, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """images [M, H, W] (normalised) -> softmax [M, 2] of the bundle's own (TorchScript) classifier."""
    import torch

    def probabilities(images: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None]
                outputs.append(torch.softmax(bundle.classifier(batch.to(bundle.device)).float(), dim=1).cpu().numpy())
        return np.concatenate(outputs)

    return probabilities


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


def timed_maps(key: str, bundle: ModelBundle, x: np.ndarray, batch_size: int) -> Dict[str, Any]:
    """The method's maps for x and how fast they came (after one untimed warm-up map: imports, eager model)."""
    attribute(key, bundle, x[:1], batch_size=1)
    started = time.perf_counter()
    maps = attribute(key, bundle, x, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {"maps": maps, "seconds": seconds, "maps_per_second": len(x) / seconds, "patches": len(x),
            "batch_size": batch_size}


def score_maps(maps: np.ndarray, masks: np.ndarray, x: np.ndarray,
               probabilities: Callable[[np.ndarray], np.ndarray]) -> Dict[str, np.ndarray]:
    """Every per-patch measure of attribution_metrics for one method's maps."""
    deletion, insertion, _ = measures.perturbation_curves(probabilities, x, maps)
    return {
        "relevance_mass_accuracy": measures.relevance_mass_accuracy(maps, masks),
        "relevance_rank_accuracy": measures.relevance_rank_accuracy(maps, masks),
        "pointing_game": measures.pointing_game(maps, masks),
        "deletion_auc": measures.curve_auc(deletion),
        "insertion_auc": measures.curve_auc(insertion),
        "sparseness_gini": measures.sparseness_gini(maps),
        "complexity_entropy": measures.complexity_entropy(maps),
    }


def randomised_classifier(bundle: ModelBundle, seed: int) -> "torch.nn.Module":
    """The bundle's classifier architecture with freshly initialised weights (randomise-classifier's recipe)."""
    from .train_classifier import load_classifier, randomised_classifier_checkpoint

    trained = eager_classifier(bundle)
    width = int(bundle.metadata.raw["architecture"]["classifier"]["width"])
    checkpoint = {"kind": "classifier", "width": width, "state_dict": trained.state_dict()}
    return load_classifier(randomised_classifier_checkpoint(checkpoint, seed)).to(bundle.device)


def cyclegan_sanity(bundle: ModelBundle, sanity: ModelBundle, x: np.ndarray, cyclegan_maps: np.ndarray,
                    probabilities: Callable[[np.ndarray], np.ndarray]) -> Dict[str, Any]:
    """Do generators trained against a randomised classifier still flip the TRAINED one? (They should not.)"""
    from CycleGANExplainLib.explanation import run_networks

    malignant = bundle.metadata.malignant_index
    real, randomised = run_networks(bundle, x), run_networks(sanity, x)
    p_x = probabilities(x)[:, malignant]
    return {
        "sanity_bundle": {"name": sanity.metadata.name, "version": sanity.metadata.version,
                          "directory": str(sanity.directory)},
        "flip_rates_trained_generators": flip_rates(p_x, real["p_pos"], real["p_neg"]),
        "flip_rates_randomised_generators": flip_rates(
            p_x, probabilities(randomised["g_pos"])[:, malignant], probabilities(randomised["g_neg"])[:, malignant]),
        "mean_malignancy": {"x": float(np.mean(p_x)),
                            "trained_g_pos": float(np.mean(real["p_pos"])),
                            "trained_g_neg": float(np.mean(real["p_neg"])),
                            "randomised_g_pos": float(np.mean(probabilities(randomised["g_pos"])[:, malignant])),
                            "randomised_g_neg": float(np.mean(probabilities(randomised["g_neg"])[:, malignant]))},
        "randomisation_spearman": measures.rank_correlation(
            cyclegan_maps, randomised["g_pos"] - randomised["g_neg"]),
    }


def compare_methods(
    bundle_dir: Union[str, Path],
    dataset_dir: Union[str, Path],
    methods: Optional[Sequence[str]] = None,
    limit: Optional[int] = None,
    sanity_bundle_dir: Optional[Union[str, Path]] = None,
    seed: int = 0,
    device: str = "cpu",
    split: str = "test",
) -> Dict[str, Any]:
    """Maps, per-patch measures, randomisation test and speed of every method; see comparison_report."""
    methods = list(methods or METHODS)
    for key in methods:
        method_info(key)  # unknown keys fail before anything runs
    if CYCLEGAN_AM not in methods:
        raise ValueError(f"The comparison is against {CYCLEGAN_AM}; include it in --methods.")
    bundle = load_bundle(bundle_dir, device)
    dataset_dir = Path(dataset_dir)
    data = load_prepared(dataset_dir).subset(split)
    if len(data) == 0:
        raise ValueError(f"The {split!r} split of {dataset_dir} is empty.")
    check_dataset_matches_bundle(data, bundle.metadata, dataset_dir)
    chosen = select_patches(len(data), limit, seed)
    x = normalise_hu(data.images_hu[chosen], bundle.metadata.hu_window)
    masks, labels = data.masks[chosen], data.labels[chosen]
    probabilities = class_probabilities(bundle)
    p_x = probabilities(x)[:, bundle.metadata.malignant_index]

    maps: Dict[str, np.ndarray] = {}
    per_patch: Dict[str, Dict[str, np.ndarray]] = {}
    speed: Dict[str, Dict[str, Any]] = {}
    randomisation: Dict[str, np.ndarray] = {}
    random_model = randomised_classifier(bundle, seed)
    n_random = min(RANDOMISATION_PATCHES, len(x))
    for key in methods:
        logger.info("%s: maps for %d patches.", key, len(x))
        run = timed_maps(key, bundle, x, SPEED_BATCH_SIZES[-1])
        one_by_one = timed_maps(key, bundle, x[:SPEED_PATCHES_AT_BATCH_1], SPEED_BATCH_SIZES[0])
        maps[key] = run.pop("maps")
        one_by_one.pop("maps")
        speed[key] = {"batch_1": one_by_one, f"batch_{SPEED_BATCH_SIZES[-1]}": run}
        per_patch[key] = score_maps(maps[key], masks, x, probabilities)
        if key != CYCLEGAN_AM:
            random_maps = attribute_classifier(key, random_model, x[:n_random], bundle.metadata.malignant_index)
            randomisation[key] = measures.rank_correlation(maps[key][:n_random], random_maps)

    sanity = None
    if sanity_bundle_dir is not None:
        sanity_bundle = load_bundle(sanity_bundle_dir, device)
        check_dataset_matches_bundle(data, sanity_bundle.metadata, dataset_dir)
        if tuple(sanity_bundle.metadata.hu_window) != tuple(bundle.metadata.hu_window):
            raise ValueError(f"The sanity bundle's HU window {sanity_bundle.metadata.hu_window} differs from "
                             f"the bundle's {bundle.metadata.hu_window}.")
        sanity = cyclegan_sanity(bundle, sanity_bundle, x, maps[CYCLEGAN_AM], probabilities)
        randomisation[CYCLEGAN_AM] = sanity.pop("randomisation_spearman")

    metadata = bundle.metadata
    return {
        "bundle": {"name": metadata.name, "version": metadata.version, "trained": metadata.trained,
                   "directory": str(bundle.directory), "hu_window": list(metadata.hu_window)},
        "dataset": {"directory": str(dataset_dir), "manifest_sha256": sha256_of(dataset_dir / MANIFEST_FILE),
                    "patches_sha256": data.manifest.get("patches_sha256"), "split": split,
                    "split_size": int(len(data)), "n": int(len(x)), "limit": limit,
                    "benign": int(np.sum(labels == 0)), "malignant": int(np.sum(labels == 1))},
        "methods": methods,
        "x": x, "labels": labels, "p_x": p_x, "maps": maps,
        "per_patch": per_patch,
        "randomisation": randomisation,
        "randomisation_patches": n_random,
        "cyclegan_sanity": sanity,
        "speed": {"device": device_name(bundle.device), "per_method": speed},
    }
