"""Counterfactual audit: could a clinician believe G+(x) and G-(x)? (issue 21, honest evaluation)

On the test split's centre views, air beyond each sub-volume's box (the patch exactly as the
command line samples it), this measures what evaluate's figures do not:

1. realism: detectors trained on train-split patients to tell x from G(x) (a small CNN, and a
   logistic regression on three texture features), tested on test patients;
2. bright-core insertion: G-(x) adding a calcification-like core to nodules called suspicious
   (and G+(x) to nodules called not suspicious);
3. change beyond the valid box, where the patch holds no image;
4. transfer: the flips of the same G(x) on a held-out classifier (another architecture) and on a
   size-only model that measures the nodule's size from the image itself;
5. SSIM(x, G(x)) inside the valid box and within 5 mm of the nodule;
6. the share of |R| within 5 mm beside a model-free control, a centred Gaussian map;
7. ablations of G-'s change: its darkening part, its brightening part, the inserted core alone.

Everything fitted (the detectors, the size model, the Gaussian's width) is fitted on the train
split; the test split is only measured. For model choices the same audit runs on a classifier's
validation patients instead (``validation_of``): fitted on its fitting patients, measured on its
validation patients, the test split not read. Rates and means carry a patient-level bootstrap 95 % CI
(metrics.patient_bootstrap; the detectors' CIs resample test patients only, the detector itself
is fitted once). A rate or AUC whose stratum holds fewer than MIN_STRATUM nodules (of either
class, for an AUC) is n/a. Label 1 is "rated suspicious by readers": the readers' malignancy
rating, not a pathology result.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from CycleGANExplainLib.inference import run_networks
from CycleGANExplainLib.intensity import denormalise_to_hu, normalise_hu
from CycleGANExplainLib.model_bundle import ModelBundle, load_bundle, sha256_of
from CycleGANExplainLib.patch_sampling import OUTSIDE_HU

from .batched_inference import malignancy_probabilities
from .calibration import sigmoid
from .context_fill import fill_outside
from .dataset import CENTRE, MALIGNANT, MANIFEST_FILE, PreparedDataset, load_prepared
from .evaluate import Target, classifier_margins
from .explanation_checks import (BEYOND_BOX_TOLERANCE_HU, BRIGHT_HU, BRIGHT_MIN_PIXELS, area_share, bright_core_inserted,
                                 change_beyond_box_hu, inserted_bright_pixels, share_of_magnitude,
                                 unrelated_partners)
from .metrics import (
    DECISION_THRESHOLD, MIN_STRATUM, SOFT_TISSUE_HU, flip_indicators, mean_of_map, nan_mean, patient_bootstrap,
    roc_auc, skimage_ssim_maps, ssim_maps,
)
from .nodule_regions import PIXEL_MM, within_mm_of_masks
from .reporting import json_safe, nest_paths, not_available
from .simple_baselines import fit_logistic_baseline

logger = logging.getLogger(__name__)

JSON_FILE = "audit.json"
MARKDOWN_FILE = "audit.md"
CONFIDENCE = 0.95
GENERATORS = {"g_pos": "G+", "g_neg": "G\u2212"}
SUSPICIOUS_LABEL = "rated suspicious by readers"

# 1. Detectors. The CNN: three 3x3 conv layers (16-32-64) with BatchNorm and ReLU, max pooling
# after the first two, global average pooling and one logit; fixed seed, epochs and optimiser so
# that two bundles are measured with the same ruler. BatchNorm because without it the network did
# not even fit its training pairs on the shipped bundle (train AUC 0.58 for G+, 0.80 with it): a
# detector that cannot learn would make "indistinguishable" a trivial pass.
DETECTOR_WIDTHS = (16, 32, 64)
DETECTOR_EPOCHS = 15
DETECTOR_LEARNING_RATE = 1e-3
DETECTOR_BATCH_SIZE = 64
TEXTURE_REGION_MM = 10.0  # "near the nodule" for the texture features
TEXTURE_FEATURES = ("local SD (3x3) of lung pixels within 10 mm of the mask, HU",
                    "share of valid pixels at the HU window's top",
                    "log mean squared Sobel gradient within 10 mm of the mask")
# The independent review's statistic: patches whose largest change beyond the box exceeds this.
BEYOND_BOX_LARGEST_HU = 35.0
# 5./6. Regions around the nodule's mask.
NEAR_MM = 5.0


def audit(
    bundle_dir: Union[str, Path],
    dataset_dir: Union[str, Path],
    out_dir: Union[str, Path],
    held_out_classifier: Optional[Union[str, Path]] = None,
    bootstrap: int = 1000,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    detector_epochs: int = DETECTOR_EPOCHS,
    allow_unknown_bundle: bool = True,
    command: Optional[str] = None,
    validation_of: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """Audit the bundle's counterfactuals on the test split; write audit.json and audit.md into
    ``out_dir`` and return the JSON's content.

    ``validation_of``: a classifier.pt from train-classifier; the audit then fits on that
    classifier's fitting patients and measures on its validation patients (never the test split),
    for choices between bundles. A held-out classifier must then have held out the same patients.

    ``held_out_classifier``: a classifier.pt from train-classifier that the generators never saw
    (any architecture load_classifier knows). Raises ValueError for a dataset without both
    classes in the train split's centre views or an empty test split, FileNotFoundError or
    checkpoint.CheckpointError for a missing or unusable checkpoint. ``allow_unknown_bundle``: run a
    bundle the package does not ship (the command line asks for the same opt-in as evaluate).
    ``command`` is recorded in audit.json and audit.md.
    """
    if detector_epochs < 1:
        raise ValueError(f"The realism detector needs at least one epoch, got {detector_epochs}.")
    bundle = load_bundle(bundle_dir, device, allow_unknown=allow_unknown_bundle)
    dataset_dir = Path(dataset_dir)
    dataset = load_prepared(dataset_dir)
    split = "test" if validation_of is None else "validation"
    train, test = _audited_parts(dataset, validation_of, held_out_classifier)
    if len(test) == 0:
        raise ValueError(f"The {split} split of {dataset_dir} has no centre views to audit.")
    if len(np.unique(train.labels)) < 2:
        raise ValueError(f"The train split of {dataset_dir} needs centre views of both classes: the detectors and "
                         "the size model are fitted on it.")
    held_out = _load_held_out(held_out_classifier) if held_out_classifier is not None else None

    window = bundle.metadata.hu_window
    logger.info("Running the bundle on %d train and %d test centre views.", len(train), len(test))
    images = {name: _counterfactuals(bundle, data, batch_size) for name, data in (("train", train), ("test", test))}

    per_nodule = _PerNodule(test.labels)
    detectors = _measure_detectors(images, train, test, window, seed, detector_epochs, bundle.device, per_nodule)
    _measure_bright_cores(images["test"], test, window, per_nodule)
    _measure_beyond_box(bundle, images["test"], test, seed, batch_size, per_nodule)
    transfer = _measure_transfer(images, train, test, window, held_out, bundle.device, batch_size, per_nodule)
    _measure_similarity(images["test"], test, seed, per_nodule)
    gaussian = _measure_relevance(images, train, test, per_nodule)
    _measure_ablations(bundle, images["test"], test, window, batch_size, per_nodule)

    logger.info("Bootstrapping %d resamples over %d test patients.", bootstrap, len(np.unique(test.patient_ids)))
    estimates = patient_bootstrap(per_nodule.statistics, test.patient_ids, bootstrap, seed, CONFIDENCE)
    figures = per_nodule.nest(estimates)
    result = {
        "bundle": {"name": bundle.metadata.name, "version": bundle.metadata.version,
                   "trained": bundle.metadata.trained, "directory": str(bundle.directory), "hu_window": list(window)},
        "dataset": {"directory": str(dataset_dir), "manifest_sha256": sha256_of(dataset_dir / MANIFEST_FILE),
                    "patches_sha256": dataset.manifest.get("patches_sha256"), "split": split, "view": CENTRE,
                    "validation_of": None if validation_of is None else str(validation_of),
                    "fill": "air", "n": int(len(test)), "patients": int(len(np.unique(test.patient_ids))),
                    "rated_suspicious": int(np.sum(test.labels == MALIGNANT)),
                    "train_nodules": int(len(train)), "train_patients": int(len(np.unique(train.patient_ids)))},
        "settings": _settings(seed, bootstrap, bundle.device, gaussian),
        "detectors": detectors,
        "transfer_models": transfer,
        "figures": figures,
        "denominators": per_nodule.denominators(),
        "command": command,
    }
    result["targets"] = check_targets(figures)
    return _write(result, Path(out_dir))


def _audited_parts(dataset: PreparedDataset, validation_of: Optional[Union[str, Path]],
                   held_out_classifier: Optional[Union[str, Path]]) -> Tuple[PreparedDataset, PreparedDataset]:
    """(fitted on, measured on): the train and test splits' centre views, or, given a classifier,
    its fitting and validation patients' (the held-out classifier must have held out the same)."""
    if validation_of is None:
        return dataset.subset("train", CENTRE), dataset.subset("test", CENTRE)
    from .checkpoint import load_checkpoint
    from .train_cyclegan import same_patient_classifiers, split_like_classifier

    state = load_checkpoint(validation_of, "classifier")
    if held_out_classifier is not None:
        same_patient_classifiers(state, [held_out_classifier])
    fit, validation = split_like_classifier(dataset, state)
    return fit.select(fit.views == CENTRE), validation.select(validation.views == CENTRE)


# --- per-nodule values and their bootstrap ---------------------------------------------------


class _PerNodule:
    """Per test nodule: values whose NaN-ignoring mean is a figure (NaN: outside its denominator),
    values whose median is one, paired real/generated detector scores and scores with labels whose
    AUC is one; ``differences`` are figure minus figure in the same resample."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.means: Dict[str, np.ndarray] = {}
        self.medians: Dict[str, np.ndarray] = {}
        self.detector_scores: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.label_aucs: Dict[str, np.ndarray] = {}
        self.differences: Dict[str, Tuple[str, str]] = {}

    def statistics(self, indices: np.ndarray) -> Dict[str, float]:
        values: Dict[str, float] = {}
        for name, per in self.means.items():
            values[name] = nan_mean(per[indices])
        for name, per in self.medians.items():
            chosen = per[indices]
            chosen = chosen[np.isfinite(chosen)]
            values[name] = float(np.median(chosen)) if len(chosen) else math.nan
        for name, (real, generated) in self.detector_scores.items():
            scores = np.concatenate([real[indices], generated[indices]])
            values[name] = roc_auc(np.repeat([0, 1], len(indices)), scores)
        for name, scores in self.label_aucs.items():
            values[name] = roc_auc(self.labels[indices], scores[indices])
        for name, (first, second) in self.differences.items():
            values[name] = values[first] - values[second]
        return values

    def denominators(self) -> Dict[str, Any]:
        """How many test nodules each figure rests on (both classes' counts for an AUC)."""
        counts: Dict[str, Any] = {}
        for name, per in {**self.means, **self.medians}.items():
            counts[name] = int(np.sum(np.isfinite(per)))
        for name in self.detector_scores:
            counts[name] = {"real": len(self.labels), "generated": len(self.labels)}
        suspicious = int(np.sum(self.labels == MALIGNANT))
        for name in self.label_aucs:
            counts[name] = {SUSPICIOUS_LABEL: suspicious, "not": int(len(self.labels) - suspicious)}
        return counts

    def _too_small(self, name: str) -> bool:
        if name in self.means or name in self.medians:
            return int(np.sum(np.isfinite({**self.means, **self.medians}[name]))) < MIN_STRATUM
        if name in self.label_aucs:
            suspicious = int(np.sum(self.labels == MALIGNANT))
            return min(suspicious, len(self.labels) - suspicious) < MIN_STRATUM
        if name in self.detector_scores:
            return len(self.labels) < MIN_STRATUM
        first, second = self.differences[name]
        return self._too_small(first) or self._too_small(second)

    def nest(self, estimates: Dict[str, Any]) -> Dict[str, Any]:
        """{"a/b": estimate} -> {"a": {"b": {...}}}; a figure on a stratum under MIN_STRATUM is n/a."""
        return nest_paths({name: not_available(f"n/a: fewer than {MIN_STRATUM} nodules in the stratum")
                           if self._too_small(name) else estimate.as_dict() for name, estimate in estimates.items()})


def _decided(events: np.ndarray, in_denominator: np.ndarray) -> np.ndarray:
    """Event indicators (1.0/0.0) restricted to a denominator: NaN elsewhere."""
    return np.where(in_denominator, np.asarray(events, dtype=np.float64), np.nan)


# --- running the networks ------------------------------------------------------------------------


def _counterfactuals(bundle: ModelBundle, data: PreparedDataset, batch_size: int) -> Dict[str, np.ndarray]:
    """x (air beyond the box, normalised with the bundle's window), G+(x), G-(x) and the bundle
    classifier's probabilities on each."""
    x = normalise_hu(fill_outside(data.images_hu, data.valid, "air"), bundle.metadata.hu_window)
    return {"x": x, **run_networks(bundle, x, batch_size)}


def _air_beyond_box(images: np.ndarray, valid: np.ndarray, window) -> np.ndarray:
    """Normalised images with every pixel beyond the valid box set to air: what the detectors see,
    so that they judge the image, not the change the generators make where there is none."""
    return np.where(valid.astype(bool), images, normalise_hu(np.float32(OUTSIDE_HU), window)).astype(np.float32)


# --- 1. detectors --------------------------------------------------------------------------------


def _detector_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: List[nn.Module] = []
    channels = 1
    for number, width in enumerate(DETECTOR_WIDTHS):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        if number < len(DETECTOR_WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1)]
    return nn.Sequential(*layers)


def train_cnn_detector(real: np.ndarray, generated: np.ndarray, seed: int, device: str = "cpu",
                       epochs: int = DETECTOR_EPOCHS) -> nn.Module:
    """A small CNN trained to score generated images [N, H, W] above real ones (balanced: each
    real patch and its G(x)); fixed seed, epochs and Adam settings. Returns it in eval mode."""
    network = _detector_network(seed).to(device)
    images = torch.from_numpy(np.concatenate([real, generated]).astype(np.float32))[:, None]
    targets = torch.cat([torch.zeros(len(real)), torch.ones(len(generated))])
    optimiser = torch.optim.Adam(network.parameters(), lr=DETECTOR_LEARNING_RATE)
    order = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(permutation), DETECTOR_BATCH_SIZE):
            batch = permutation[start : start + DETECTOR_BATCH_SIZE]
            if len(batch) < 2:  # BatchNorm cannot train on a single sample
                continue
            logits = network(images[batch].to(device))[:, 0]
            loss = nn.functional.binary_cross_entropy_with_logits(logits, targets[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return network.eval()


def detector_scores(network: nn.Module, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The detector's logit per image [N, H, W]: higher means "generated"."""
    from .batched_inference import in_batches

    return in_batches(lambda batch: network(batch)[:, 0], images, device, DETECTOR_BATCH_SIZE).numpy()


def texture_features(images_hu: np.ndarray, valid: np.ndarray, masks: np.ndarray, window) -> np.ndarray:
    """[N, 3] (see TEXTURE_FEATURES): what a reader's eye catches first in a synthetic patch,
    the grain of the lung next to the nodule, pixels saturated at the window's top, and the
    strength of edges near the nodule. NaN where a region is empty (the model imputes)."""
    images = np.asarray(images_hu, dtype=np.float64)
    valid = np.asarray(valid).astype(bool)
    inside = np.asarray(masks).astype(bool)
    near = within_mm_of_masks(inside, TEXTURE_REGION_MM) & valid
    lung = near & ~inside & (images < SOFT_TISSUE_HU)
    size = (1, 3, 3)
    local_mean = ndimage.uniform_filter(images, size=size)
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(images**2, size=size) - local_mean**2, 0.0))
    gradient = ndimage.sobel(images, axis=1) ** 2 + ndimage.sobel(images, axis=2) ** 2
    at_top = images >= float(window[1]) - 1.0

    def mean_over(values: np.ndarray, region: np.ndarray) -> np.ndarray:
        return nan_mean(np.where(region, values, np.nan).reshape(len(values), -1), axis=1)

    return np.stack([mean_over(local_sd, lung), mean_over(at_top * 1.0, valid),
                     np.log1p(mean_over(gradient, near))], axis=1)


def _measure_detectors(images: Dict[str, Dict[str, np.ndarray]], train: PreparedDataset, test: PreparedDataset,
                       window, seed: int, epochs: int, device: str, per_nodule: _PerNodule) -> Dict[str, Any]:
    """Per generator, both detectors trained on train-split patients (x vs G(x)), scored on test."""
    described: Dict[str, Any] = {}
    seen = {split: {name: _air_beyond_box(images[split][name], data.valid, window)
                    for name in ("x", *GENERATORS)} for split, data in (("train", train), ("test", test))}
    for generator in GENERATORS:
        logger.info("Training the CNN detector for %s on %d train nodules.", GENERATORS[generator], len(train))
        network = train_cnn_detector(seen["train"]["x"], seen["train"][generator], seed, device, epochs)
        per_nodule.detector_scores[f"realism/cnn_detector_auc/{generator}"] = (
            detector_scores(network, seen["test"]["x"], device), detector_scores(network, seen["test"][generator], device))
        features = {split: {name: texture_features(denormalise_to_hu(seen[split][name], window), data.valid,
                                                   data.masks, window) for name in ("x", generator)}
                    for split, data in (("train", train), ("test", test))}
        model = fit_logistic_baseline(np.concatenate([features["train"]["x"], features["train"][generator]]),
                                      np.repeat([0, 1], len(train)), TEXTURE_FEATURES)
        per_nodule.detector_scores[f"realism/texture_detector_auc/{generator}"] = (
            model.malignancy(features["test"]["x"]), model.malignancy(features["test"][generator]))
        for number, name in enumerate(("lung_local_sd_hu", "share_at_window_top", "log_gradient_energy")):
            for image in ("x", generator):
                per_nodule.means[f"realism/texture_features/{name}/{image}"] = features["test"][image][:, number]
        described[generator] = {"texture_model": {**model.describe(), "target": "1 = generated, 0 = real",
                                                  "fitted_on": f"train split centre views: {len(train)} real and "
                                                               f"{len(train)} generated patches"}}
    return {
        "cnn": {"architecture": f"3 conv 3x3 layers {'-'.join(map(str, DETECTOR_WIDTHS))} channels, BatchNorm, ReLU, "
                                "max pool after the first two, global average pooling, one logit",
                "epochs": epochs, "optimiser": f"Adam lr {DETECTOR_LEARNING_RATE:g}",
                "batch_size": DETECTOR_BATCH_SIZE, "seed": seed, "augmentation": "none",
                "fitted_on": f"train split centre views: {len(train)} real and {len(train)} generated patches"},
        "texture": {"features": list(TEXTURE_FEATURES)},
        "per_generator": described,
        "input": "normalised patches with every pixel beyond the valid box set to air, in real and generated alike",
    }


# --- 2. bright cores -----------------------------------------------------------------------------


def _measure_bright_cores(test_images: Dict[str, np.ndarray], test: PreparedDataset, window,
                          per_nodule: _PerNodule) -> None:
    x_hu = denormalise_to_hu(test_images["x"], window)
    called_suspicious = test_images["p_x"] >= DECISION_THRESHOLD
    for generator, denominator in (("g_neg", called_suspicious), ("g_pos", ~called_suspicious)):
        events = bright_core_inserted(x_hu, denormalise_to_hu(test_images[generator], window), test.masks)
        per_nodule.means[f"bright_core/{generator}/called_{'suspicious' if generator == 'g_neg' else 'not_suspicious'}"] \
            = _decided(events, denominator)
        per_nodule.means[f"bright_core/{generator}/all_nodules"] = events * 1.0


# --- 3. change beyond the valid box -------------------------------------------------------------


def _measure_beyond_box(bundle: ModelBundle, test_images: Dict[str, np.ndarray], test: PreparedDataset, seed: int,
                        batch_size: int, per_nodule: _PerNodule) -> None:
    """Under air (the CLI's patch) and under the lung fill: air sits at the window's floor, where a
    residual generator's darkening is clipped away, so only the lung fill shows its changes in
    both directions."""
    window = bundle.metadata.hu_window
    lung_x = normalise_hu(fill_outside(test.images_hu, test.valid, "lung", seed), window)
    fills = {"air": test_images, "lung": {"x": lung_x, **run_networks(bundle, lung_x, batch_size)}}
    for fill, images in fills.items():
        x_hu = denormalise_to_hu(images["x"], window)
        for generator in GENERATORS:
            change, largest = change_beyond_box_hu(x_hu, denormalise_to_hu(images[generator], window), test.valid)
            prefix = f"beyond_box/{generator}/{fill}"
            per_nodule.means[f"{prefix}/share_largest_above_{BEYOND_BOX_LARGEST_HU:g}hu"] = _decided(
                largest > BEYOND_BOX_LARGEST_HU, np.isfinite(largest))
            per_nodule.medians[f"{prefix}/median_largest_change_hu"] = largest
            per_nodule.means[f"{prefix}/share_within_tolerance"] = _decided(change <= BEYOND_BOX_TOLERANCE_HU,
                                                                          np.isfinite(change))
            per_nodule.medians[f"{prefix}/median_change_hu"] = change
            per_nodule.means[f"{prefix}/mean_change_hu"] = change


# --- 4. transfer ---------------------------------------------------------------------------------


def _load_held_out(path: Union[str, Path]) -> Dict[str, Any]:
    from .checkpoint import load_checkpoint
    from .train_classifier import load_classifier

    checkpoint = load_checkpoint(path, "classifier")
    return {"network": load_classifier(checkpoint), "path": str(path),
            "architecture": checkpoint.get("architecture", "paper"), "hu_window": list(checkpoint["hu_window"]),
            "epoch": checkpoint.get("epoch"), "sha256": sha256_of(Path(path))}


def image_area_px(images_hu: np.ndarray) -> np.ndarray:
    """Per patch: the pixels above SOFT_TISSUE_HU in the connected component at the patch centre
    (0 where no centre pixel is soft tissue). Measured on the image, so it sees what G(x) did to
    the nodule's size; the readers' mask would not."""
    images = np.asarray(images_hu)
    size = images.shape[-1]
    centre = slice(size // 2 - 1, size // 2 + 1)
    areas = np.zeros(len(images), dtype=np.float64)
    for index, image in enumerate(images):
        components, _ = ndimage.label(image > SOFT_TISSUE_HU)
        at_centre = components[centre, centre]
        at_centre = at_centre[at_centre > 0]
        if len(at_centre):
            areas[index] = np.sum(components == np.bincount(at_centre).argmax())
    return areas


def _size_feature(images_hu: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(image_area_px(images_hu), 1.0))[:, None]


def _record_transfer(prefix: str, p_x: np.ndarray, p_pos: np.ndarray, p_neg: np.ndarray,
                     per_nodule: _PerNodule) -> None:
    events = flip_indicators(p_x, p_pos, p_neg)
    per_nodule.means[f"{prefix}/flipped_to_suspicious_by_g_pos"] = events["flipped_to_malignant"]
    per_nodule.means[f"{prefix}/flipped_to_not_suspicious_by_g_neg"] = events["flipped_to_benign"]
    # The mean probabilities beside the flips: the keep targets (p(G+) >= 0.85, p(G-) <= 0.15) on
    # whatever split the audit reads, so a choice on validation patients can hold them.
    for name, p in (("x", p_x), ("g_pos", p_pos), ("g_neg", p_neg)):
        per_nodule.means[f"{prefix}/mean_probability/{name}"] = p
    per_nodule.label_aucs[f"{prefix}/auc"] = p_x


def _measure_transfer(images: Dict[str, Dict[str, np.ndarray]], train: PreparedDataset, test: PreparedDataset,
                      window, held_out: Optional[Dict[str, Any]], device: str, batch_size: int,
                      per_nodule: _PerNodule) -> Dict[str, Any]:
    """The same G(x) on other models, each judged on its own decisions about x."""
    test_images = images["test"]
    hu = {name: denormalise_to_hu(test_images[name], window) for name in ("x", *GENERATORS)}
    _record_transfer("transfer/bundle_classifier", test_images["p_x"], test_images["p_pos"], test_images["p_neg"],
                     per_nodule)

    size_model = fit_logistic_baseline(_size_feature(denormalise_to_hu(images["train"]["x"], window)), train.labels,
                                       ("log area (pixels) of the soft-tissue component at the patch centre",))
    size_p = {name: size_model.malignancy(_size_feature(image)) for name, image in hu.items()}
    _record_transfer("transfer/size_only", size_p["x"], size_p["g_pos"], size_p["g_neg"], per_nodule)
    for name, image in hu.items():
        per_nodule.means[f"transfer/size_only/area_px/{name}"] = image_area_px(image)
    described: Dict[str, Any] = {"size_only": {**size_model.describe(), "target": SUSPICIOUS_LABEL}}

    if held_out is None:
        described["held_out_classifier"] = None
        return described
    own_window = held_out["hu_window"]
    # Through HU: the held-out classifier may normalise with another window than the bundle's.
    network = held_out["network"].to(device)  # load_classifier leaves it on the CPU
    probabilities = {name: malignancy_probabilities(network, normalise_hu(image, own_window), device,
                                                    batch_size).numpy().astype(np.float64)
                     for name, image in hu.items()}
    _record_transfer("transfer/held_out_classifier", probabilities["x"], probabilities["g_pos"],
                     probabilities["g_neg"], per_nodule)
    described["held_out_classifier"] = {key: held_out[key] for key in ("path", "architecture", "hu_window", "epoch",
                                                                        "sha256")}
    return described


# --- 5. similarity -------------------------------------------------------------------------------


def _measure_similarity(test_images: Dict[str, np.ndarray], test: PreparedDataset, seed: int,
                        per_nodule: _PerNodule) -> None:
    """SSIM (losses.structural_similarity's local maps; scikit-image's beside it, whose smaller
    window scores lower) averaged inside the valid box, and within NEAR_MM of the mask inside the
    box; the floor is x against an unrelated test patch."""
    x = test_images["x"]
    inside_box = test.valid.astype(bool)
    regions = {"inside_box": inside_box, "within_5mm": within_mm_of_masks(test.masks, NEAR_MM) & inside_box}
    others = {generator: test_images[generator] for generator in GENERATORS}
    if len(x) >= 2:
        others["unrelated_patch"] = x[unrelated_partners(len(x), seed)]
    for name, other in others.items():
        for prefix, local_maps in (("similarity", ssim_maps), ("similarity_skimage", skimage_ssim_maps)):
            maps, border = local_maps(x, other)
            for region_name, region in regions.items():
                per_nodule.means[f"{prefix}/{region_name}/{name}"] = mean_of_map(maps, border, region)


# --- 6. relevance share beside a Gaussian control ------------------------------------------------


def centred_gaussian_maps(count: int, sigma_px: float, size: int) -> np.ndarray:
    """``count`` copies of a Gaussian centred on the patch centre (the seed), sigma in pixels."""
    centre = (size - 1) / 2.0
    rows, columns = np.mgrid[:size, :size]
    gaussian = np.exp(-((rows - centre) ** 2 + (columns - centre) ** 2) / (2.0 * sigma_px**2))
    return np.broadcast_to(gaussian, (count, size, size))


def gaussian_sigma_px(train: PreparedDataset) -> float:
    """Half the train split's median nodule radius, in pixels: chosen on nothing from the test split."""
    return float(np.median(train.diameters_mm)) / 4.0 / PIXEL_MM


def matched_spread_sigma_px(relevance: np.ndarray) -> float:
    """The sigma (pixels) of a centred Gaussian as spread out as the median map: a 2D Gaussian's
    |R|-weighted mean squared distance from the centre is 2 sigma^2. Fitted on train-split maps."""
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64))
    size = magnitude.shape[-1]
    centre = (size - 1) / 2.0
    rows, columns = np.mgrid[:size, :size]
    squared = (rows - centre) ** 2 + (columns - centre) ** 2
    totals = magnitude.sum(axis=(1, 2))
    spread = (magnitude * squared).sum(axis=(1, 2))[totals > 0] / totals[totals > 0]
    if len(spread) == 0:
        raise ValueError("Every train-split relevance map is zero: no spread to match.")
    return float(np.sqrt(np.median(spread) / 2.0))


def _measure_relevance(images: Dict[str, Dict[str, np.ndarray]], train: PreparedDataset, test: PreparedDataset,
                       per_nodule: _PerNodule) -> Dict[str, Any]:
    """|R|'s share within NEAR_MM of the mask beside two centred Gaussians (one as wide as half the
    train nodules' median radius, one as spread out as the train split's |R| maps) and a uniform map."""
    near = within_mm_of_masks(test.masks, NEAR_MM)
    relevance = images["test"]["g_pos"] - images["test"]["g_neg"]
    sigmas = {"gaussian_half_radius": gaussian_sigma_px(train),
              "gaussian_matched_spread": matched_spread_sigma_px(images["train"]["g_pos"] - images["train"]["g_neg"])}
    per_nodule.means["relevance_within_5mm/relevance"] = share_of_magnitude(relevance, near)
    for name, sigma in sigmas.items():
        per_nodule.means[f"relevance_within_5mm/{name}"] = share_of_magnitude(
            centred_gaussian_maps(len(test), sigma, test.images_hu.shape[-1]), near)
        per_nodule.differences[f"relevance_within_5mm/relevance_minus_{name}"] = (
            "relevance_within_5mm/relevance", f"relevance_within_5mm/{name}")
    per_nodule.means["relevance_within_5mm/uniform_control"] = area_share(near)
    return {name: {"sigma_px": sigma, "sigma_mm": sigma * PIXEL_MM} for name, sigma in sigmas.items()}


# --- 7. ablations of G- --------------------------------------------------------------------------


def ablated_changes(x: np.ndarray, generated: np.ndarray, core: np.ndarray) -> Dict[str, np.ndarray]:
    """x plus one part of the change G(x) - x: its darkening part, its brightening part, or the
    change at the ``core`` pixels only (normalised images; each stays between x and G(x))."""
    change = np.asarray(generated) - np.asarray(x)
    return {"darkening_only": (x + np.minimum(change, 0.0)).astype(np.float32),
            "brightening_only": (x + np.maximum(change, 0.0)).astype(np.float32),
            "inserted_core_only": (x + np.where(core, change, 0.0)).astype(np.float32)}


def _measure_ablations(bundle: ModelBundle, test_images: Dict[str, np.ndarray], test: PreparedDataset, window,
                       batch_size: int, per_nodule: _PerNodule) -> None:
    x, g_neg = test_images["x"], test_images["g_neg"]
    called_suspicious = test_images["p_x"] >= DECISION_THRESHOLD
    x_hu, g_neg_hu = denormalise_to_hu(x, window), denormalise_to_hu(g_neg, window)
    core = (inserted_bright_pixels(x_hu, g_neg_hu, test.masks)
            & bright_core_inserted(x_hu, g_neg_hu, test.masks)[:, None, None])
    per_nodule.means["ablations_g_neg/full_change"] = _decided(test_images["p_neg"] < DECISION_THRESHOLD,
                                                               called_suspicious)
    for name, image in ablated_changes(x, g_neg, core).items():
        p = sigmoid(classifier_margins(bundle, image, batch_size))
        per_nodule.means[f"ablations_g_neg/{name}"] = _decided(p < DECISION_THRESHOLD, called_suspicious)


# --- targets, settings, output ------------------------------------------------------------------


def _generator_targets() -> List[Target]:
    targets = []
    for generator, name in GENERATORS.items():
        targets += [
            Target(f"realism/cnn_detector_auc/{generator}", "<=", 0.80,
                   f"CNN detector AUC, x vs {name}(x) (train patients -> test patients)"),
            Target(f"realism/texture_detector_auc/{generator}", "<=", 0.80,
                   f"texture-feature detector AUC, x vs {name}(x) (same bound, second detector)"),
            *(Target(f"beyond_box/{generator}/{fill}/share_within_tolerance", ">=", 0.90,
                     f"share of patches where {name} changes the pixels beyond the box by <= "
                     f"{BEYOND_BOX_TOLERANCE_HU:g} HU on average, {fill} fill") for fill in ("air", "lung")),
            Target(f"similarity/inside_box/{generator}", ">=", 0.85,
                   f"SSIM(x, {name}(x)) inside the valid box, the project's SSIM"),
            Target(f"similarity_skimage/inside_box/{generator}", ">=", 0.85,
                   f"SSIM(x, {name}(x)) inside the valid box, scikit-image's (the review's)"),
        ]
    return targets


TARGETS = tuple(_generator_targets()) + (
    Target("bright_core/g_neg/called_suspicious", "<=", 0.10,
           "G\u2212 inserts a bright core (>= 2 pixels >= 200 HU in the mask) in nodules called suspicious"),
    Target("transfer/held_out_classifier/flipped_to_suspicious_by_g_pos", ">=", 0.85,
           "held-out classifier: its not-suspicious decisions turned by G+"),
    Target("transfer/held_out_classifier/flipped_to_not_suspicious_by_g_neg", ">=", 0.80,
           "held-out classifier: its suspicious decisions turned by G\u2212"),
    Target("relevance_within_5mm/relevance", ">=", 0.70, "share of |R| within 5 mm of the mask"),
)


def check_targets(figures: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each target met or missed; n/a where its figure is undefined or was not measured (no
    held-out classifier given)."""
    checked = []
    for target in TARGETS:
        node: Any = figures
        for part in target.path.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get("value") if isinstance(node, dict) else None
        if value is None or not math.isfinite(value):
            checked.append({"name": target.name, "description": target.description,
                            "comparison": target.comparison, "target": target.threshold, "value": None,
                            "margin": None, "passed": None, "verdict": "n/a"})
            continue
        entry = target.check(value)
        entry["verdict"] = "met" if entry["passed"] else "missed"
        checked.append(entry)
    return checked


def _settings(seed: int, resamples: int, device: str, gaussian: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "seed": seed,
        "bootstrap_resamples": resamples,
        "confidence": CONFIDENCE,
        "ci_method": "percentile bootstrap over test patients (all nodules of a drawn patient), every figure on "
                     "the same resamples; detectors and the size model are fitted once, on the train split",
        "min_stratum": MIN_STRATUM,
        "decision_threshold": DECISION_THRESHOLD,
        "positive_class": SUSPICIOUS_LABEL,
        "device": device,
        "images": "test split centre views, air (-1000 HU) beyond the valid box: the patch as the command line "
                  "samples a sub-volume",
        "bright_core": f"x has no pixel >= {BRIGHT_HU:g} HU inside the nodule's mask and G(x) has at least "
                       f"{BRIGHT_MIN_PIXELS}; G\u2212 among nodules the bundle calls suspicious, G+ "
                       "among those it calls not suspicious",
        "beyond_box": f"per patch, mean |G(x) - x| (HU) over the pixels beyond the valid box, with air there (the "
                      f"CLI's patch; -1000 HU is the window's floor, so only brightening shows) and with the lung "
                      f"fill; share of patches with <= {BEYOND_BOX_TOLERANCE_HU:g} HU among those with such pixels; beside it "
                      f"the largest |G(x) - x| there and the share of patches where it exceeds "
                      f"{BEYOND_BOX_LARGEST_HU:g} HU (the review's statistic)",
        "size_only_model": f"logistic regression on log(area in pixels) of the connected component of pixels "
                           f"> {SOFT_TISSUE_HU:g} HU at the patch centre, measured on the image (x or G(x)); fitted "
                           "on the train split's centre views",
        "similarity": "losses.structural_similarity's local SSIM maps (the training's and evaluate's SSIM; "
                      "scikit-image's, 7 x 7 uniform window on [-1, 1] images, beside it) averaged over the valid box, "
                      "and over the "
                      f"pixels within {NEAR_MM:g} mm of the mask inside the box; floor: x against an unrelated test "
                      "patch (seeded pairing)",
        "gaussian_controls": {
            "gaussian_half_radius": {**gaussian["gaussian_half_radius"],
                                     "rule": "centred Gaussian, sigma = half the train split's median nodule radius"},
            "gaussian_matched_spread": {**gaussian["gaussian_matched_spread"],
                                        "rule": "centred Gaussian as spread out as the median train-split |R| map "
                                                "(|R|-weighted mean squared distance from the centre = 2 sigma^2)"}},
        "ablations": "G\u2212's change split into its darkening part x + min(G(x) - x, 0), its brightening part "
                     f"x + max(G(x) - x, 0) and the inserted core alone (the change at the mask's pixels that G(x) "
                     f"brings to >= {BRIGHT_HU:g} HU from below it, in the nodules where a core is inserted); "
                     "flip rate on the bundle's classifier among the nodules it calls suspicious",
    }


def _write(result: Dict[str, Any], out_dir: Path) -> Dict[str, Any]:
    from .audit_report import render_audit

    out_dir.mkdir(parents=True, exist_ok=True)
    result = json_safe(result)
    (out_dir / JSON_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(render_audit(result))
    logger.info("Wrote %s and %s to %s.", JSON_FILE, MARKDOWN_FILE, out_dir)
    return result

