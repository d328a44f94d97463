"""Every point of a markups point list explained in one request, and the case's table as a table node.

MRML-level only (no Qt, ``slicer.app`` or GUI functions), like mrml_explain: the Slicer module's Logic
delegates here and the tests run it on a bare slicer-core scene. The request is an
``mrml_explain.ExplainRequest`` whose seeds are the points (so the panel sends it to the explanation
process as one batch, ``mrml_explain.worker_job``); its ``central_index`` is the point whose overlay is
shown, the last (most recently placed) one. The table node holds ``case_summary``'s columns, one row per
point, labelled with the control points' labels, and is saved with the scene like any table.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Sequence, Union

import numpy as np

from . import case_summary
from .attribution_methods import DEFAULT_METHOD
from .explanation import ExplanationBatch, require_method
from .mrml_explain import ExplainRequest, VolumeExplanation, check_volume_once, volume_array_and_geometry
from .mrml_overlay import ROLE_ATTRIBUTE, find_role_node, update_overlay_node
from .patch_sampling import SeedOutsideVolumeError, is_seed_inside
from .seed_files import LabelledSeed

CASE_TABLE_ROLE = "CaseTable"
CASE_TABLE_NAME = "CycleGANExplain case"


class PointsRequest(NamedTuple):
    """An explanation of every placed point of a list: the request and each point's label."""

    request: ExplainRequest
    labels: List[str]


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
                           method: str = DEFAULT_METHOD, allow_unknown_bundle: bool = False) -> PointsRequest:
    """Read and check the volume and every placed point of ``seed_node`` (the event loop's thread)."""
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
    request = ExplainRequest(volume_node, voxels, ijk_to_ras, np.array([seed.ras for seed in seeds], dtype=float),
                             len(seeds) - 1, bundle_dir, device, method, allow_unknown_bundle)
    return PointsRequest(request, [seed.label or f"point {number}" for number, seed in enumerate(seeds, start=1)])


def case_rows(points: PointsRequest, batch: ExplanationBatch) -> List[case_summary.CaseRow]:
    return [case_summary.case_row(number, label, explanation, batch.method)
            for number, (label, explanation) in enumerate(zip(points.labels, batch.explanations), start=1)]


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


def show(scene, points: PointsRequest, batch: ExplanationBatch) -> "tuple[VolumeExplanation, object]":
    """The shown point's overlay (the request's central_index) and the case's table node."""
    request = points.request
    shown = batch[request.central_index]
    overlay_node = update_overlay_node(scene, shown.relevance[None], shown.patch_to_ras, source_volume=request.volume_node,
                                       method=request.method)
    return VolumeExplanation(batch, overlay_node, request.central_index), update_case_table(scene, case_rows(points,
                                                                                                              batch))


def add_seed_list(scene, seeds: Sequence[LabelledSeed], name: str):
    """A new point list holding ``seeds`` (a seeds file's), labelled as the file labels them."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    for number, seed in enumerate(seeds, start=1):
        index = node.AddControlPointWorld(*map(float, seed.ras))
        node.SetNthControlPointLabel(index, seed.label or f"{name}-{number}")
    return node
