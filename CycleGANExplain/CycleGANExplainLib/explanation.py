"""One call from (volume, geometry, seeds) to explanations: CycleGAN-AM or a baseline attribution method.

CycleGAN-AM's R = G+(x) - G-(x) is in normalised intensity units (docs/architecture.md, contract 4): positive
(red) where the image would have to change to look more malignant, negative (blue) towards benign.
A baseline (``attribution_methods``) attributes the malignancy log-odds with the same sign
convention; unsigned baselines (saliency, Grad-CAM) are >= 0 and show only red, as magnitude.
The generators always run, so the probabilities of x, G+(x) and G-(x) come with every method.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .attribution_methods import DEFAULT_METHOD, AttributionMethod, MissingDependencyError, method_info, missing_packages
from .inference import ProgressCallback, run_networks
from .intensity import normalise_hu
from .model_bundle import ModelBundle, load_bundle
from .patch_sampling import Patch, extract_patch

logger = logging.getLogger(__name__)

# A seed whose patch is mostly outside the volume explains little; callers are warned.
OUTSIDE_WARNING_FRACTION = 0.25


@dataclass
class PatchExplanation:
    """A patch x, its counterfactuals G+(x) and G-(x), the method's map and the classifier's
    probabilities: what a figure shows. Images are [rows, columns] float32, normalised to [-1, 1]."""

    x: np.ndarray
    g_pos: np.ndarray
    g_neg: np.ndarray
    relevance: np.ndarray
    p_x: float
    p_pos: float
    p_neg: float


@dataclass
class Explanation(PatchExplanation):
    """The explanation of one seed: its patch's explanation, and where the patch lies."""

    seed_ras: np.ndarray
    patch_hu: np.ndarray
    patch_to_ras: np.ndarray
    outside_fraction: float


@dataclass
class ExplanationBatch:
    """Explanations of several seeds computed in one pass, with how they were computed."""

    explanations: List[Explanation]
    device: str
    seconds: float
    bundle_name: str
    trained: bool
    warnings: List[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD
    """Key of the attribution method that produced ``relevance`` (attribution_methods.METHODS)."""

    @property
    def method_label(self) -> str:
        return method_info(self.method).label

    @property
    def signed(self) -> bool:
        """False for maps that are >= 0 by construction: red shows magnitude, and there is no blue."""
        return method_info(self.method).signed

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, index: int) -> Explanation:
        return self.explanations[index]


def _is_cuda_failure(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("CUDA" in message or "cuDNN" in message or "CUBLAS" in message)


def require_method(method: str) -> AttributionMethod:
    """The method's description, once its packages are importable.

    Raises ValueError (listing the known keys) for an unknown method and MissingDependencyError
    (naming the pip command) when the method's packages are missing.
    """
    info = method_info(method)
    missing = missing_packages(method)
    if missing:
        raise MissingDependencyError(missing)
    return info


def _run_method(
    bundle: ModelBundle, x: np.ndarray, method: str, batch_size: int, progress: Optional[ProgressCallback]
) -> dict:
    """run_networks' outputs plus "relevance", the method's maps (the probabilities come with every method)."""
    outputs = run_networks(bundle, x, batch_size, progress)
    outputs["relevance"] = np.asarray(method_info(method).maps(bundle, x, outputs, batch_size), dtype=np.float32)
    return outputs


def explain(
    volume_kji: np.ndarray,
    ijk_to_ras: np.ndarray,
    seeds_ras: Sequence[Sequence[float]],
    bundle: ModelBundle,
    batch_size: int = 32,
    progress: Optional[ProgressCallback] = None,
    method: str = DEFAULT_METHOD,
    warn_outside: bool = True,
) -> ExplanationBatch:
    """Cut a patch around each seed and explain the classifier's decision on it with ``method``.

    All seeds run through the networks together (in batches of ``batch_size``). A CUDA failure,
    out of memory included, falls back to CPU once and says so in ``warnings``; so does a patch
    mostly outside the volume, unless ``warn_outside`` is False (``nodule_stack`` warns per nodule,
    not per slice).

    Raises, before any inference: ValueError for an unknown method, MissingDependencyError when
    the method's packages are missing, and the sampler's errors (seed outside the volume, not a
    3D volume).
    """
    started = time.perf_counter()
    require_method(method)
    seeds = np.atleast_2d(np.asarray(seeds_ras, dtype=float))
    if seeds.shape[1] != 3 or len(seeds) == 0:
        raise ValueError("Seeds must be a non-empty list of (R, A, S) points.")
    metadata = bundle.metadata
    patches = [
        extract_patch(volume_kji, ijk_to_ras, seed, metadata.patch_size_px, metadata.patch_extent_mm)
        for seed in seeds
    ]
    x = np.stack([normalise_hu(patch.pixels, metadata.hu_window) for patch in patches])
    warnings = list(bundle.warnings)
    if warn_outside:
        warnings += [text for number, patch in enumerate(patches, start=1)
                     if (text := outside_warning(number, patch.outside_fraction))]
    outputs, bundle = _run_with_cpu_fallback(bundle, x, method, batch_size, progress, warnings)
    if not metadata.trained:
        warnings.append("The model bundle is UNTRAINED (random weights): the explanation is meaningless.")
    return ExplanationBatch(
        explanations=[_seed_explanation(seed, patch, x, outputs, index)
                      for index, (seed, patch) in enumerate(zip(seeds, patches))],
        device=bundle.device,
        seconds=time.perf_counter() - started,
        bundle_name=f"{metadata.name} {metadata.version}",
        trained=metadata.trained,
        warnings=warnings,
        method=method,
    )


def outside_warning(number: int, outside_fraction: float) -> str:
    """The warning for seed ``number`` whose patch lies partly outside the volume; empty below
    OUTSIDE_WARNING_FRACTION."""
    if outside_fraction <= OUTSIDE_WARNING_FRACTION:
        return ""
    return (f"Seed {number}: {outside_fraction:.0%} of the patch lies outside the volume "
            "(filled with air); the explanation may be unreliable.")


def _run_with_cpu_fallback(bundle: ModelBundle, x: np.ndarray, method: str, batch_size: int,
                           progress: Optional[ProgressCallback], warnings: List[str]) -> "tuple[dict, ModelBundle]":
    """The method's outputs, and the bundle that made them: on a CUDA failure, the bundle reloaded on
    the CPU (the failure is added to ``warnings``)."""
    try:
        return _run_method(bundle, x, method, batch_size, progress), bundle
    except Exception as error:  # noqa: BLE001 - only CUDA failures are handled, others re-raised
        if not _is_cuda_failure(error):
            raise
        message = f"GPU inference failed ({type(error).__name__}: {str(error).splitlines()[0]}); fell back to CPU."
        logger.warning(message)
        warnings.append(message)
        bundle = load_bundle(bundle.directory, "cpu", allow_unknown=not bundle.shipped)  # the user allowed it once
        return _run_method(bundle, x, method, batch_size, progress), bundle


def _seed_explanation(seed: np.ndarray, patch: Patch, x: np.ndarray, outputs: dict, index: int) -> Explanation:
    return Explanation(
        x=x[index],
        g_pos=outputs["g_pos"][index],
        g_neg=outputs["g_neg"][index],
        relevance=outputs["relevance"][index],
        p_x=float(outputs["p_x"][index]),
        p_pos=float(outputs["p_pos"][index]),
        p_neg=float(outputs["p_neg"][index]),
        seed_ras=seed,
        patch_hu=patch.pixels,
        patch_to_ras=patch.patch_to_ras,
        outside_fraction=patch.outside_fraction,
    )
