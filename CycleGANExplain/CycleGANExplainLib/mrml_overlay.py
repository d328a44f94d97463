"""The relevance overlay as MRML nodes (docs/architecture.md, contract 4).

MRML-level only: uses the ``slicer`` MRML classes and VTK, never Qt, ``slicer.app`` or GUI
functions, so it runs inside Slicer and on a bare slicer-core scene alike.

The overlay is one scalar volume node placed exactly on the explained patches (their
patch-to-RAS geometry) and drawn with a blue-white-red colour table node built from
``overlay.colour_table``. Both nodes are found again by a node attribute, so re-explaining
updates them instead of adding new ones, and closing the scene simply removes them.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .attribution_methods import DEFAULT_METHOD, method_info
from .explanation import Explanation
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


def stacked_patch_to_ras(explanations: Sequence["Explanation"]) -> np.ndarray:
    """IJK-to-RAS of the overlay volume: slice k lies on explanation k's patch.

    Explanations must be ordered by increasing S and share R and A (neighbouring axial slices),
    so the slice axis is a pure step along S. A single explanation keeps its patch-to-RAS as is.
    """
    matrix = np.array(explanations[0].patch_to_ras, dtype=float)
    if len(explanations) > 1:
        steps = np.diff([explanation.patch_to_ras[:3, 3] for explanation in explanations], axis=0)
        if not np.allclose(steps, steps[0], atol=1e-6) or not np.allclose(steps[0][:2], 0.0, atol=1e-6):
            raise ValueError("Stacked explanations must be equally spaced along S at one (R, A).")
        if steps[0][2] <= 0:
            raise ValueError("Stacked explanations must be ordered by increasing S.")
        matrix[:3, 2] = steps[0]
    return matrix


def update_overlay_node(scene, explanations: Sequence["Explanation"], source_volume=None,
                        method: str = DEFAULT_METHOD):
    """Write the relevance of ``explanations`` into the (single) overlay node and return it.

    The node is a vtkMRMLScalarVolumeNode of shape [len(explanations), rows, columns] whose
    geometry is ``stacked_patch_to_ras``; its display uses the relevance colour table with the
    symmetric window [-limit, +limit] (``overlay.display_limit`` over all slices). Its name
    and METHOD_ATTRIBUTE say which attribution method produced the map.
    """
    import slicer

    relevance = np.stack([np.asarray(explanation.relevance, dtype=np.float32) for explanation in explanations])
    limit = display_limit(relevance, method)
    node = find_role_node(scene, OVERLAY_ROLE)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", OVERLAY_NODE_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, OVERLAY_ROLE)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(stacked_patch_to_ras(explanations)))
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
