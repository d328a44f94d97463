"""One network over a stack of patches, batch by batch: the loop behind every probability, margin
and generated image that training's validation and evaluation compute.

The core's ``run_networks`` runs a bundle's three networks together on the same patches; the loops
here need one network at a time (the classifier on pasted or perturbed patches, one generator
during validation), on eager modules as well as on a bundle's TorchScript ones.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from .dataset import MALIGNANT

Images = Union[np.ndarray, torch.Tensor]


def in_batches(function: Callable[[torch.Tensor], torch.Tensor], images: Images, device: str,
               batch_size: int) -> torch.Tensor:
    """``function`` applied to consecutive batches of ``images`` without gradients; its outputs as
    float32 on the CPU, concatenated (an empty tensor for no images).

    Numpy images [N, H, W] gain the channel axis; tensors [N, 1, H, W] are passed as they are.
    """
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if isinstance(batch, np.ndarray):
                # a writable copy where needed: torch refuses read-only views (broadcast references)
                batch = torch.from_numpy(np.require(batch, np.float32, ["C", "W"]))[:, None]
            outputs.append(function(batch.to(device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def malignancy_probabilities(classifier: torch.nn.Module, images: Images, device: str, batch_size: int = 64,
                             malignant_index: int = MALIGNANT) -> torch.Tensor:
    """p(malignant) [N]: the softmax of the classifier's logits, which is left in eval mode."""
    classifier.eval()
    return in_batches(lambda batch: torch.softmax(classifier(batch).float(), dim=1)[:, malignant_index],
                      images, device, batch_size)
