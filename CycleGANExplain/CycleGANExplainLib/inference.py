"""Running a bundle's three networks on a stack of normalised patches (core: no method, no display)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .inference_threads import inference_threads
from .model_bundle import ModelBundle

ProgressCallback = Callable[[int, int], None]


def run_networks(
    bundle: ModelBundle, x: np.ndarray, batch_size: int = 32, progress: Optional[ProgressCallback] = None
) -> dict:
    """G+(x), G-(x) and the malignancy probabilities of x, G+(x), G-(x) for a stack [N, H, W].

    ``progress(done, total)`` is called after each batch.
    """
    import torch

    outputs = {name: [] for name in ("g_pos", "g_neg", "p_x", "p_pos", "p_neg")}
    malignant = bundle.metadata.malignant_index

    def probability(images: "torch.Tensor") -> "torch.Tensor":
        return torch.softmax(bundle.classifier(images), dim=1)[:, malignant]

    # optimized_execution(False): TorchScript's optimising executor profiles the first calls and
    # recompiles on the second, a third of a second of a cold command's time, for no gain on
    # these small networks (benchmarks/cold_start.py).
    with torch.inference_mode(), torch.jit.optimized_execution(False), \
            inference_threads(min(len(x), batch_size), bundle.device):
        for start in range(0, len(x), batch_size):
            images = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))[:, None]
            images = images.to(bundle.device)
            g_pos = bundle.generator_pos(images)
            g_neg = bundle.generator_neg(images)
            batch = {
                "g_pos": g_pos[:, 0],
                "g_neg": g_neg[:, 0],
                "p_x": probability(images),
                "p_pos": probability(g_pos),
                "p_neg": probability(g_neg),
            }
            for name, value in batch.items():
                outputs[name].append(value.float().cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(x)), len(x))
    return {name: np.concatenate(values) for name, values in outputs.items()}
