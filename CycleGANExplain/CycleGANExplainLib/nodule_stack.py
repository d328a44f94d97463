"""Explanation through the nodule: every axial slice within a stated extent above and below the seed.

A radiologist scrolls: one 64x64 patch, one slice thick, is gone a slice away from the click. Here the
seed is shifted along the patient's superior axis (S) by a step, over ``half_extent_mm`` either side,
each shifted seed's patch is cut by the one sampler (``patch_sampling.extract_patch``) and all patches
of all nodules run through the networks in one pass (``explanation.explain``). The result of a nodule
(``NoduleStack``) is one volume: the relevance stacked [slices, rows, columns] with the 4x4 matrix that
places it in patient space (``stack_to_ras``: the patch's column and row axes, the slice axis a step
along S), so that one NRRD, one MRML volume node or one DICOM object shows it over the CT in the axial,
coronal and sagittal views alike.

- The step defaults to the volume's voxel spacing along S (``slice_step_mm``: the distance along S that
  moves the continuous voxel index by one along its fastest-changing axis), never below the patch's
  in-plane pixel spacing: finer steps would only interpolate between the same voxels.
- Half-extent 0 is the seed's slice alone; its explanation is exactly what ``explain`` gives the seed.
- Slices are planned before any inference (``plan_stack``, on the whole volume): a slice other than the
  seed's is dropped when its patch lies mostly (over ``MOSTLY_OUTSIDE_FRACTION``) outside the volume or
  its centre does; the dropped offsets are kept in the plan and reported as a warning, never silently.
  The kept slices are contiguous around the seed, so the stack is one regular volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from .attribution_methods import DEFAULT_METHOD
from .explanation import Explanation, ExplanationBatch, explain, outside_warning
from .inference import ProgressCallback
from .model_bundle import ModelBundle
from .patch_sampling import (PATCH_EXTENT_MM, PATCH_SIZE_PX, is_seed_inside, patch_outside_fraction,
                             require_seed_inside, validate_volume_geometry)

DEFAULT_HALF_EXTENT_MM = 10.0
# A nodule is at most 30 mm across (LIDC-IDRI's definition); 40 mm either side covers the largest with room.
MAX_HALF_EXTENT_MM = 40.0
# The panels' half-extent control moves by this (a common CT slice spacing); the module's .ui file says the
# same, which Testing/web/test_viewer_half_extent.py compares with the web viewer's control.
HALF_EXTENT_CONTROL_STEP_MM = 2.5
# A slice other than the seed's is dropped when more of its patch than this lies outside the volume.
MOSTLY_OUTSIDE_FRACTION = 0.5
_SUPERIOR = np.array([0.0, 0.0, 1.0])


class HalfExtentError(ValueError):
    """The half-extent is not a distance between 0 and MAX_HALF_EXTENT_MM (the message says so)."""


def check_half_extent(half_extent_mm: float) -> float:
    """``half_extent_mm`` as a float; HalfExtentError (one message for every front end) unless it is a
    finite distance from 0 to MAX_HALF_EXTENT_MM."""
    try:
        value = float(half_extent_mm)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= MAX_HALF_EXTENT_MM):
        raise HalfExtentError(
            f"The half-extent through the nodule must be a distance from 0 to {MAX_HALF_EXTENT_MM:g} mm (0: the "
            f"seed's slice only; a nodule is at most 30 mm across), got {half_extent_mm!r}.")
    return value


def slice_step_mm(ijk_to_ras: np.ndarray, size_px: int = PATCH_SIZE_PX, extent_mm: float = PATCH_EXTENT_MM) -> float:
    """The default step between the stack's slices: the volume's voxel spacing along S (the shift along S
    that moves the continuous index by one voxel along its fastest-changing axis; the slice spacing of an
    axial CT, whatever its orientation), at least the patch's pixel spacing (extent_mm / size_px)."""
    ras_to_ijk = np.linalg.inv(np.asarray(ijk_to_ras, dtype=float)[:3, :3])
    index_per_mm = float(np.max(np.abs(ras_to_ijk @ _SUPERIOR)))
    return max(1.0 / index_per_mm, extent_mm / size_px)


@dataclass(frozen=True)
class StackPlan:
    """Where one nodule's slices are cut, decided on the whole volume before any inference (a worker
    process that gets only the voxels the patches sample explains the same plan)."""

    seed_ras: np.ndarray
    """The clicked point, RAS mm: the centre of the centre slice's patch."""
    offsets_mm: np.ndarray
    """Each explained slice's shift along S from the seed, increasing; 0 for the seed's slice."""
    centre_index: int
    """Index of the seed's slice (offset 0) in ``offsets_mm``."""
    step_mm: float
    half_extent_mm: float
    dropped_offsets_mm: tuple = ()
    """Offsets within the half-extent not explained: their patch lies mostly outside the volume."""
    size_px: int = PATCH_SIZE_PX
    extent_mm: float = PATCH_EXTENT_MM

    @property
    def seeds_ras(self) -> np.ndarray:
        """[slices, 3]: the seed shifted along S by each offset (the patches' centres)."""
        return np.asarray(self.seed_ras, dtype=float)[None, :] + np.outer(self.offsets_mm, _SUPERIOR)

    def __len__(self) -> int:
        return len(self.offsets_mm)


def plan_stack(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, seed_ras: Sequence[float],
               half_extent_mm: float = DEFAULT_HALF_EXTENT_MM, step_mm: Optional[float] = None,
               size_px: int = PATCH_SIZE_PX, extent_mm: float = PATCH_EXTENT_MM) -> StackPlan:
    """The slices through the nodule at ``seed_ras``: offsets k * step for |k * step| <= half-extent,
    less those whose patch lies mostly outside the volume (and every slice beyond them).

    Raises HalfExtentError for a half-extent out of range, ValueError for a step that is not a positive
    distance, and the sampler's errors (not a 3D volume, the seed outside it).
    """
    volume_kji = np.asarray(volume_kji)
    validate_volume_geometry(volume_kji, ijk_to_ras)
    seed = require_seed_inside(volume_kji, ijk_to_ras, seed_ras)
    half_extent = check_half_extent(half_extent_mm)
    step = slice_step_mm(ijk_to_ras, size_px, extent_mm) if step_mm is None else float(step_mm)
    if not (math.isfinite(step) and step > 0.0):
        raise ValueError(f"The step between slices must be a positive distance in mm, got {step_mm!r}.")
    count = int(math.floor(half_extent / step + 1e-9))  # 1e-9: 10 mm at 2.5 mm is 4 steps, not 3.99...
    indices = np.arange(-count, count + 1)

    def usable(index: int) -> bool:
        shifted = seed + index * step * _SUPERIOR
        return is_seed_inside(volume_kji, ijk_to_ras, shifted) and patch_outside_fraction(
            volume_kji.shape, ijk_to_ras, shifted, size_px, extent_mm) <= MOSTLY_OUTSIDE_FRACTION

    # Outwards from the seed, stopping at the first unusable slice on each side: the stack stays contiguous.
    low = 0
    while low > -count and usable(low - 1):
        low -= 1
    high = 0
    while high < count and usable(high + 1):
        high += 1
    kept = (indices >= low) & (indices <= high)
    return StackPlan(seed_ras=seed, offsets_mm=indices[kept] * step, centre_index=int(-low), step_mm=step,
                     half_extent_mm=half_extent, dropped_offsets_mm=tuple(float(v) for v in indices[~kept] * step),
                     size_px=size_px, extent_mm=extent_mm)


def plan_stacks(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, seeds_ras: Sequence[Sequence[float]],
                half_extent_mm: float = DEFAULT_HALF_EXTENT_MM, step_mm: Optional[float] = None,
                size_px: int = PATCH_SIZE_PX, extent_mm: float = PATCH_EXTENT_MM) -> List[StackPlan]:
    """Every seed's stack (``plan_stack``), in the seeds' order: what the command line's seeds and the Slicer
    module's points are explained by. ValueError unless ``seeds_ras`` is a non-empty list of (R, A, S)."""
    seeds = np.atleast_2d(np.asarray(seeds_ras, dtype=float))
    if seeds.ndim != 2 or seeds.shape[1] != 3 or len(seeds) == 0:
        raise ValueError("Seeds must be a non-empty list of (R, A, S) points.")
    return [plan_stack(volume_kji, ijk_to_ras, seed, half_extent_mm, step_mm, size_px, extent_mm) for seed in seeds]


def stack_seeds(plans: Sequence[StackPlan]) -> np.ndarray:
    """[slices, 3]: every plan's patch centres, plan after plan: the seeds of the one batch that explains them
    all (``stacks_from_batch`` splits its explanations the same way)."""
    if not plans:
        raise ValueError("Seeds must be a non-empty list of (R, A, S) points.")
    return np.concatenate([plan.seeds_ras for plan in plans])


@dataclass
class NoduleStack:
    """One nodule explained slice by slice: what one overlay volume (NRRD, MRML node, DICOM object) and one
    row of a case table are made from."""

    plan: StackPlan
    explanations: List[Explanation]
    """One per slice, ordered by increasing S; ``explanations[centre_index]`` is the seed's own."""
    relevance: np.ndarray = field(init=False)
    """float32 [slices, rows, columns]: each slice's map, indexed as ``volume_kji`` arrays are."""
    stack_to_ras: np.ndarray = field(init=False)
    """4x4 from the stack's (column, row, slice) index to RAS mm: the first slice's patch_to_ras with the
    slice axis one step along S."""

    def __post_init__(self) -> None:
        if len(self.explanations) != len(self.plan):
            raise ValueError(f"A stack of {len(self.plan)} slices got {len(self.explanations)} explanations.")
        self.relevance = np.stack([np.asarray(item.relevance, dtype=np.float32) for item in self.explanations])
        matrix = np.array(self.explanations[0].patch_to_ras, dtype=float)  # patch_sampling.patch_to_ras_matrix
        matrix[:3, 2] = self.plan.step_mm * _SUPERIOR
        self.stack_to_ras = matrix

    @property
    def centre_index(self) -> int:
        return self.plan.centre_index

    @property
    def centre(self) -> Explanation:
        """The seed's slice: the explanation a single-slice request gives."""
        return self.explanations[self.plan.centre_index]

    @property
    def offsets_mm(self) -> np.ndarray:
        return self.plan.offsets_mm

    @property
    def p_x(self) -> np.ndarray:
        return np.array([item.p_x for item in self.explanations])

    @property
    def p_neg(self) -> np.ndarray:
        return np.array([item.p_neg for item in self.explanations])

    @property
    def p_pos(self) -> np.ndarray:
        return np.array([item.p_pos for item in self.explanations])

    def __len__(self) -> int:
        return len(self.explanations)

    def summary(self) -> Dict[str, Any]:
        """The stack as plain JSON values: its slices' positions and probabilities."""
        return {
            "half_extent_mm": self.plan.half_extent_mm,
            "step_mm": round(self.plan.step_mm, 6),
            "slices": len(self),
            "centre_slice": self.centre_index,
            "offsets_mm": [round(float(v), 6) for v in self.offsets_mm],
            "dropped_offsets_mm": [round(v, 6) for v in self.plan.dropped_offsets_mm],
            "malignancy_probability": {"x": self.p_x.tolist(), "G_neg(x)": self.p_neg.tolist(),
                                       "G_pos(x)": self.p_pos.tolist()},
        }


class StackedExplanations(NamedTuple):
    """Every nodule's stack, and the one batch that computed all their slices (device, time, warnings)."""

    batch: ExplanationBatch
    stacks: List[NoduleStack]


def stack_warnings(plans: Sequence[StackPlan], batch: ExplanationBatch) -> List[str]:
    """What a reader must know about each nodule's slices: the seed's patch partly outside the volume,
    slices within the half-extent not explained."""
    warnings = []
    first = 0
    for number, plan in enumerate(plans, start=1):
        centre = batch.explanations[first + plan.centre_index]
        first += len(plan)
        warning = outside_warning(number, centre.outside_fraction)
        if warning:
            warnings.append(warning)
        if plan.dropped_offsets_mm:
            shown = ", ".join(f"{offset:+.1f}" for offset in plan.dropped_offsets_mm)
            warnings.append(f"Seed {number}: the slices at {shown} mm along S were not explained (their patches lie "
                            f"mostly outside the volume); the stack covers {plan.offsets_mm[0]:+.1f} to "
                            f"{plan.offsets_mm[-1]:+.1f} mm.")
    return warnings


def stacks_from_batch(plans: Sequence[StackPlan], batch: ExplanationBatch) -> StackedExplanations:
    """The plans' stacks from the batch that explained their slices, in order, without per-slice warnings
    (``explain(..., warn_outside=False)``: the explanation process computes such a batch); each nodule's
    warnings (``stack_warnings``) are added to the batch's."""
    if sum(len(plan) for plan in plans) != len(batch):
        raise ValueError(f"{len(batch)} explanations for stacks of {sum(len(plan) for plan in plans)} slices.")
    batch.warnings.extend(stack_warnings(plans, batch))
    stacks, first = [], 0
    for plan in plans:
        stacks.append(NoduleStack(plan, batch.explanations[first:first + len(plan)]))
        first += len(plan)
    return StackedExplanations(batch, stacks)


def explain_stacks(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, plans: Sequence[StackPlan], bundle: ModelBundle,
                   batch_size: int = 32, progress: Optional[ProgressCallback] = None,
                   method: str = DEFAULT_METHOD) -> StackedExplanations:
    """Explain every slice of every plan in one pass through the networks (``explanation.explain``)."""
    batch = explain(volume_kji, ijk_to_ras, stack_seeds(plans), bundle, batch_size, progress, method, warn_outside=False)
    return stacks_from_batch(plans, batch)


def explain_through_nodules(volume_kji: np.ndarray, ijk_to_ras: np.ndarray, seeds_ras: Sequence[Sequence[float]],
                            bundle: ModelBundle, half_extent_mm: float = DEFAULT_HALF_EXTENT_MM,
                            step_mm: Optional[float] = None, batch_size: int = 32,
                            progress: Optional[ProgressCallback] = None,
                            method: str = DEFAULT_METHOD) -> StackedExplanations:
    """Plan each seed's stack (``plan_stack``) and explain them all in one pass (``explain_stacks``).

    Raises, before any inference, what ``plan_stack`` and ``explain`` raise for bad input.
    """
    metadata = bundle.metadata
    plans = plan_stacks(volume_kji, ijk_to_ras, seeds_ras, half_extent_mm, step_mm, metadata.patch_size_px,
                        metadata.patch_extent_mm)
    return explain_stacks(volume_kji, ijk_to_ras, plans, bundle, batch_size, progress, method)


class CombinedStacks(NamedTuple):
    """Several nodules' stacks as one relevance volume: one overlay that shows every nodule's map wherever a
    reader scrolls (a slice view draws one foreground volume)."""

    relevance: np.ndarray
    """float32 [slices, rows, columns]: each voxel the map of the stack that owns it; 0 where none reaches."""
    ijk_to_ras: np.ndarray
    """4x4: the reference stack's stack_to_ras, its origin moved to the grid's first voxel."""
    owner: np.ndarray
    """int16, the shape of ``relevance``: the index of the stack each voxel shows, -1 where none reaches."""


def combine_stacks(stacks: Sequence[NoduleStack], reference: int = -1) -> CombinedStacks:
    """The stacks on one grid: the reference stack's (its voxels land exactly on their patches), extended to
    cover all of them.

    Every stack shares that grid's axes and spacing (the patch's pixels, the step along S of the same volume),
    so a stack's voxels are placed whole, each on the grid voxel nearest to it: no value is interpolated, and
    a stack other than the reference lies at most half a voxel from its patches (0.35 mm across, half a slice
    along S; none along S when the points lie on the CT's slices, as clicked points do, because the step is the
    CT's slice spacing). Where stacks overlap the voxel shows the stack whose seed is nearest to it (ties: the
    earlier stack): a map explains the classifier's decision on its own nodule, so beside another nodule that
    nodule's map is the one that applies, and the seam lies halfway between them. Memory: the grid spans the
    box around all stacks (float32 and int16 per voxel), so nodules far apart make a large, mostly zero volume.

    Raises ValueError for no stacks, or stacks on different axes or spacings (different volumes or bundles).
    """
    if not stacks:
        raise ValueError("No stack to combine: explain at least one nodule.")
    base = np.asarray(stacks[reference].stack_to_ras, dtype=float)
    axes = base[:3, :3]
    for number, stack in enumerate(stacks, start=1):
        if not np.allclose(stack.stack_to_ras[:3, :3], axes, rtol=0.0, atol=1e-6 * float(np.abs(axes).max())):
            raise ValueError(f"Stack {number} lies on other axes or spacings than stack {reference % len(stacks) + 1} "
                             "(another volume or bundle): stacks combine only on one grid.")
    # Each stack's first voxel in the reference grid's (column, row, slice) index, to the nearest voxel.
    starts = np.array([np.rint(np.linalg.solve(axes, stack.stack_to_ras[:3, 3] - base[:3, 3])) for stack in stacks],
                      dtype=int)
    sizes = np.array([stack.relevance.shape[::-1] for stack in stacks], dtype=int)  # (columns, rows, slices)
    lower = starts.min(axis=0)
    shape_ijk = (starts + sizes).max(axis=0) - lower
    ijk_to_ras = base.copy()
    ijk_to_ras[:3, 3] = base[:3, 3] + axes @ lower
    relevance = np.zeros(shape_ijk[::-1], dtype=np.float32)
    owner = np.full(shape_ijk[::-1], -1, dtype=np.int16)
    seeds = np.array([stack.plan.seed_ras for stack in stacks], dtype=float)
    for index, (stack, start, size) in enumerate(zip(stacks, starts - lower, sizes)):
        region = tuple(slice(first, first + count) for first, count in zip(start[::-1], size[::-1]))
        # RAS of the region's voxels [slices, rows, columns, 3], from the grid's axes.
        steps = [(start[axis] + np.arange(size[axis]))[:, None] * axes[:, axis] for axis in range(3)]
        ras = ijk_to_ras[:3, 3] + steps[2][:, None, None] + steps[1][None, :, None] + steps[0][None, None, :]
        region_owner = owner[region]
        held = np.where(region_owner >= 0, np.linalg.norm(ras - seeds[np.maximum(region_owner, 0)], axis=-1), np.inf)
        nearer = np.linalg.norm(ras - seeds[index], axis=-1) < held
        relevance[region][nearer] = stack.relevance[nearer]
        region_owner[nearer] = index
    return CombinedStacks(relevance, ijk_to_ras, owner)
