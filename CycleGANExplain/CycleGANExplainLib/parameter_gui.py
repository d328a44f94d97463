"""Binding the module's widgets to its parameter node in a way that can be undone on every Slicer release.

parameterNodeWrapper's ``connectGui`` returns no tag before Slicer 5.10 ("Fix not returning GUI tag
after connection"), so ``disconnectGui`` cannot undo it: the old binding's connectors stay on the
widgets, and when a new binding refills a combo box they write the box's transient value (its first
or last item) into the parameter node. ``connectParametersToGui`` has returned its tag since the
wrapper exists; ``connect_gui`` builds the mapping ``connectGui`` builds and calls it. Qt-free: the
widgets are only asked for their ``SlicerParameterName`` property.
"""

from __future__ import annotations

from typing import Any, Dict

SLICER_PARAMETER_NAME_PROPERTY = "SlicerParameterName"


def widgets_by_parameter(ui: Any) -> Dict[str, Any]:
    """Parameter name -> widget, for the widgets of ``ui`` (``slicer.util.childWidgetVariables``'s
    namespace) that carry the ``SlicerParameterName`` property, as ``connectGui`` finds them."""
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property(SLICER_PARAMETER_NAME_PROPERTY)
        if name:
            mapping[str(name)] = widget
    return mapping


def connect_gui(parameter_node: Any, ui: Any) -> int:
    """Bind ``ui``'s widgets to the wrapped ``parameter_node``; returns the tag for ``disconnectGui``."""
    return parameter_node.connectParametersToGui(widgets_by_parameter(ui))
