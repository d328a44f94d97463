"""The relevance overlay as MRML nodes (docs/architecture.md, contract 4).

MRML-level only: uses the ``slicer`` MRML classes and VTK, never Qt, ``slicer.app`` or GUI
functions, so it runs inside Slicer and on a bare slicer-core scene alike.

The overlay is one scalar volume node placed exactly on the explained patches (a nodule's stack of
slices, nodule_stack) and drawn with a blue-white-red colour table node built from
``overlay.colour_table``. Both nodes are found again by a node attribute, so re-explaining
updates them instead of adding new ones, and closing the scene simply removes them.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .attribution_methods import DEFAULT_METHOD, method_info
from .overlay import COLOUR_TABLE_NAME, colour_table, display_limit

ROLE_ATTRIBUTE = "CycleGANExplain.Role"
OVERLAY_ROLE = "RelevanceOverlay"
COLOUR_ROLE = "RelevanceColours"
# The Slicer module's own seed point list (the only markups node whose points it edits).
SEED_ROLE = "Seed"
SOURCE_VOLUME_ATTRIBUTE = "CycleGANExplain.SourceVolumeID"
LIMIT_ATTRIBUTE = "CycleGANExplain.SymmetricLimit"
METHOD_ATTRIBUTE = "CycleGANExplain.Method"
OVERLAY_NODE_NAME = "CycleGANExplain relevance"


def find_role_node(scene, role: str):
    """The node carrying ``role`` in the scene, or None."""
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node
    return None


def relevance_colour_node(scene):
    """The blue-white-red colour table node, created once per scene.

    Made in code because Slicer's file-based colour tables are absent on a bare MRML scene.
    Entry i shows R = -limit + 2 * limit * i / (n - 1); the display node's window maps
    [-limit, +limit] onto the table, and the table's alpha (0 or 1, what slice views can draw)
    makes near-zero R transparent.
    """
    import slicer

    table = colour_table()
    node = find_role_node(scene, COLOUR_ROLE)
    if node is None:
        node = slicer.vtkMRMLColorTableNode()
        node.SetName(COLOUR_TABLE_NAME)
        node.SetTypeToUser()
        node.SetAttribute(ROLE_ATTRIBUTE, COLOUR_ROLE)
        node.SetHideFromEditors(True)
        scene.AddNode(node)
    # Written again when found: a scene saved by an earlier version holds that version's table.
    with slicer.util.NodeModify(node):
        node.SetNumberOfColors(len(table))
        for index, (red, green, blue, alpha) in enumerate(table):
            node.SetColor(index, f"R{index - (len(table) - 1) / 2:+.1f}", red, green, blue, alpha)
    return node


def update_overlay_node(scene, relevance_kji: np.ndarray, ijk_to_ras: np.ndarray, source_volume=None,
                        method: str = DEFAULT_METHOD, limit: Optional[float] = None):
    """Write a relevance volume into the (single) overlay node and return it.

    ``relevance_kji`` [slices, rows, columns] and its 4x4 IJK-to-RAS place it in patient space: a nodule's
    slices (``nodule_stack.NoduleStack``'s relevance and stack_to_ras) or one patch ([1, rows, columns]
    with its patch_to_ras), so the overlay follows scrolling in every slice view over the slices it covers.
    Its display uses the relevance colour table with the symmetric window [-limit, +limit]
    (``overlay.display_limit`` over all slices, unless ``limit`` is given: several nodules' stacks on one
    grid take theirs from the stacks, not from the grid's empty voxels). Its name and METHOD_ATTRIBUTE say
    which attribution method produced the map.
    """
    import slicer

    relevance = np.asarray(relevance_kji, dtype=np.float32)
    if relevance.ndim != 3:
        raise ValueError(f"The overlay is a volume [slices, rows, columns], got an array of shape {relevance.shape}.")
    limit = display_limit(relevance, method) if limit is None else float(limit)
    node = find_role_node(scene, OVERLAY_ROLE)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", OVERLAY_NODE_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, OVERLAY_ROLE)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=float)))
    slicer.util.updateVolumeFromArray(node, relevance)
    node.SetName(f"{OVERLAY_NODE_NAME}: {method_info(method).label}")
    node.SetAttribute(METHOD_ATTRIBUTE, method)
    node.SetAttribute(LIMIT_ATTRIBUTE, repr(limit))
    node.SetAttribute(SOURCE_VOLUME_ATTRIBUTE, source_volume.GetID() if source_volume is not None else "")
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(relevance_colour_node(scene).GetID())
        display.AutoWindowLevelOff()
        display.ApplyThresholdOff()
        display.SetWindowLevelMinMax(-limit, limit)
    return node


def overlay_limit(overlay_node) -> float:
    """The symmetric display limit stored on the overlay node by update_overlay_node."""
    return float(overlay_node.GetAttribute(LIMIT_ATTRIBUTE))


def overlay_method(overlay_node) -> str:
    """The key of the attribution method whose map the overlay node holds."""
    return overlay_node.GetAttribute(METHOD_ATTRIBUTE) or DEFAULT_METHOD


def slice_composite_nodes(scene) -> List:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]


def show_in_slice_views(scene, overlay_node, background_volume=None, opacity: float = 0.6, visible: bool = True) -> None:
    """Make the overlay the foreground of every slice view (hidden means opacity 0).

    The explained CT becomes the background so that the overlay sits on the image it explains.
    """
    import slicer

    for composite in slice_composite_nodes(scene):
        with slicer.util.NodeModify(composite):
            if background_volume is not None:
                composite.SetBackgroundVolumeID(background_volume.GetID())
            composite.SetForegroundVolumeID(overlay_node.GetID() if overlay_node is not None else None)
            composite.SetForegroundOpacity(float(opacity) if visible else 0.0)


def overlay_explains(overlay_node, volume) -> bool:
    """Whether the overlay node holds an explanation of ``volume`` (SOURCE_VOLUME_ATTRIBUTE)."""
    return volume is not None and overlay_node.GetAttribute(SOURCE_VOLUME_ATTRIBUTE) == volume.GetID()


def set_overlay_opacity(scene, overlay_node, opacity: float = 0.6, visible: bool = True) -> None:
    """Change the overlay's opacity in the slice views that show it; no view's layers change, so a
    volume the user put in a view stays there."""
    for composite in slice_composite_nodes(scene):
        if composite.GetForegroundVolumeID() == overlay_node.GetID():
            composite.SetForegroundOpacity(float(opacity) if visible else 0.0)


def remove_from_slice_views(scene, overlay_node) -> None:
    """Take the overlay out of the slice views that show it (their background stays)."""
    for composite in slice_composite_nodes(scene):
        if composite.GetForegroundVolumeID() == overlay_node.GetID():
            composite.SetForegroundVolumeID(None)


def jump_slice_views(scene, ras: Sequence[float]) -> None:
    """Centre every slice view on ``ras`` (the seed)."""
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *map(float, ras), slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def remove_overlay_nodes(scene) -> None:
    """Remove the overlay volume (and its display node) and the colour table from the scene."""
    for role in (OVERLAY_ROLE, COLOUR_ROLE):
        node = find_role_node(scene, role)
        if node is None:
            continue
        for index in reversed(range(getattr(node, "GetNumberOfDisplayNodes", lambda: 0)())):
            scene.RemoveNode(node.GetNthDisplayNode(index))
        scene.RemoveNode(node)
