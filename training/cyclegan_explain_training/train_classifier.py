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
from .networks import held_out_classifier
from .metrics import matched_pairs
from .run_log import MetricsLog, Progress
from .size_confound import matched_pair_selection_score, read_rating_targets, size_balanced_weights

CLASSIFIER_CHECKPOINT = "classifier.pt"
CLASSIFIER_METRICS = "classifier_metrics.jsonl"
# classifier.selection -> what the kept epoch is the best at (worst fill)
SELECTIONS = {"auc": "AUC", "matched_pairs": "mean of diameter-matched pair concordance and AUC"}


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


def sample_weights(fit: PreparedDataset, config: TrainingConfig) -> torch.Tensor:
    """Each fitting sample's loss weight: inverse class frequency, or with ``size_balanced_loss``
    1 / p(label | diameter bin) (size_confound.size_balanced_weights)."""
    settings = config.classifier
    if settings.size_balanced_loss:
        return torch.from_numpy(size_balanced_weights(fit.labels, fit.diameters_mm, settings.size_bins))
    return class_weights(fit.labels)[torch.from_numpy(fit.labels.astype(np.int64))]


class RatingHead(nn.Module):
    """The training-only head that regresses reader ratings from the classifier's features
    (size_confound.py); never exported, so the bundle's classifier is unchanged in form."""

    def __init__(self, classifier: nn.Module, targets: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(classifier, MalignancyClassifier):
            raise ValueError("classifier.auxiliary_ratings needs the paper's architecture (its features and head).")
        self.linear = nn.Linear(classifier.head[-1].in_features, targets.shape[1])
        self.targets = targets

    def loss(self, features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        predicted = self.linear(features.flatten(1))
        return F.mse_loss(predicted, self.targets[indices].to(predicted.device))


def rating_head(classifier: nn.Module, fit: PreparedDataset, config: TrainingConfig,
                ratings_from: Optional[Path]) -> Optional[RatingHead]:
    """The auxiliary rating head when the config asks for one; ValueError when it cannot be built."""
    settings = config.classifier
    if settings.auxiliary_weight <= 0:
        return None
    if not settings.auxiliary_ratings:
        raise ValueError("classifier.auxiliary_weight > 0 needs classifier.auxiliary_ratings (which ratings).")
    if ratings_from is None:
        raise ValueError("classifier.auxiliary_ratings needs --ratings-from: the folder of nodule sub-volumes "
                         "(laid out like lidc-voi) whose metadata CSV holds the readers' ratings.")
    targets = read_rating_targets(ratings_from, fit.nodule_ids.tolist(), settings.auxiliary_ratings)
    return RatingHead(classifier, torch.from_numpy(targets))


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
    ratings_from: Optional[Union[str, Path]] = None,
) -> Path:
    """Train on the dataset's training split; returns the path of the best model's checkpoint."""
    settings = config.classifier
    out_dir = Path(out_dir)
    device, device_warning = resolve_device(device)
    if device_warning:
        print(device_warning)
    started = time.perf_counter()
    torch.manual_seed(settings.seed)

    fit, held_out = fit_and_held_out(dataset, settings.validation_fraction, settings.validation_split_seed)
    validation_sets = {fill: images_in_context(held_out, config.hu_window, fill) for fill in EVALUATION_FILLS}
    weights = sample_weights(fit, config)

    classifier = build_classifier(settings.architecture, settings.width, fit.images_hu.shape[-1],
                                  settings.dropout).to(device)
    ratings = rating_head(classifier, fit, config, None if ratings_from is None else Path(ratings_from))
    parameters = list(classifier.parameters()) + ([] if ratings is None else list(ratings.to(device).parameters()))
    optimiser = torch.optim.Adam(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    transform = classifier_augmentation(settings.seed)
    order = torch.Generator().manual_seed(settings.seed)
    context_rng = np.random.default_rng(settings.seed)
    log = MetricsLog(out_dir / CLASSIFIER_METRICS)
    checkpoint_path = out_dir / CLASSIFIER_CHECKPOINT
    if settings.selection not in SELECTIONS:
        raise ValueError(f"classifier.selection must be one of {list(SELECTIONS)} (it is {settings.selection!r}).")
    if settings.selection == "matched_pairs" and not matched_pairs(held_out.labels, held_out.diameters_mm).any():
        raise ValueError("classifier.selection matched_pairs needs diameter-matched pairs among the validation "
                         f"patients, and their {len(held_out)} nodules have none: use selection auc, or more patients.")
    if settings.max_epochs < 1:
        raise ValueError(f"classifier.max_epochs must be at least 1 (it is {settings.max_epochs}).")
    if len(np.unique(held_out.labels)) < 2:
        raise ValueError(f"The {len(held_out)} validation nodules are all of one class, so their AUC is undefined: "
                         "use more patients, or another classifier.validation_fraction or seed.")
    best, best_score, best_epoch = None, -1.0, -1
    bar = Progress(settings.max_epochs, "classifier epochs", enabled=progress)
    for epoch in range(settings.max_epochs):
        epoch_started = time.perf_counter()
        permutation = torch.randperm(len(fit), generator=order)
        losses = _train_epoch(classifier, optimiser, weights, ratings, transform, fit, permutation, config,
                              context_rng, device)
        figures = _validation_figures(classifier, validation_sets, held_out, device)
        # the worst surround decides
        worst = {name: min(by_fill[name] for by_fill in figures.values()) for name in ("auc", "concordance", "score")}
        score = worst["auc"] if settings.selection == "auc" else worst["score"]
        log.write({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_auc": worst["auc"],
                   "validation_concordance": worst["concordance"], "validation_score": score,
                   **{f"validation_auc_{fill}": value["auc"] for fill, value in figures.items()},
                   "seconds": time.perf_counter() - epoch_started})
        bar.update(1, loss=float(np.mean(losses)), val_auc=worst["auc"], val_score=score)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best = _checkpoint(classifier, config, epoch, figures, score, fit, held_out, dataset, command)
            save_checkpoint(best, checkpoint_path)  # at once, so a crash keeps the best so far
        elif epoch - best_epoch >= settings.patience:
            break
    if best is None:  # a NaN AUC every epoch: the outputs were not finite
        raise RuntimeError(f"No epoch of {epoch + 1} gave a finite validation AUC (non-finite outputs: lower "
                           "classifier.learning_rate); nothing was saved.")
    best.update(epochs_run=epoch + 1, seconds=time.perf_counter() - started)
    save_checkpoint(best, checkpoint_path)
    bar.close()
    print(f"Classifier: best validation {SELECTIONS[settings.selection]} {best_score:.3f} at epoch {best_epoch}; "
          f"saved {checkpoint_path}")
    return checkpoint_path


def fit_and_held_out(dataset: PreparedDataset, validation_fraction: float,
                      seed: int) -> Tuple[PreparedDataset, PreparedDataset]:
    """Every view of the fitting patients, and the validation patients' centre views."""
    train = dataset.subset("train")
    validation = patient_validation_mask(train.patient_ids, train.labels, validation_fraction, seed)
    return train.select(~validation), train.select(validation & (train.views == CENTRE))


def _validation_figures(classifier: nn.Module, validation_sets: Dict[str, torch.Tensor], held_out: PreparedDataset,
                        device: str) -> Dict[str, Dict[str, float]]:
    """Under each fill, the classifier's AUC, diameter-matched pair concordance and their mean on
    the validation patients (size_confound.matched_pair_selection_score)."""
    return {fill: matched_pair_selection_score(held_out.labels, held_out.diameters_mm,
                                               malignancy_probabilities(classifier, images, device).numpy())
            for fill, images in validation_sets.items()}


def _train_epoch(classifier: nn.Module, optimiser: torch.optim.Optimizer, weights: torch.Tensor,
                 ratings: Optional[RatingHead], transform, fit: PreparedDataset, permutation: torch.Tensor,
                 config: TrainingConfig, context_rng: np.random.Generator, device: str) -> List[float]:
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
        if ratings is None:
            logits = classifier(inputs)
        else:
            features = classifier.features(inputs)
            logits = classifier.head(features)
        batch_weights = weights[batch].to(device)
        per_sample = F.cross_entropy(logits, fit_labels[batch].to(device), reduction="none")
        loss = (per_sample * batch_weights).sum() / batch_weights.sum()
        if ratings is not None:
            loss = loss + config.classifier.auxiliary_weight * ratings.loss(features, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def _checkpoint(classifier: nn.Module, config: TrainingConfig, epoch: int, figures: Dict[str, Dict[str, float]],
                score: float, fit: PreparedDataset, held_out: PreparedDataset, dataset: PreparedDataset,
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
        "validation_auc": min(value["auc"] for value in figures.values()),
        "validation_auc_by_fill": {fill: value["auc"] for fill, value in figures.items()},
        "validation_concordance_by_fill": {fill: value["concordance"] for fill, value in figures.items()},
        "validation_score": score,
        "validation_selection": f"worst {SELECTIONS[config.classifier.selection]} over the fills "
                                + ", ".join(EVALUATION_FILLS) + " on the validation patients' centre views",
        "loss_weighting": ("1 / p(label | diameter bin)" if config.classifier.size_balanced_loss
                           else "inverse class frequency"),
        "class_weights": None if config.classifier.size_balanced_loss else class_weights(fit.labels).tolist(),
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
