"""Clicks in a slice view, turned into RAS positions by the view's own XY-to-RAS matrix.

A click is a left-button press and release at (nearly) the same place; a drag is left to
Slicer's own interactions (window/level). The RAS comes from the view's slice node, exactly as
Slicer computes where a point placed in that view lands.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np

ClickCallback = Callable[[np.ndarray, str], None]
"""Called with the clicked RAS position (mm) and the view's plane as a radiologist names it
(``view_plane_name``: axial, coronal, sagittal)."""

# Larger moves between press and release are drags (window/level), not clicks.
CLICK_TOLERANCE_PX = 3
# Seen before Slicer's interactor style (priority 0), which may consume the events.
OBSERVER_PRIORITY = 10.0


def view_plane_name(slice_node) -> str:
    """The plane a slice view shows, in a radiologist's words ("axial", "coronal", "sagittal",
    else "oblique"), never Slicer's view colours: "Red view" would read as the overlay's red."""
    orientation = str(slice_node.GetOrientation()).lower()
    return orientation if orientation in ("axial", "coronal", "sagittal") else "oblique"


def slice_xy_to_ras(slice_node, xy: Sequence[float]) -> np.ndarray:
    """RAS (mm) of the slice view pixel ``xy`` (VTK display coordinates, origin bottom left)."""
    ras = slice_node.GetXYToRAS().MultiplyPoint((float(xy[0]), float(xy[1]), 0.0, 1.0))
    return np.array(ras[:3])


class SliceClickObserver:
    """Reports clicks in one trame-slicer SliceView to ``on_click``."""

    def __init__(self, slice_view, on_click: ClickCallback) -> None:
        from vtkmodules.vtkCommonCore import vtkCommand

        self._view = slice_view
        self._on_click = on_click
        self._pressed_at: Optional[Tuple[int, int]] = None
        interactor = slice_view.interactor()
        interactor.AddObserver(vtkCommand.LeftButtonPressEvent, self._on_press, OBSERVER_PRIORITY)
        interactor.AddObserver(vtkCommand.LeftButtonReleaseEvent, self._on_release, OBSERVER_PRIORITY)

    def _on_press(self, interactor, _event) -> None:
        self._pressed_at = tuple(interactor.GetEventPosition())

    def _on_release(self, interactor, _event) -> None:
        pressed_at, self._pressed_at = self._pressed_at, None
        released_at = tuple(interactor.GetEventPosition())
        if pressed_at is None or max(abs(a - b) for a, b in zip(pressed_at, released_at)) > CLICK_TOLERANCE_PX:
            return
        slice_node = self._view.get_view_node()
        self._on_click(slice_xy_to_ras(slice_node, released_at), view_plane_name(slice_node))
