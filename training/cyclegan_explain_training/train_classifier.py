"""Train the malignancy classifier (paper Sec. 3.2): weighted cross entropy, early stopping.

The training split's patients are divided (seeded, stratified by each patient's majority label)
into a fitting part and a validation part; the test split is never touched here. Every view of
a fitting nodule is trained on, each step with a new surround where the patch holds no image
(``context_fill.random_context``). Validation scores the centre views of the validation patients
under every evaluation fill and keeps the model whose worst-fill AUC is best, so the choice
favours a classifier that ignores the surround. Patches are normalised with the HU window that
the bundle's metadata will carry, so training and inference see the same numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from monai.utils import convert_to_tensor

from CycleGANExplainLib.intensity import normalise_hu
from CycleGANExplainLib.model_bundle import resolve_device
from CycleGANExplainLib.networks import MalignancyClassifier

from .augment import classifier_augmentation
from .batched_inference import malignancy_probabilities
from .checkpoint import save_checkpoint
from .config import TrainingConfig
from .context_fill import EVALUATION_FILLS, fill_outside, random_context
from .dataset import CENTRE, PreparedDataset
from .metrics import roc_auc
from .networks import held_out_classifier
from .run_log import MetricsLog, Progress

CLASSIFIER_CHECKPOINT = "classifier.pt"
CLASSIFIER_METRICS = "classifier_metrics.jsonl"


def images_in_context(dataset: PreparedDataset, hu_window: Sequence[float], fill: str, seed: int = 0) -> torch.Tensor:
    """The dataset's patches with one fixed surround (``context_fill.fill_outside``), normalised."""
    filled = fill_outside(dataset.images_hu, dataset.valid, fill, seed)
    return torch.from_numpy(normalise_hu(filled, hu_window))[:, None]


def images_in_random_context(dataset: PreparedDataset, indices: np.ndarray, hu_window: Sequence[float],
                             rng: np.random.Generator) -> torch.Tensor:
    """The patches at ``indices``, each with a freshly drawn surround, normalised [B, 1, H, W]."""
    filled = random_context(dataset.images_hu[indices], dataset.valid[indices], dataset.masks[indices], rng)
    return torch.from_numpy(normalise_hu(filled, hu_window))[:, None]


def patient_validation_mask(patient_ids: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for samples of the patients held out for validation.

    Patients are grouped by their majority label and ``fraction`` of each group (at least one)
    is drawn, so validation has both classes whenever training does and AUC is defined.
    """
    rng = np.random.default_rng(seed)
    patients = np.unique(patient_ids)
    patient_label = np.array([round(labels[patient_ids == patient].mean()) for patient in patients])
    held_out: List[str] = []
    for label in np.unique(patient_label):
        group = patients[patient_label == label]
        count = min(len(group) - 1, max(1, int(round(fraction * len(group)))))
        held_out.extend(rng.permutation(group)[:count])
    return np.isin(patient_ids, held_out)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse class frequency, normalised so that a balanced set gets weights of 1."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"The training data must contain both classes; class counts are {counts.tolist()}.")
    return torch.tensor(counts.sum() / (2.0 * counts), dtype=torch.float32)


def _augmented(images: torch.Tensor, transform) -> torch.Tensor:
    return torch.stack([convert_to_tensor(transform(image), track_meta=False) for image in images])


def train_classifier(
    dataset: PreparedDataset,
    config: TrainingConfig,
    out_dir: Union[str, Path],
    device: str = "auto",
    progress: bool = True,
    command: Optional[str] = None,
) -> Path:
    """Train on the dataset's training split; returns the path of the best model's checkpoint."""
    settings = config.classifier
    out_dir = Path(out_dir)
    device, device_warning = resolve_device(device)
    if device_warning:
        print(device_warning)
    started = time.perf_counter()
    torch.manual_seed(settings.seed)

    fit, held_out = _fit_and_held_out(dataset, settings.validation_fraction, settings.validation_split_seed)
    validation_sets = {fill: images_in_context(held_out, config.hu_window, fill) for fill in EVALUATION_FILLS}
    weights = class_weights(fit.labels).to(device)

    classifier = build_classifier(settings.architecture, settings.width, fit.images_hu.shape[-1],
                                  settings.dropout).to(device)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    transform = classifier_augmentation(settings.seed)
    order = torch.Generator().manual_seed(settings.seed)
    context_rng = np.random.default_rng(settings.seed)
    log = MetricsLog(out_dir / CLASSIFIER_METRICS)
    checkpoint_path = out_dir / CLASSIFIER_CHECKPOINT
    if settings.max_epochs < 1:
        raise ValueError(f"classifier.max_epochs must be at least 1 (it is {settings.max_epochs}).")
    if len(np.unique(held_out.labels)) < 2:
        raise ValueError(f"The {len(held_out)} validation nodules are all of one class, so their AUC is undefined: "
                         "use more patients, or another classifier.validation_fraction or seed.")
    best, best_auc, best_epoch = None, -1.0, -1
    bar = Progress(settings.max_epochs, "classifier epochs", enabled=progress)
    for epoch in range(settings.max_epochs):
        epoch_started = time.perf_counter()
        permutation = torch.randperm(len(fit), generator=order)
        losses = _train_epoch(classifier, optimiser, weights, transform, fit, permutation, config, context_rng, device)
        aucs = _validation_aucs(classifier, validation_sets, held_out.labels, device)
        auc = min(aucs.values())  # the worst surround decides
        log.write({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_auc": auc,
                   **{f"validation_auc_{fill}": value for fill, value in aucs.items()},
                   "seconds": time.perf_counter() - epoch_started})
        bar.update(1, loss=float(np.mean(losses)), val_auc=auc)
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best = _checkpoint(classifier, config, epoch, aucs, weights, fit, held_out, dataset, command)
            save_checkpoint(best, checkpoint_path)  # at once, so a crash keeps the best so far
        elif epoch - best_epoch >= settings.patience:
            break
    if best is None:  # a NaN AUC every epoch: the outputs were not finite
        raise RuntimeError(f"No epoch of {epoch + 1} gave a finite validation AUC (non-finite outputs: lower "
                           "classifier.learning_rate); nothing was saved.")
    best.update(epochs_run=epoch + 1, seconds=time.perf_counter() - started)
    save_checkpoint(best, checkpoint_path)
    bar.close()
    print(f"Classifier: best validation AUC {best_auc:.3f} at epoch {best_epoch}; saved {checkpoint_path}")
    return checkpoint_path


def _fit_and_held_out(dataset: PreparedDataset, validation_fraction: float,
                      seed: int) -> Tuple[PreparedDataset, PreparedDataset]:
    """Every view of the fitting patients, and the validation patients' centre views."""
    train = dataset.subset("train")
    validation = patient_validation_mask(train.patient_ids, train.labels, validation_fraction, seed)
    return train.select(~validation), train.select(validation & (train.views == CENTRE))


def _validation_aucs(classifier: MalignancyClassifier, validation_sets: Dict[str, torch.Tensor], labels: np.ndarray,
                     device: str) -> Dict[str, float]:
    """The classifier's AUC on the validation patients under each fill."""
    return {fill: roc_auc(labels, malignancy_probabilities(classifier, images, device).numpy())
            for fill, images in validation_sets.items()}


def _train_epoch(classifier: MalignancyClassifier, optimiser: torch.optim.Optimizer, weights: torch.Tensor,
                 transform, fit: PreparedDataset, permutation: torch.Tensor, config: TrainingConfig,
                 context_rng: np.random.Generator, device: str) -> List[float]:
    """One pass over the fitting patches in the permutation's order; returns each batch's loss."""
    batch_size = config.classifier.batch_size
    fit_labels = torch.from_numpy(fit.labels.astype(np.int64))
    classifier.train()
    losses = []
    for start in range(0, len(permutation), batch_size):
        batch = permutation[start : start + batch_size]
        if len(batch) < 2:  # BatchNorm cannot train on a single sample
            continue
        images = images_in_random_context(fit, batch.numpy(), config.hu_window, context_rng)
        inputs = _augmented(images, transform).to(device)
        loss = F.cross_entropy(classifier(inputs), fit_labels[batch].to(device), weight=weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def _checkpoint(classifier: MalignancyClassifier, config: TrainingConfig, epoch: int, aucs: Dict[str, float],
                weights: torch.Tensor, fit: PreparedDataset, held_out: PreparedDataset, dataset: PreparedDataset,
                command: Optional[str]) -> Dict[str, Any]:
    """The checkpoint of the classifier as it is after ``epoch`` (its validation AUC: the worst fill's)."""
    return {
        "kind": "classifier",
        # a copy: state_dict() shares storage with the weights that training goes on changing
        "state_dict": {name: value.detach().cpu().clone() for name, value in classifier.state_dict().items()},
        "width": config.classifier.width,
        "architecture": config.classifier.architecture,
        "hu_window": list(config.hu_window),
        "config": config.to_dict(),
        "epoch": epoch,
        "validation_auc": min(aucs.values()),
        "validation_auc_by_fill": aucs,
        "validation_selection": "worst AUC over the fills " + ", ".join(EVALUATION_FILLS)
                                + " on the validation patients' centre views",
        "class_weights": weights.cpu().tolist(),
        "counts": {"fit_samples": int(len(fit)), "fit_nodules": int(len(np.unique(fit.nodule_ids))),
                   "validation": int(len(held_out)),
                   "validation_patients": int(len(np.unique(held_out.patient_ids)))},
        "validation_patients": sorted(np.unique(held_out.patient_ids).tolist()),
        "patches_sha256": dataset.manifest.get("patches_sha256"),
        "seed": config.classifier.seed,
        "command": command,
    }


def validation_split_seed(classifier_settings: Dict[str, Any]) -> int:
    """The seed that drew a classifier checkpoint's validation patients (its config section as saved;
    checkpoints from before ``validation_seed`` existed used ``seed``)."""
    seed = classifier_settings.get("validation_seed")
    return int(classifier_settings["seed"] if seed is None else seed)


def build_classifier(architecture: str, width: int, patch_size: int = 64, dropout: float = 0.0) -> nn.Module:
    """A fresh classifier: the paper's (the bundled one) or a held-out architecture."""
    if architecture == "paper":
        return MalignancyClassifier(width, patch_size, dropout)
    return held_out_classifier(architecture, width)


def load_classifier(checkpoint: dict) -> nn.Module:
    """The classifier of a checkpoint written by train_classifier, in eval mode on CPU."""
    if checkpoint.get("kind") != "classifier":
        raise ValueError("Not a classifier checkpoint (made by train-classifier).")
    classifier = build_classifier(checkpoint.get("architecture", "paper"), checkpoint["width"])
    classifier.load_state_dict(checkpoint["state_dict"])
    return classifier.eval()


def randomised_classifier_checkpoint(checkpoint: dict, seed: int, command: Optional[str] = None) -> dict:
    """The checkpoint with its weights replaced by a fresh initialisation (for sanity checks).

    Everything else (width, HU window, dataset hash) is kept, so that a CycleGAN-AM trained
    against it runs through the same commands as one trained against the real classifier: the
    model-parameter randomisation test of Adebayo et al. (2018) applied to the generators.
    """
    load_classifier(checkpoint)  # refuses what is not a classifier checkpoint
    torch.manual_seed(seed)
    randomised = MalignancyClassifier(checkpoint["width"]).eval()
    state_dict = {name: value.detach().cpu().clone() for name, value in randomised.state_dict().items()}
    return {**checkpoint, "state_dict": state_dict, "randomised_from_seed": seed, "validation_auc": None,
            "command": command}
