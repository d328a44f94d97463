"""Validation of G+ and G- during training: the figures that choose which generators are exported.

The validation patients are the classifier's (drawn from the training split with the
classifier's seed), so nothing here ever sees the test split. Each check copies the generators,
recomputes the copies' BatchNorm statistics on real training patches as export does, and scores
them on the validation patients' centre views under every evaluation fill. The score (higher is
better) is taken under the worst fill:

    score = mean flip rate (benign->malignant by G+, malignant->benign by G-)
            + mean SSIM(x, G(x)) over both generators
            + share of |R| within 5 mm of the nodule mask
            + share of nodules called malignant to which G- adds no bright core
            + share of patches whose pixels beyond the real image G+ and G- both leave unchanged

each term in [0, 1], so a generator that flips decisions by repainting the whole patch, or one
that copies its input, scores lower than one that changes the nodule enough to flip it; the last
two terms (explanation_checks' realism definitions) count against counterfactuals that flip the
classifier with what no real CT shows: a calcification that is not there, change in empty space.

Given judge classifiers (select-generators --judge-classifier: trained on the same patients, never
maximised by the runs), the score adds their mean flip rate, each judge on its own decisions:
transfer to networks the generators never saw, the term that does not saturate when the own
classifier's flips reach 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn

from CycleGANExplainLib.intensity import denormalise_to_hu

from .batched_inference import in_batches, malignancy_probabilities
from .context_fill import EVALUATION_FILLS
from .dataset import CENTRE, PreparedDataset
from .explanation_checks import BEYOND_BOX_TOLERANCE_HU, bright_core_inserted, change_beyond_box_hu
from .losses import structural_similarity
from .metrics import flip_indicators, nan_mean
from .nodule_regions import within_mm_of_masks
from .train_classifier import images_in_context

LOCAL_RELEVANCE_MM = 5.0
INFERENCE_BATCH_SIZE = 64


@dataclass
class ValidationSet:
    images_by_fill: Dict[str, torch.Tensor]  # fill -> [N, 1, H, W] normalised
    labels: np.ndarray
    patient_ids: np.ndarray
    near_nodule: np.ndarray  # bool [N, H, W], within LOCAL_RELEVANCE_MM of the mask
    masks: np.ndarray  # bool [N, H, W], the nodule
    valid: np.ndarray  # bool [N, H, W], where the patch holds real image
    hu_window: Sequence[float] = (-1000.0, 400.0)


def validation_set(validation: PreparedDataset, hu_window: Sequence[float]) -> ValidationSet:
    """The centre views of the validation patients, once per evaluation fill."""
    centre = validation.select(validation.views == CENTRE)
    return ValidationSet(
        images_by_fill={fill: images_in_context(centre, hu_window, fill) for fill in EVALUATION_FILLS},
        labels=centre.labels,
        patient_ids=centre.patient_ids,
        near_nodule=within_mm_of_masks(centre.masks, LOCAL_RELEVANCE_MM),
        masks=centre.masks.astype(bool),
        valid=centre.valid.astype(bool),
        hu_window=list(hu_window),
    )


def validate_generators(generator_pos: nn.Module, generator_neg: nn.Module, classifier: nn.Module,
                        data: ValidationSet, batchnorm_images: torch.Tensor, batch_size: int,
                        device: str) -> Dict[str, float]:
    """The validation figures of copies of both generators, per fill and under the worst fill."""
    per_nodule = per_nodule_figures(generator_pos, generator_neg, classifier, data, batchnorm_images, batch_size,
                                    device)
    return figures_of(per_nodule, np.arange(len(data.labels)))


def per_nodule_figures(generator_pos: nn.Module, generator_neg: nn.Module, classifier: nn.Module,
                       data: ValidationSet, batchnorm_images: torch.Tensor, batch_size: int,
                       device: str, judges: Sequence[nn.Module] = ()) -> Dict[str, Dict[str, np.ndarray]]:
    """Per fill, each validation nodule's share of every figure (figures_of aggregates any subset,
    so that a patient bootstrap can resample nodules). Copies of the generators are scored, with
    BatchNorm statistics recomputed on real training patches as export does. ``judges``: classifiers
    the generators never maximised; their flips (mean over judges) become transfer figures."""
    from .train_cyclegan import recompute_batchnorm_statistics

    copies = [recompute_batchnorm_statistics(copy.deepcopy(network).cpu(), batchnorm_images, batch_size).to(device)
              for network in (generator_pos, generator_neg)]
    was_training = classifier.training
    result: Dict[str, Dict[str, np.ndarray]] = {}
    for fill, images in data.images_by_fill.items():
        fake_pos, fake_neg = (in_batches(network, images, device, INFERENCE_BATCH_SIZE) for network in copies)
        p_x, p_pos, p_neg = (malignancy_probabilities(classifier, batch, device).numpy()
                             for batch in (images, fake_pos, fake_neg))
        flips = flip_indicators(p_x, p_pos, p_neg)
        relevance = (fake_pos - fake_neg).abs()[:, 0].numpy().astype(np.float64)
        x_hu, pos_hu, neg_hu = (denormalise_to_hu(batch[:, 0].numpy(), data.hu_window)
                                for batch in (images, fake_pos, fake_neg))
        beyond = np.fmax(change_beyond_box_hu(x_hu, pos_hu, data.valid)[0], change_beyond_box_hu(x_hu, neg_hu, data.valid)[0])
        result[fill] = {
            "p_x": p_x, "p_pos": p_pos, "p_neg": p_neg,
            "flip_benign_to_malignant": flips["flipped_to_malignant"],
            "flip_malignant_to_benign": flips["flipped_to_benign"],
            "ssim_pos": structural_similarity(images, fake_pos).numpy().astype(np.float64),
            "ssim_neg": structural_similarity(images, fake_neg).numpy().astype(np.float64),
            "relevance_near": (relevance * data.near_nodule).reshape(len(relevance), -1).sum(axis=1),
            "relevance_total": relevance.reshape(len(relevance), -1).sum(axis=1),
            # NaN for nodules not called malignant: the rate is over those G- must move to benign
            "bright_core_inserted_by_neg": np.where(p_x >= 0.5, bright_core_inserted(x_hu, neg_hu, data.masks), np.nan),
            # a patch with no pixel beyond the real image (NaN change) counts as unchanged there
            "unchanged_beyond_box": (~(beyond > BEYOND_BOX_TOLERANCE_HU)).astype(np.float64),
        }
        if judges:
            result[fill].update(_judge_flips(judges, images, fake_pos, fake_neg, device))
    classifier.train(was_training)
    return result


def _judge_flips(judges: Sequence[nn.Module], images: torch.Tensor, fake_pos: torch.Tensor, fake_neg: torch.Tensor,
                 device: str) -> Dict[str, np.ndarray]:
    """Per nodule, the share of judges whose decision G+ (G-) flipped, among the judges that called
    it benign (malignant); NaN where none did."""
    flips = [flip_indicators(*(malignancy_probabilities(judge, batch, device).numpy()
                               for batch in (images, fake_pos, fake_neg))) for judge in judges]
    return {f"judge_{name}": nan_mean(np.stack([flip[key] for flip in flips]), axis=0)
            for name, key in (("flip_benign_to_malignant", "flipped_to_malignant"),
                              ("flip_malignant_to_benign", "flipped_to_benign"))}


def figures_of(per_nodule: Dict[str, Dict[str, np.ndarray]], indices: np.ndarray) -> Dict[str, float]:
    """The validation figures of the nodules at ``indices`` (repeats allowed), per fill, and the
    score under the worst fill (see the module's docstring)."""
    result: Dict[str, float] = {}
    scores = []
    for fill, values in per_nodule.items():
        chosen = {name: array[indices] for name, array in values.items()}
        flip_pos, flip_neg = nan_mean(chosen["flip_benign_to_malignant"]), nan_mean(chosen["flip_malignant_to_benign"])
        ssim_pos, ssim_neg = float(chosen["ssim_pos"].mean()), float(chosen["ssim_neg"].mean())
        local_share = float(chosen["relevance_near"].sum() / max(chosen["relevance_total"].sum(), 1e-12))
        bright_core = nan_mean(chosen["bright_core_inserted_by_neg"])
        bright_core = 0.0 if np.isnan(bright_core) else bright_core  # no nodule called malignant
        unchanged_beyond = float(chosen["unchanged_beyond_box"].mean())
        score = (np.nanmean([flip_pos, flip_neg]) + (ssim_pos + ssim_neg) / 2 + local_share
                 + (1.0 - bright_core) + unchanged_beyond)
        if "judge_flip_benign_to_malignant" in chosen:
            judge_pos = nan_mean(chosen["judge_flip_benign_to_malignant"])
            judge_neg = nan_mean(chosen["judge_flip_malignant_to_benign"])
            score += np.nanmean([judge_pos, judge_neg])
            result.update({f"{fill}/judge_flip_benign_to_malignant": judge_pos,
                           f"{fill}/judge_flip_malignant_to_benign": judge_neg})
        scores.append(score)
        result.update({f"{fill}/p_x": float(chosen["p_x"].mean()), f"{fill}/p_pos": float(chosen["p_pos"].mean()),
                       f"{fill}/p_neg": float(chosen["p_neg"].mean()), f"{fill}/flip_benign_to_malignant": flip_pos,
                       f"{fill}/flip_malignant_to_benign": flip_neg, f"{fill}/ssim_pos": ssim_pos,
                       f"{fill}/ssim_neg": ssim_neg, f"{fill}/relevance_within_5mm": local_share,
                       f"{fill}/bright_core_inserted_by_neg": bright_core,
                       f"{fill}/unchanged_beyond_box": unchanged_beyond,
                       f"{fill}/score": float(score)})
    result["score"] = float(min(scores))
    return result
