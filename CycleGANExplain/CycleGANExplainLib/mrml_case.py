"""Every point of a markups point list explained through its nodule in one request, every point's map in one
overlay, and the case's table as a table node.

MRML-level only (no Qt, ``slicer.app`` or GUI functions), like mrml_explain: the Slicer module's Logic
delegates here and the tests run it on a bare slicer-core scene. Each point's slices are planned as the
command line plans its seeds (``nodule_stack.plan_stacks``, the panel's half-extent); the request is an
``mrml_explain.ExplainRequest`` whose seeds are all those slices, point after point (``worker_job``: one batch
in the explanation process). The overlay is one volume holding every point's stack
(``nodule_stack.combine_stacks``): a slice view draws one foreground volume, and a reader scrolling through
the case must meet every nodule's map; where two stacks overlap the point nearer to the voxel wins, and one
colour range (from all stacks) makes the maps comparable. The shown point (probability labels, the per-slice
plot, "Save as DICOM") is the last one until a row of the table is chosen (``point_result``). The table node
holds ``case_summary``'s columns, one row per point from its seed's own slice, labelled with the control
points' labels, and is saved with the scene like any table.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Sequence, Union

import numpy as np

from . import case_summary, mrml_explain
from .attribution_methods import DEFAULT_METHOD
from .explain_worker import Job
from .explanation import ExplanationBatch, require_method
from .model_bundle import read_metadata, resolve_bundle
from .mrml_explain import ExplainRequest, VolumeExplanation, check_volume_once, volume_array_and_geometry
from .mrml_overlay import ROLE_ATTRIBUTE, find_role_node, update_overlay_node
from .nodule_stack import (DEFAULT_HALF_EXTENT_MM, NoduleStack, StackPlan, combine_stacks, plan_stacks, stack_seeds,
                           stacks_from_batch)
from .overlay import display_limit
from .patch_sampling import SeedOutsideVolumeError, is_seed_inside
from .seed_files import LabelledSeed

CASE_TABLE_ROLE = "CaseTable"
CASE_TABLE_NAME = "CycleGANExplain case"


class PointsRequest(NamedTuple):
    """An explanation of every placed point of a list through its nodule: the request (every point's slices,
    point after point), each point's label and each point's slices."""

    request: ExplainRequest
    labels: List[str]
    plans: List[StackPlan]


class CaseExplanation(NamedTuple):
    """Every point explained: the overlay of them all, the case's table node and each point's stack."""

    shown: VolumeExplanation
    """The shown point's result (the last point's when shown): the overlay node of every point, its stack."""
    table_node: object
    stacks: List[NoduleStack]
    """One per point, in the points' order (the table's rows)."""


def markups_seeds(seed_node) -> List[LabelledSeed]:
    """The placed control points of ``seed_node`` in world RAS, with their labels (unplaced ones skipped)."""
    seeds = []
    for index in range(seed_node.GetNumberOfControlPoints() if seed_node is not None else 0):
        if seed_node.GetNthControlPointPositionStatus(index) != seed_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        seed_node.GetNthControlPointPositionWorld(index, position)
        seeds.append(LabelledSeed(tuple(position), seed_node.GetNthControlPointLabel(index) or None,
                                  f"{seed_node.GetName()} point {index + 1}"))
    return seeds


def prepare_points_request(volume_node, seed_node, bundle_dir: Union[str, Path, None] = None, device: str = "auto",
                           half_extent_mm: float = DEFAULT_HALF_EXTENT_MM, method: str = DEFAULT_METHOD,
                           allow_unknown_bundle: bool = False) -> PointsRequest:
    """Read and check the volume and every placed point of ``seed_node``, and plan each point's slices within
    ``half_extent_mm`` (on the whole volume; the event loop's thread). Raises what ``plan_stack`` raises (a
    half-extent out of range) and SeedOutsideVolumeError naming the points outside."""
    require_method(method)
    seeds = markups_seeds(seed_node)
    if not seeds:
        raise ValueError("The point list has no placed point: place points on the nodules first.")
    voxels, ijk_to_ras = volume_array_and_geometry(volume_node)
    check_volume_once(volume_node, voxels, ijk_to_ras)
    outside = [f"{seed.label or number} ({seed.origin})" for number, seed in enumerate(seeds, start=1)
               if not is_seed_inside(voxels, ijk_to_ras, seed.ras)]
    if outside:
        raise SeedOutsideVolumeError(f"Point(s) {', '.join(outside)} lie outside the volume '{volume_node.GetName()}'; "
                                     "move or delete them.")
    metadata = read_metadata(resolve_bundle(bundle_dir))
    plans = plan_stacks(voxels, ijk_to_ras, [seed.ras for seed in seeds], half_extent_mm,
                        size_px=metadata.patch_size_px, extent_mm=metadata.patch_extent_mm)
    request = ExplainRequest(volume_node, voxels, ijk_to_ras, stack_seeds(plans), centre_batch_index(plans, -1),
                             bundle_dir, device, method, allow_unknown_bundle)
    return PointsRequest(request, [seed.label or f"point {number}" for number, seed in enumerate(seeds, start=1)],
                         plans)


def centre_batch_index(plans: Sequence[StackPlan], point: int) -> int:
    """Where point ``point``'s own slice (its stack's centre) lies in the batch of every point's slices."""
    point = range(len(plans))[point]
    return sum(len(plan) for plan in plans[:point]) + plans[point].centre_index


def worker_job(points: PointsRequest) -> Job:
    """The request as the explanation process takes it (``mrml_explain.worker_job``), without per-slice
    warnings: each point's stack warns once (``nodule_stack.stack_warnings``)."""
    return mrml_explain.worker_job(points.request)._replace(warn_outside=False)


def case_rows(labels: Sequence[str], stacks: Sequence[NoduleStack], method: str) -> List[case_summary.CaseRow]:
    """One row per point, from its seed's own slice (the stack's centre), as the command line's case table."""
    return [case_summary.case_row(number, label, stack.centre, method)
            for number, (label, stack) in enumerate(zip(labels, stacks), start=1)]


def update_case_table(scene, rows: Sequence[case_summary.CaseRow]):
    """The case's table node (one per scene, found again by its role), filled with ``rows``."""
    import slicer

    columns, cells = case_summary.table(rows)
    node = find_role_node(scene, CASE_TABLE_ROLE)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", CASE_TABLE_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, CASE_TABLE_ROLE)
    with slicer.util.NodeModify(node):
        node.RemoveAllColumns()
        for column in columns:
            node.AddColumn().SetName(column.key)
            node.SetColumnTitle(column.key, column.title)
        node.SetUseColumnTitleAsColumnHeader(True)  # the panel shows the titles; a saved .tsv keeps the keys
        for row in cells:
            index = node.AddEmptyRow()
            for column, text in enumerate(row):
                node.SetCellText(index, column, text)
    return node


def show(scene, points: PointsRequest, batch: ExplanationBatch) -> CaseExplanation:
    """Every point's stack in the scene's overlay node (one volume, the last point's stack exactly on its
    patches), the case's table node, and the last point as the shown one; each point's warnings join the
    batch's (the event loop's thread)."""
    request = points.request
    stacks = stacks_from_batch(points.plans, batch).stacks
    combined = combine_stacks(stacks, reference=-1)
    # One range for every point, from the stacks' own voxels (the grid's empty ones would narrow it).
    limit = display_limit(np.concatenate([stack.relevance.ravel() for stack in stacks]), request.method)
    overlay_node = update_overlay_node(scene, combined.relevance, combined.ijk_to_ras, source_volume=request.volume_node,
                                       method=request.method, limit=limit)
    table_node = update_case_table(scene, case_rows(points.labels, stacks, batch.method))
    shown = VolumeExplanation(batch, overlay_node, request.central_index, stacks[-1])
    return CaseExplanation(shown, table_node, stacks)


def point_result(case: CaseExplanation, point: int) -> VolumeExplanation:
    """Point ``point`` of an explained case as the shown result (its own slice's probabilities, its stack for the
    plot and "Save as DICOM"), over the same overlay of every point. IndexError for a point the case lacks."""
    stacks = case.stacks
    if not 0 <= point < len(stacks):
        raise IndexError(f"The case has {len(stacks)} point(s); there is no point {point + 1}.")
    index = centre_batch_index([stack.plan for stack in stacks], point)
    return case.shown._replace(central_index=index, stack=stacks[point])


def add_seed_list(scene, seeds: Sequence[LabelledSeed], name: str):
    """A new point list holding ``seeds`` (a seeds file's), labelled as the file labels them."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    for number, seed in enumerate(seeds, start=1):
        index = node.AddControlPointWorld(*map(float, seed.ras))
        node.SetNthControlPointLabel(index, seed.label or f"{name}-{number}")
    return node
