"""Each slice's probabilities through the nodule as Slicer plot nodes, for the module panel's small plot.

MRML-level only (no Qt, ``slicer.app`` or GUI functions), so it runs on a bare slicer-core scene: a table
node holds the slices' positions along S and p(x), p(G-(x)), p(G+(x)) (``nodule_stack.NoduleStack``),
three plot series nodes draw them in the colours of ``overlay.PROBABILITY_LINES`` (the CLI figure's),
one chart node holds the series and one plot view node shows the chart (the panel's qMRMLPlotWidget).
Each node is found again by its role, so re-explaining updates them, and the table is saved with the
scene like any table.
"""

from __future__ import annotations

from .mrml_overlay import ROLE_ATTRIBUTE, find_role_node
from .nodule_stack import NoduleStack
from .overlay import PROBABILITY_LINES

TABLE_ROLE = "SliceProbabilities"
CHART_ROLE = "SliceProbabilityChart"
VIEW_ROLE = "SliceProbabilityView"
SERIES_ROLE = "SliceProbabilitySeries:{}"  # the NoduleStack attribute each series draws
OFFSET_COLUMN = "offset_mm"
PLOT_NAME = "CycleGANExplain p(malignant) through the nodule"


def _role_node(scene, role: str, class_name: str, name: str):
    node = find_role_node(scene, role)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.SetHideFromEditors(role != TABLE_ROLE)  # the table is the data a user may want; the rest is display
    return node


def update_probability_plot(scene, stack: NoduleStack):
    """Write ``stack``'s per-slice probabilities into the plot's table and return the chart node."""
    import slicer
    import vtk

    table_node = _role_node(scene, TABLE_ROLE, "vtkMRMLTableNode", PLOT_NAME)
    with slicer.util.NodeModify(table_node):
        table = table_node.GetTable()
        table.Initialize()  # drops the earlier nodule's columns and rows
        for name, values in [(OFFSET_COLUMN, stack.offsets_mm)] + [(attribute, getattr(stack, attribute))
                                                                    for attribute, _, _ in PROBABILITY_LINES]:
            column = vtk.vtkDoubleArray()
            column.SetName(name)
            for value in values:
                column.InsertNextValue(float(value))
            table.AddColumn(column)
        table_node.Modified()
    chart = _role_node(scene, CHART_ROLE, "vtkMRMLPlotChartNode", PLOT_NAME)
    with slicer.util.NodeModify(chart):
        chart.SetTitle("p(malignant) through the nodule")
        chart.SetXAxisTitle("slice position along S (mm)")
        chart.SetYAxisTitle("p(malignant)")
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(0.0, 1.0)
        chart.SetLegendVisibility(True)
        for attribute, label, colour in PROBABILITY_LINES:
            series = _role_node(scene, SERIES_ROLE.format(attribute), "vtkMRMLPlotSeriesNode", label)
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName(OFFSET_COLUMN)
            series.SetYColumnName(attribute)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetColor(*colour)
            if not chart.HasPlotSeriesNodeID(series.GetID()):
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def probability_plot_view(scene, chart):
    """The plot view node that shows ``chart`` in the panel's plot widget (one per scene)."""
    view = _role_node(scene, VIEW_ROLE, "vtkMRMLPlotViewNode", PLOT_NAME)
    view.SetPlotChartNodeID(chart.GetID())
    return view


def remove_probability_plot(scene) -> None:
    """Remove the plot's nodes (a result cleared, the module's nodes reset)."""
    roles = [VIEW_ROLE, CHART_ROLE, TABLE_ROLE] + [SERIES_ROLE.format(attribute) for attribute, _, _ in PROBABILITY_LINES]
    for role in roles:
        node = find_role_node(scene, role)
        if node is not None:
            scene.RemoveNode(node)
