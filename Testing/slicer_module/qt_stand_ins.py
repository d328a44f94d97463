"""STAND-INS for the few Qt objects the widget's view code touches (Slicer's Qt is PythonQt, which
cannot exist here): a timer the test fires, and labels, combo boxes, a button and a place widget
that record what the widget set. Each holds only what the widget uses."""

from __future__ import annotations

from types import SimpleNamespace


class ManualTimer:
    """A QTimer (the debounce and poll timers): records start/stop; the test fires it."""

    def __init__(self) -> None:
        self.active = False
        self.starts = 0

    def start(self) -> None:
        self.active = True
        self.starts += 1

    def stop(self) -> None:
        self.active = False


class Label:
    def __init__(self) -> None:
        self.text = ""


class ComboBox:
    """Records item texts and per-role item data, as QComboBox.setItemText/setItemData set them."""

    def __init__(self) -> None:
        self.item_text, self.item_data = {}, {}

    def setItemText(self, index: int, text: str) -> None:
        self.item_text[index] = text

    def setItemData(self, index: int, value: str, role: int) -> None:
        self.item_data[(index, role)] = value


class PlaceWidget:
    def __init__(self) -> None:
        self.current_node = None

    def setCurrentNode(self, node) -> None:
        self.current_node = node


class NodeComboBox:
    """A qMRMLNodeComboBox: only its filter's hidden node IDs."""

    def __init__(self) -> None:
        self.filter = SimpleNamespace(hiddenNodeIDs=[])

    def sortFilterProxyModel(self) -> SimpleNamespace:
        return self.filter


class TableView:
    """A qMRMLTableView: the table node it shows and whether it is visible."""

    def __init__(self) -> None:
        self.table_node, self.visible = None, False

    def setMRMLTableNode(self, node) -> None:
        self.table_node = node


class PlotWidget:
    """A qMRMLPlotWidget: the plot view node it shows and whether it is visible."""

    def __init__(self) -> None:
        self.view_node, self.visible = None, False

    def setMRMLPlotViewNode(self, node) -> None:
        self.view_node = node


LABELS = ("probabilityXLabel", "probabilityPosLabel", "probabilityNegLabel", "deviceUsedLabel", "methodUsedLabel",
          "warningsLabel", "legendLabel", "bundleLabel")


def panel_widgets() -> SimpleNamespace:
    """``widget.ui`` as slicer.util.childWidgetVariables gives it, for the names the view code uses."""
    return SimpleNamespace(**{name: Label() for name in LABELS}, methodComboBox=ComboBox(),
                           bundleComboBox=ComboBox(), seedPlaceWidget=PlaceWidget(), inputVolumeSelector=NodeComboBox(),
                           explainButton=SimpleNamespace(enabled=False), explainAllButton=SimpleNamespace(enabled=False),
                           caseTableView=TableView(), saveDicomButton=SimpleNamespace(enabled=False))
