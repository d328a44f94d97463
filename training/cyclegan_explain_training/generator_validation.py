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
from .explanation_checks import UNCHANGED_BEYOND_BOX_HU, inserted_bright_core, mean_change_beyond_box
from .losses import structural_similarity
from .metrics import flip_rates
from .nodule_regions import within_mm_of_masks
from .train_classifier import images_in_context

LOCAL_RELEVANCE_MM = 5.0
INFERENCE_BATCH_SIZE = 64


@dataclass
class ValidationSet:
    images_by_fill: Dict[str, torch.Tensor]  # fill -> [N, 1, H, W] normalised
    labels: np.ndarray
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
        near_nodule=within_mm_of_masks(centre.masks, LOCAL_RELEVANCE_MM),
        masks=centre.masks.astype(bool),
        valid=centre.valid.astype(bool),
        hu_window=list(hu_window),
    )


def validate_generators(generator_pos: nn.Module, generator_neg: nn.Module, classifier: nn.Module,
                        data: ValidationSet, batchnorm_images: torch.Tensor, batch_size: int,
                        device: str) -> Dict[str, float]:
    """The validation figures of copies of both generators, per fill and under the worst fill."""
    from .train_cyclegan import recompute_batchnorm_statistics

    copies = [recompute_batchnorm_statistics(copy.deepcopy(network).cpu(), batchnorm_images, batch_size).to(device)
              for network in (generator_pos, generator_neg)]
    was_training = classifier.training
    result: Dict[str, float] = {}
    scores = []
    for fill, images in data.images_by_fill.items():
        fake_pos, fake_neg = (in_batches(network, images, device, INFERENCE_BATCH_SIZE) for network in copies)
        p_x, p_pos, p_neg = (malignancy_probabilities(classifier, batch, device).numpy()
                             for batch in (images, fake_pos, fake_neg))
        flips = flip_rates(p_x, p_pos, p_neg)
        flip_pos, flip_neg = flips["flipped_to_malignant"], flips["flipped_to_benign"]
        ssim_pos = float(structural_similarity(images, fake_pos).mean())
        ssim_neg = float(structural_similarity(images, fake_neg).mean())
        relevance = (fake_pos - fake_neg).abs()[:, 0].numpy()
        local_share = float((relevance * data.near_nodule).sum() / max(relevance.sum(), 1e-12))
        x_hu, pos_hu, neg_hu = (denormalise_to_hu(batch[:, 0].numpy(), data.hu_window)
                                for batch in (images, fake_pos, fake_neg))
        called_malignant = p_x >= 0.5
        bright_core = (float(inserted_bright_core(x_hu, neg_hu, data.masks)[called_malignant].mean())
                       if called_malignant.any() else 0.0)
        beyond = np.fmax(mean_change_beyond_box(x_hu, pos_hu, data.valid), mean_change_beyond_box(x_hu, neg_hu, data.valid))
        unchanged_beyond = float(np.mean(~(beyond > UNCHANGED_BEYOND_BOX_HU)))  # NaN (no pixel beyond) counts as unchanged
        score = (np.nanmean([flip_pos, flip_neg]) + (ssim_pos + ssim_neg) / 2 + local_share
                 + (1.0 - bright_core) + unchanged_beyond)
        scores.append(score)
        result.update({f"{fill}/p_x": float(p_x.mean()), f"{fill}/p_pos": float(p_pos.mean()),
                       f"{fill}/p_neg": float(p_neg.mean()), f"{fill}/flip_benign_to_malignant": flip_pos,
                       f"{fill}/flip_malignant_to_benign": flip_neg, f"{fill}/ssim_pos": ssim_pos,
                       f"{fill}/ssim_neg": ssim_neg, f"{fill}/relevance_within_5mm": local_share,
                       f"{fill}/bright_core_inserted_by_neg": bright_core,
                       f"{fill}/unchanged_beyond_box": unchanged_beyond,
                       f"{fill}/score": float(score)})
    classifier.train(was_training)
    result["score"] = float(min(scores))
    return result
