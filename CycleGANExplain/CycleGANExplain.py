"""CycleGANExplain: click a lung nodule, see why the classifier calls it malignant or benign.

Slicer glue only (module description, parameter node, widget, a thin logic and the self-test);
the work is done by CycleGANExplainLib. Research use only; not a medical device.
"""

# No `from __future__ import annotations` here: parameterNodeWrapper reads the annotations.
import html
import importlib.metadata
import importlib.util
import logging
import time
import unittest
from pathlib import Path
from typing import Annotated, Callable, List, Optional, Union

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.util import VTKObservationMixin

import CycleGANExplainLib
from CycleGANExplainLib import mrml_case, mrml_explain, mrml_overlay, mrml_probability_plot
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS, missing_packages
from CycleGANExplainLib.caveats import explanation_caveats
from CycleGANExplainLib.explain_controller import ExplainController
from CycleGANExplainLib.formatting import probability_text, seconds_text
from CycleGANExplainLib.model_bundle import (
    DEVICE_CHOICES,
    BundleMetadata,
    default_bundle_dir,
    read_metadata,
    resolve_bundle,
    shipped_bundles,
)
from CycleGANExplainLib.nodule_stack import DEFAULT_HALF_EXTENT_MM, MAX_HALF_EXTENT_MM
from CycleGANExplainLib.notices import LIDC_IDRI_CITATIONS, LIDC_IDRI_LICENCE, NOT_CLEARED, RESEARCH_NOTICE
from CycleGANExplainLib.overlay import colour_legend, legend_html
from CycleGANExplainLib.package_installer import TORCH_MINIMUM_VERSION, DependencyInstaller, torch_version_problem
from CycleGANExplainLib.parameter_gui import connect_gui
from CycleGANExplainLib.sample_data import (DEFAULT_SAMPLE, SAMPLES, SYNTHETIC_SAMPLE, sample_file_sha256,
                                           sample_nodule, sample_notice, sample_volume_path)

MODULE_DIR = Path(__file__).resolve().parent
# The self-test explains the synthetic sample's large spiculated nodule (N2): its thresholds were
# measured there. "Load sample CT" opens DEFAULT_SAMPLE, the real CT.
SELF_TEST_SAMPLE = SYNTHETIC_SAMPLE
SELF_TEST_NODULE_ID = "N2"
# Probabilities saturate near 0 and 1, where their order is within float32 rounding.
PROBABILITY_TOLERANCE = 1e-3
# The self-test's baseline must concentrate its relevance on the sample nodule: the nodule's disk
# (its documented diameter, around the seed) holds at least this many times the share of the
# relevance mass (sum of |R|) that its share of the patch's area would get from a uniform map.
# Measured with the shipped bundle on N2: integrated gradients 2.5, CycleGAN-AM itself 0.5.
BASELINE_SELF_TEST_METHOD = "integrated-gradients"
BASELINE_MINIMUM_ENRICHMENT = 2.0
# Moving the seed re-explains once the point has rested this long (debounce).
REEXPLAIN_DELAY_MS = 300
SEED_NODE_NAME = "CycleGANExplain seed"
DEFAULT_DEVICE = "auto"
# How often the GUI thread looks for a finished explanation (short beside any explanation).
POLL_INTERVAL_MS = 50


def sampleNoduleRAS(sample: str = DEFAULT_SAMPLE, noduleId: Optional[str] = None) -> np.ndarray:
    """RAS centre (mm) of a documented nodule of a sample CT (None: the one it opens on)."""
    return np.array(sample_nodule(noduleId, sample).centre_ras_mm, dtype=float)


#
# CycleGANExplain
#


class CycleGANExplain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CycleGAN Explain")
        # The extension's category (EXTENSION_CATEGORY), translated in the context Slicer's template uses.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Explainable AI")]
        self.parent.dependencies = []  # PyTorch (extension) is checked when first explaining
        self.parent.contributors = ["CycleGANExplain developers (CycleGANExplain project)"]  # EXTENSION_CONTRIBUTORS
        self.parent.helpText = moduleHelpText()
        self.parent.acknowledgementText = _(
            "Method: Katzmann A. et al., \"Explaining clinical decision support systems in medical imaging "
            "using cycle-consistent activation maximization\", Neurocomputing 2021.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def shippedBundleNames() -> List[str]:
    """The Bundle choices: the shipped bundles' names (the default's alone when none is installed,
    so that loading a bundle names the missing folder)."""
    return [path.name for path in shipped_bundles()] or [default_bundle_dir().name]


def bundleDescription(metadata: BundleMetadata) -> str:
    """A bundle's training data and headline evaluation, from its metadata.json."""
    return _("Trained on {data}. Evaluation: {evaluation}.").format(data=metadata.trained_on,
                                                                     evaluation=metadata.headline_evaluation)


def moduleHelpText(modelsDir: Union[str, Path, None] = None) -> str:
    """The module's help: what it does, research use, every shipped bundle (from its metadata.json,
    read now) and the LIDC-IDRI attribution (CycleGANExplainLib.notices). ``modelsDir``: where the
    bundles are (default: the package's shipped models)."""
    default = default_bundle_dir(modelsDir)
    bundles = []
    for path in shipped_bundles(modelsDir):
        try:
            metadata = read_metadata(path)
            text = f"<b>{html.escape(metadata.display_name)}</b>: {html.escape(bundleDescription(metadata))}"
        except Exception as error:  # noqa: BLE001 - the help text must not stop the module from loading
            text = _("<b>{name}</b>: unreadable ({error})").format(name=html.escape(path.name),
                                                                   error=html.escape(str(error)))
        bundles.append(f"<li>{text}{_(' (default)') if path == default else ''}</li>")
    citations = "".join(f"<li>{html.escape(citation)}</li>" for citation in LIDC_IDRI_CITATIONS)
    return (
        "<p>" + _("Explains a lung-nodule malignancy classifier with cycle-consistent activation maximisation. "
                  "Place a seed on a nodule: a 45 mm axial patch around it is classified, transformed towards "
                  "malignant (G+) and towards benign (G-), and R = G+(x) - G-(x) is painted over the CT: red where "
                  "the image would change to look more malignant, blue towards benign. \"Method\" shows a baseline "
                  "attribution map (saliency, integrated gradients, SHAP, occlusion, Grad-CAM, LRP) of the same "
                  "classifier instead, with the same colours; saliency and Grad-CAM are unsigned (red is magnitude "
                  "only).") + "</p>"
        f"<p><b>{html.escape(RESEARCH_NOTICE)}</b> "
        + html.escape(NOT_CLEARED) + "</p><p>"
        + _("Needs Slicer 5.10 or newer and the PyTorch extension (torch {version} or newer, installed on first use "
            "after asking).").format(version=TORCH_MINIMUM_VERSION) + "</p><p>"
        + _("Model bundles (\"Bundle\" chooses one). What each was trained on and its figures on its held-out "
            "test split are read from the bundle's metadata.json:") + "</p>"
        f"<ul>{''.join(bundles) or '<li>' + _('none installed') + '</li>'}</ul>"
        f"<p>{html.escape(LIDC_IDRI_LICENCE)} " + _("Please cite:") + f"</p><ul>{citations}</ul>"
        + "<p>" + _("\"Load sample CT\" opens a real chest CT ({name}); the Sample Data module also offers a "
                    "synthetic one ({synthetic}, no patient data).").format(name=DEFAULT_SAMPLE,
                                                                           synthetic=SYNTHETIC_SAMPLE)
        + f" {html.escape(sample_notice(DEFAULT_SAMPLE) or '')}</p>"
    )


def registerSampleData() -> None:
    """Register the bundled sample CTs, the real one first (local files, verified by their SHA-256)."""
    import SampleData

    for sample in SAMPLES:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="CycleGANExplain",
            sampleName=sample,
            thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "CycleGANExplain.png"),
            uris=sample_volume_path(sample).as_uri(),
            fileNames=f"{sample}.nrrd",
            checksums=f"SHA256:{sample_file_sha256(sample)}",
            nodeNames=sample,
        )


#
# Parameter node
#


@parameterNodeWrapper
class CycleGANExplainParameterNode:
    """
    inputVolume - the CT to explain (read only).
    seedNode - point list whose first point is the patch centre.
    device - torch device choice; the device actually used is shown with the result.
    method - attribution method whose map is shown (attribution_methods.METHODS key).
    bundle - name of the shipped model bundle that explains.
    halfExtentMm - also explain every axial slice within this many mm above and below the seed (0: its slice only).
    autoUpdate - re-explain when the seed is placed or moved.
    showOverlay, overlayOpacity - how the relevance overlay is shown in the slice views.
    overlayVolume - the relevance overlay (output).
    caseTable - the table of every point explained by "Explain all points" (output, saved with the scene).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    seedNode: vtkMRMLMarkupsFiducialNode
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = DEFAULT_DEVICE
    method: Annotated[str, Choice(list(METHODS))] = DEFAULT_METHOD
    bundle: Annotated[str, Choice(shippedBundleNames())] = default_bundle_dir().name
    halfExtentMm: Annotated[float, WithinRange(0.0, MAX_HALF_EXTENT_MM)] = DEFAULT_HALF_EXTENT_MM
    autoUpdate: bool = True
    showOverlay: bool = True
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    overlayVolume: vtkMRMLScalarVolumeNode
    caseTable: vtkMRMLTableNode


#
# CycleGANExplainWidget
#


class CycleGANExplainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: builds the widgets, binds them to the parameter node and hands every event to an
    ExplainController (CycleGANExplainLib.explain_controller), which decides and is tested headless.
    What stays here is Qt: dialogs, labels, timers."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.controller = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSeedNode = None
        self._busyRow = None
        self._plotWidget = None
        self._bundleShown = None
        self._shownResult = None  # what "Save as DICOM" writes

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CycleGANExplain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup

        self.logic = CycleGANExplainLogic()
        debounceTimer = qt.QTimer()
        debounceTimer.setSingleShot(True)
        debounceTimer.setInterval(REEXPLAIN_DELAY_MS)
        # The GUI thread polls the worker (MRML is touched on this thread only).
        pollTimer = qt.QTimer()
        pollTimer.setInterval(POLL_INTERVAL_MS)
        self.controller = ExplainController(self.logic, self._createInstaller(), self, debounceTimer, pollTimer)
        debounceTimer.connect("timeout()", self.controller.explain)
        pollTimer.connect("timeout()", self.controller.poll)
        self._busyRow = self._createBusyRow()
        self.layout.addWidget(self._busyRow)
        self._plotWidget = self._createProbabilityPlot()
        self.layout.addWidget(self._plotWidget)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.explainButton.connect("clicked(bool)", self.controller.explain)
        self.ui.explainAllButton.connect("clicked(bool)", self.controller.explain_all_points)
        self.ui.caseTableView.connect("selectionChanged()", self.onCaseTableSelectionChanged)
        self.ui.loadSeedsButton.connect("clicked(bool)", self.onLoadSeedsFile)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.saveDicomButton.connect("clicked(bool)", self.onSaveDicom)
        # A seed list made with the selector's "Create new" is the module's own, as createSeedNode's.
        self.ui.seedSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.logic.adoptSeedNode)
        self.initializeParameterNode()

    def _createInstaller(self) -> DependencyInstaller:
        try:
            from slicer.packaging import pip_ensure  # Slicer releases after 5.10
        except ImportError:
            pip_ensure = None
        return DependencyInstaller(self.ask, self.tell, self.show_status, slicer.util.pip_install, pip_ensure)

    def _createBusyRow(self):
        """An indeterminate progress bar and a Cancel button, shown while an explanation runs."""
        row = qt.QWidget()
        rowLayout = qt.QHBoxLayout(row)
        rowLayout.setContentsMargins(0, 0, 0, 0)
        progress = qt.QProgressBar()
        progress.setRange(0, 0)
        progress.setTextVisible(False)
        rowLayout.addWidget(progress)
        cancelButton = qt.QPushButton(_("Cancel"))
        cancelButton.toolTip = _("Stop this explanation (the explanation process interrupts it).")
        cancelButton.connect("clicked(bool)", self.controller.cancel)
        rowLayout.addWidget(cancelButton)
        row.visible = False
        return row

    def _createProbabilityPlot(self):
        """A small plot of each slice's p(x), p(G-(x)), p(G+(x)) through the nodule (the plot nodes of
        mrml_probability_plot), shown with a result of more than one slice."""
        plot = slicer.qMRMLPlotWidget()
        plot.setMRMLScene(slicer.mrmlScene)
        plot.setMinimumHeight(180)
        plot.toolTip = _("The classifier's p(malignant) of x, G-(x) and G+(x) on each explained slice through the "
                         "nodule, against the slice's position along S (0: the seed's slice).")
        plot.visible = False
        return plot

    def cleanup(self) -> None:
        if self.controller is not None:  # None when setup() did not get that far
            self.controller.shutdown()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the library too: Slicer's reload re-imports only this file."""
        CycleGANExplainLib.forget_loaded_modules()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        # A clinician who opens the module is about to click: start the explanation process (and its
        # torch import) now rather than on the first click.
        if self.controller is not None:  # None when setup() did not get that far
            self.controller.warm_up()

    def exit(self) -> None:
        if self.controller is None:  # setup() did not get that far
            return
        self.controller.cancel()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        # Completed and repaired before the GUI is bound: binding a combo box to a value outside its
        # choices (a saved scene's bundle, method or device not available here) raises.
        parameters = self.logic.getParameterNode()
        replaced = self.logic.completeParameters(parameters)
        self.setParameterNode(parameters)
        if replaced:
            self.tell("\n".join(replaced), _("Saved settings not available"))

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._bundleShown = None
        self.controller.set_parameters(inputParameterNode)
        if self._parameterNode:
            # Not connectGui: before Slicer 5.10 it returns no tag to disconnect (parameter_gui).
            self._parameterNodeGuiTag = connect_gui(self._parameterNode, self.ui)
            self._labelMethodItems()
            self._describeBundleItems()
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def _labelMethodItems(self) -> None:
        """Show labels, not keys: the GUI binding fills the combo box with the Choice keys, in order."""
        for index, method in enumerate(METHODS.values()):
            self.ui.methodComboBox.setItemText(index, method.label)
            self.ui.methodComboBox.setItemData(index, f"{method.library}; {colour_legend(method.key)}",
                                               qt.Qt.ToolTipRole)

    def _describeBundleItems(self) -> None:
        """Each bundle's training data and evaluation as its tooltip (the binding lists the names in order)."""
        for index, name in enumerate(shippedBundleNames()):
            try:
                tooltip = bundleDescription(self.logic.bundleMetadata(name))
            except Exception as error:  # noqa: BLE001 - a broken bundle must not break the panel
                tooltip = _("Unreadable: {error}").format(error=error)
            self.ui.bundleComboBox.setItemData(index, tooltip, qt.Qt.ToolTipRole)

    def _showBundle(self, bundle: Optional[str]) -> None:
        """The Model section describes the chosen bundle (read once per choice, not on every change)."""
        if bundle == self._bundleShown:
            return
        self._bundleShown = bundle
        try:
            metadata = self.logic.bundleMetadata(bundle)
            self.ui.bundleLabel.text = f"{metadata.display_name}. {bundleDescription(metadata)}"
        except Exception as error:  # noqa: BLE001 - shown; explaining reports it again
            self.ui.bundleLabel.text = _("{bundle}: unreadable ({error})").format(bundle=bundle, error=error)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        seedNode = parameters.seedNode if parameters else None
        self._observeSeedNode(seedNode)
        self._hideFromVolumeSelector(parameters.overlayVolume if parameters else None)
        self.ui.seedPlaceWidget.setCurrentNode(seedNode)
        self.ui.explainButton.enabled = bool(parameters and parameters.inputVolume and seedNode)
        self.ui.explainAllButton.enabled = self.ui.explainButton.enabled
        if parameters:
            self._showBundle(parameters.bundle)
        self.controller.parameters_modified()

    def _hideFromVolumeSelector(self, overlayNode) -> None:
        """The relevance overlay is a scalar volume too, but never a CT to explain."""
        hidden = [overlayNode.GetID()] if overlayNode is not None else []
        proxy = self.ui.inputVolumeSelector.sortFilterProxyModel()
        if list(proxy.hiddenNodeIDs) != hidden:  # set only on change: it refilters the list
            proxy.hiddenNodeIDs = hidden

    def _observeSeedNode(self, seedNode) -> None:
        if seedNode is self._observedSeedNode:
            return
        # Placement and the end of a drag, not PointModifiedEvent: that fires on every mouse move of the
        # place-mode preview point and on label, selection and lock changes.
        observers = ((slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onSeedPointPlaced),
                     (slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onSeedDragEnded),
                     (slicer.vtkMRMLMarkupsNode.PointRemovedEvent, self.onSeedPointRemoved))
        if self._observedSeedNode is not None:
            for event, method in observers:
                self.removeObserver(self._observedSeedNode, event, method)
        self._observedSeedNode = seedNode
        if seedNode is not None:
            for event, method in observers:
                self.addObserver(seedNode, event, method)

    @vtk.calldata_type(vtk.VTK_INT)
    def onSeedPointPlaced(self, caller, event, pointIndex=None) -> None:
        # pointIndex is None when the event was held back by StartModify/EndModify.
        self.controller.seed_placed(caller, pointIndex)

    def onSeedDragEnded(self, caller, event) -> None:
        # The markups widget names the dragged point in this attribute until just after the event.
        moving = caller.GetAttribute(slicer.vtkMRMLMarkupsDisplayNode.GetMovingMarkupIndexAttributeName())
        self.controller.seed_placed(caller, int(moving) if moving and moving.isdigit() else None)

    def onSeedPointRemoved(self, caller, event) -> None:
        self.controller.seed_removed(caller)

    def onLoadSample(self) -> None:
        notice = None
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample CT."), waitCursor=True):
            import SampleData

            slicer.util.showStatusMessage(_("Loading the sample CT..."))
            # Registered again here: a module loaded after start-up missed startupCompleted (idempotent).
            registerSampleData()
            volumeNode = SampleData.downloadSample(DEFAULT_SAMPLE)
            # The real CT's licence asks for its attribution wherever it is used: with the node (Data
            # module) and in the status bar.
            notice = sample_notice(DEFAULT_SAMPLE)
            if notice:
                volumeNode.SetDescription(notice)
            self._parameterNode.inputVolume = volumeNode
            seedNode = self._parameterNode.seedNode
            if not self.logic.ownsSeedNode(seedNode):  # the user's own point list is left as it is
                seedNode = self._parameterNode.seedNode = self.logic.createSeedNode()
            self.logic.placeSeed(seedNode, sampleNoduleRAS())
            # Moving a placed point fires no placement event: the (debounced) explanation is asked for here.
            self.controller.seed_placed(seedNode, 0)
            mrml_overlay.jump_slice_views(slicer.mrmlScene, sampleNoduleRAS())
        slicer.util.showStatusMessage(notice or "", 30000)

    def onCaseTableSelectionChanged(self) -> None:
        """A row of the case's table chosen: its point becomes the shown one (the controller decides)."""
        view = self.ui.caseTableView
        index = view.selectionModel().currentIndex()
        if index.isValid():  # the table's own row, whatever the view's sorting
            self.controller.show_case_point(view.tableModel().mrmlTableRowIndex(
                view.sortFilterProxyModel().mapToSource(index)))

    def onLoadSeedsFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Load seeds file"), "",
                                              _("Seeds files (*.csv *.json *.txt)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the seeds file."), waitCursor=True):
            self._parameterNode.seedNode = self.logic.loadSeedsFile(path)

    def onSaveDicom(self) -> None:
        """Write the shown explanation as DICOM into a new folder inside one the user chooses (never over
        earlier files), installing highdicom first if needed. On the main thread: it takes well under a
        second for a nodule (benchmarks/dicom_results.py)."""
        result, volume = self._shownResult, self._parameterNode.inputVolume if self._parameterNode else None
        if result is None or not mrml_overlay.overlay_explains(result.overlay_node, volume):
            self.tell(_("Explain a point of the selected CT first."), _("Save as DICOM"))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not save the explanation as DICOM."), waitCursor=True):
            if not self._createInstaller().ensure_dicom_writer():
                return
            folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Save the explanation as DICOM into"))
            if not folder:
                return
            target = Path(folder) / time.strftime("CycleGANExplain-DICOM-%Y%m%d-%H%M%S")
            written = self.logic.saveDicomResults(result, volume, target)
            slicer.util.showStatusMessage(_("Wrote {count} DICOM files (a parametric map, a segmentation and a "
                                            "structured report) to {folder}").format(count=len(written),
                                                                                      folder=target), 15000)

    # --- the controller's view (explain_controller.PanelView) ---------------------------------

    def ask(self, question: str, title: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(question, windowTitle=title)

    def tell(self, message: str, title: str) -> None:
        slicer.util.infoDisplay(message, windowTitle=title)

    def show_error(self, message: str, error: BaseException) -> None:
        slicer.util.errorDisplay(f"{message}\n\n{error}")

    def show_status(self, message: str, duration_ms: int = 0) -> None:
        slicer.util.showStatusMessage(message, duration_ms)

    def set_busy(self, busy: bool) -> None:
        self._busyRow.visible = busy

    def clear_result(self) -> None:
        self._shownResult = None
        self.ui.saveDicomButton.enabled = False
        self._plotWidget.visible = False
        for label in (self.ui.probabilityXLabel, self.ui.probabilityPosLabel, self.ui.probabilityNegLabel,
                      self.ui.deviceUsedLabel, self.ui.methodUsedLabel, self.ui.warningsLabel):
            label.text = ""

    def show_case_table(self, tableNode) -> None:
        self.ui.caseTableView.setMRMLTableNode(tableNode)
        self.ui.caseTableView.visible = tableNode is not None

    def show_result(self, result: "mrml_explain.VolumeExplanation") -> None:
        self._shownResult = result
        self.ui.saveDicomButton.enabled = True
        explanation = result.batch[result.central_index]
        self.ui.probabilityXLabel.text = probability_text(explanation.p_x)
        self.ui.probabilityPosLabel.text = probability_text(explanation.p_pos)
        self.ui.probabilityNegLabel.text = probability_text(explanation.p_neg)
        self.ui.deviceUsedLabel.text = _("{device}, {seconds} for {count} patch(es)").format(
            device=result.batch.device, seconds=seconds_text(result.batch.seconds), count=len(result.batch))
        throughNodule = result.stack is not None and len(result.stack) > 1
        if throughNodule:
            self._plotWidget.setMRMLPlotViewNode(self.logic.showSliceProbabilities(result.stack))
        self._plotWidget.visible = throughNodule
        method = METHODS[result.batch.method]
        self.ui.methodUsedLabel.text = _("{label} ({library}); bundle {bundle}").format(
            label=method.label, library=method.library, bundle=result.batch.bundle_name)
        self.ui.legendLabel.text = legend_html(method.key)
        # This explanation's caveats (a counterfactual that failed, a structure filling the patch), then the run's.
        warnings = [caveat.text for caveat in explanation_caveats(explanation, method.key)] + result.batch.warnings
        self.ui.warningsLabel.text = "\n".join(warnings)
        for warning in warnings:
            logging.warning(warning)


#
# CycleGANExplainLogic
#


class CycleGANExplainLogic(ScriptedLoadableModuleLogic):
    """Usable without the GUI: ``CycleGANExplainLogic().explain(volumeNode, seedRAS)``.

    Free of Qt and of slicer.util's GUI functions, so it also runs on a bare slicer-core scene.
    """

    def __init__(self, bundleDir: Union[str, Path, None] = None) -> None:
        """``bundleDir``: the bundle used when ``explain`` is given none: a shipped bundle's name or a
        bundle folder (default: the default shipped bundle)."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.bundleDir = resolve_bundle(bundleDir)

    def getParameterNode(self):
        return CycleGANExplainParameterNode(super().getParameterNode())

    @staticmethod
    def completeParameters(parameters) -> List[str]:
        """Fill what a new (or loaded) parameter node lacks (the scene's first CT, a seed point list) and
        replace a device, method or bundle this installation does not offer (a scene saved elsewhere or
        with another version) by the default. Returns one sentence per replaced value, for the user."""
        if not parameters.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and firstVolumeNode != parameters.overlayVolume:
                parameters.inputVolume = firstVolumeNode
        if not parameters.seedNode:
            parameters.seedNode = CycleGANExplainLogic.createSeedNode()
        replaced = []
        for name, label, choices, default in (
                ("device", _("Device"), DEVICE_CHOICES, DEFAULT_DEVICE),
                ("method", _("Method"), list(METHODS), DEFAULT_METHOD),
                ("bundle", _("Bundle"), shippedBundleNames(), default_bundle_dir().name)):
            saved = getattr(parameters, name)
            if saved not in choices:
                setattr(parameters, name, default)
                replaced.append(_("{parameter} \"{saved}\" is not available here; using \"{default}\".").format(
                    parameter=label, saved=saved, default=default))
        return replaced

    def bundleDirFor(self, bundle: Union[str, Path, None] = None) -> Path:
        """The folder of ``bundle`` (a shipped bundle's name or a folder); None: this logic's bundle."""
        return self.bundleDir if bundle is None else resolve_bundle(bundle)

    def bundleMetadata(self, bundle: Union[str, Path, None] = None) -> BundleMetadata:
        return read_metadata(self.bundleDirFor(bundle))

    @staticmethod
    def createSeedNode():
        """A point list the module owns (tagged SEED_ROLE): the only kind whose points it moves or deletes.

        No maximum number of points: the place widget would disable Place once one is placed;
        keepNewestSeed turns a new point into a move of the seed instead. The Markups logic makes every
        new point list the active place list; the previous one is restored, so that points the user
        places with the Markups toolbar do not land in (and move) the seed.
        """
        scene = slicer.mrmlScene
        selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        activePlace = (selection.GetActivePlaceNodeID(), selection.GetActivePlaceNodeClassName()) if selection else None
        node = scene.CreateNodeByClass("vtkMRMLMarkupsFiducialNode")
        node.UnRegister(None)  # CreateNodeByClass hands over a reference; the scene keeps its own
        node.SetName(scene.GenerateUniqueName(SEED_NODE_NAME))
        CycleGANExplainLogic.adoptSeedNode(node)
        scene.AddNode(node)
        if activePlace is not None:
            selection.SetActivePlaceNodeID(activePlace[0])
            selection.SetActivePlaceNodeClassName(activePlace[1])
        return node

    @staticmethod
    def adoptSeedNode(node) -> None:
        """Mark ``node`` as a seed list of the module's own: keepNewestSeed may move and delete its points."""
        node.SetAttribute(mrml_overlay.ROLE_ATTRIBUTE, mrml_overlay.SEED_ROLE)

    @staticmethod
    def ownsSeedNode(seedNode) -> bool:
        """Whether ``seedNode`` is a seed list the module created (createSeedNode), not the user's."""
        return seedNode is not None and seedNode.GetAttribute(mrml_overlay.ROLE_ATTRIBUTE) == mrml_overlay.SEED_ROLE

    @staticmethod
    def keepNewestSeed(seedNode) -> bool:
        """In the module's own seed list, move the seed to the newest placed point and remove the others;
        True if it moved. A user's point list is never edited."""
        if not CycleGANExplainLogic.ownsSeedNode(seedNode):
            return False
        defined = [index for index in range(seedNode.GetNumberOfControlPoints())
                   if seedNode.GetNthControlPointPositionStatus(index) == seedNode.PositionDefined]
        if len(defined) < 2:
            return False
        position = [0.0, 0.0, 0.0]
        seedNode.GetNthControlPointPositionWorld(defined[-1], position)
        with slicer.util.NodeModify(seedNode):
            for index in reversed(defined[1:]):
                seedNode.RemoveNthControlPoint(index)
            seedNode.SetNthControlPointPositionWorld(defined[0], *position)
        return True

    @staticmethod
    def seedPointIndex(seedNode, pointID: Optional[str] = None) -> Optional[int]:
        """Index of the point to explain: the point ``pointID`` while it exists and is placed, or without
        an ID the list's first placed point; None when there is none."""
        if seedNode is None:
            return None
        if pointID is None:
            candidates = range(seedNode.GetNumberOfControlPoints())
        else:
            candidates = [seedNode.GetNthControlPointIndexByID(pointID)]
        return next((index for index in candidates
                     if index >= 0 and seedNode.GetNthControlPointPositionStatus(index) == seedNode.PositionDefined),
                    None)

    @staticmethod
    def hasSeed(seedNode, pointID: Optional[str] = None) -> bool:
        return CycleGANExplainLogic.seedPointIndex(seedNode, pointID) is not None

    def seedPosition(self, seedNode, pointID: Optional[str] = None) -> np.ndarray:
        """World RAS position of the point to explain (seedPointIndex)."""
        index = self.seedPointIndex(seedNode, pointID)
        if index is None:
            raise ValueError(_("Place the seed on a nodule first (the place button, then click in a slice view)."))
        position = [0.0, 0.0, 0.0]
        seedNode.GetNthControlPointPositionWorld(index, position)
        return np.array(position)

    @staticmethod
    def placeSeed(seedNode, ras) -> None:
        """Put the seed (the single point of the module's own seed list) at ``ras``."""
        if not CycleGANExplainLogic.ownsSeedNode(seedNode):
            raise ValueError(f"'{seedNode.GetName()}' is not the module's seed list; its points are left as they are.")
        if seedNode.GetNumberOfControlPoints() == 0:
            seedNode.AddControlPointWorld(*map(float, ras))
        else:
            seedNode.SetNthControlPointPositionWorld(0, *map(float, ras))

    @staticmethod
    def removeOverlayFromViews(overlayNode) -> None:
        mrml_overlay.remove_from_slice_views(slicer.mrmlScene, overlayNode)

    def prepareRequest(self, volumeNode, seedRAS, device: str = "auto", halfExtentMm: float = DEFAULT_HALF_EXTENT_MM,
                       method: str = DEFAULT_METHOD, bundle: Union[str, Path, None] = None,
                       allowUnknownBundle: bool = False) -> "mrml_explain.ExplainRequest":
        """Read and check what ``explain`` needs, for the explanation process
        (``mrml_explain.worker_job``; the widget's way: the scene is read here, on the calling thread)."""
        return mrml_explain.prepare_request(volumeNode, seedRAS, self.bundleDirFor(bundle), device, halfExtentMm,
                                            method, allowUnknownBundle)

    def preparePointsRequest(self, volumeNode, seedNode, device: str = "auto",
                             halfExtentMm: float = DEFAULT_HALF_EXTENT_MM, method: str = DEFAULT_METHOD,
                             bundle: Union[str, Path, None] = None,
                             allowUnknownBundle: bool = False) -> "mrml_case.PointsRequest":
        """Read and check every placed point of ``seedNode`` and plan each point's slices within
        ``halfExtentMm`` (the panel's "Through the nodule"), for one request to the explanation process
        (the "Explain all points" button); labels from the points."""
        return mrml_case.prepare_points_request(volumeNode, seedNode, self.bundleDirFor(bundle), device,
                                                halfExtentMm, method, allowUnknownBundle)

    def showPointsExplanation(self, points: "mrml_case.PointsRequest", batch, opacity: float = 0.6,
                              visible: bool = True) -> "mrml_case.CaseExplanation":
        """The case's table node (one row per point) and one overlay of every point's stack over the volume,
        the views centred on the last point (the shown one)."""
        case = mrml_case.show(slicer.mrmlScene, points, batch)
        request = points.request
        self.showOverlay(case.shown.overlay_node, request.volume_node, opacity, visible,
                         jumpToRAS=request.seeds[request.central_index])
        return case

    @staticmethod
    def showCasePoint(case: "mrml_case.CaseExplanation", point: int) -> "mrml_explain.VolumeExplanation":
        """Point ``point`` (0-based, the table's row) of an explained case as the shown result, the views
        centred on it; the overlay of every point stays as it is."""
        result = mrml_case.point_result(case, point)
        mrml_overlay.jump_slice_views(slicer.mrmlScene, result.stack.plan.seed_ras)
        return result

    @staticmethod
    def loadSeedsFile(path: Union[str, Path]):
        """A new point list of a seeds file's nodules (CSV or JSON in RAS or LPS: seed_files), labelled as the
        file labels them; "Explain all points" then explains them. Raises SeedFileError naming the line."""
        from CycleGANExplainLib.seed_files import read_seeds_file

        return mrml_case.add_seed_list(slicer.mrmlScene, read_seeds_file(path).seeds,
                                      Path(path).name.split(".")[0])

    def explain(
        self,
        volumeNode,
        seedRAS,
        device: str = "auto",
        halfExtentMm: float = DEFAULT_HALF_EXTENT_MM,
        statusCallback: Optional[Callable[[str], None]] = None,
        method: str = DEFAULT_METHOD,
        bundle: Union[str, Path, None] = None,
        allowUnknownBundle: bool = False,
    ) -> "mrml_explain.VolumeExplanation":
        """Explain at ``seedRAS`` (RAS mm) with ``method`` (attribution_methods.METHODS key) and the
        model ``bundle`` (a shipped bundle's name or a folder; None: this logic's bundle); returns
        (explanation batch, overlay node, seed's index).

        The overlay volume node is created once and updated on every call, whatever the method or
        bundle; the input is never modified. A baseline whose packages are missing raises
        MissingDependencyError; an unknown bundle raises BundleError naming the shipped ones; a
        bundle folder the package does not ship raises UntrustedBundleError unless
        ``allowUnknownBundle`` (the user confirmed that they trust it).
        """
        return mrml_explain.explain_volume_node(
            slicer.mrmlScene, volumeNode, seedRAS, self.bundleDirFor(bundle), device, halfExtentMm,
            statusCallback, method=method, allow_unknown_bundle=allowUnknownBundle,
        )

    @staticmethod
    def saveDicomResults(result: "mrml_explain.VolumeExplanation", volumeNode, folder: Union[str, Path],
                         fileForInstance: Optional[Callable[[str], str]] = None) -> List[Path]:
        """Write the shown explanation as DICOM into ``folder`` (a parametric map of the overlay volume, a
        segmentation of its red and blue regions, an SR with the numbers), in the study of the CT, which must
        come from the DICOM database (``fileForInstance``: slicer.dicomDatabase.fileForInstance by default).
        Needs highdicom; raises DicomResultsError saying what to do otherwise."""
        if fileForInstance is None:
            fileForInstance = slicer.dicomDatabase.fileForInstance
        return mrml_explain.save_dicom_results(result, volumeNode, folder, fileForInstance)

    def showExplanation(self, request: "mrml_explain.ExplainRequest", batch, opacity: float = 0.6,
                        visible: bool = True) -> "mrml_explain.VolumeExplanation":
        """Write a computed explanation into the overlay node and show it over the request's volume,
        the views centred on the seed (on the GUI thread: MRML is not thread-safe)."""
        result = mrml_explain.show(slicer.mrmlScene, request, batch)
        self.showOverlay(result.overlay_node, request.volume_node, opacity, visible,
                         jumpToRAS=request.seeds[request.central_index])
        return result

    @staticmethod
    def showSliceProbabilities(stack) -> object:
        """Each slice's p(x), p(G-(x)), p(G+(x)) of ``stack`` (nodule_stack.NoduleStack) as the module's plot
        nodes (a table, three series, a chart); returns the plot view node that shows the chart."""
        chart = mrml_probability_plot.update_probability_plot(slicer.mrmlScene, stack)
        return mrml_probability_plot.probability_plot_view(slicer.mrmlScene, chart)

    @staticmethod
    def updateOverlayDisplay(overlayNode, inputVolume, opacity: float = 0.6, visible: bool = True) -> bool:
        """Follow the panel's opacity where the overlay is shown; when ``inputVolume`` is not the
        volume it explains, take it out of the views instead. Returns whether it explains it."""
        if not mrml_overlay.overlay_explains(overlayNode, inputVolume):
            mrml_overlay.remove_from_slice_views(slicer.mrmlScene, overlayNode)
            return False
        mrml_overlay.set_overlay_opacity(slicer.mrmlScene, overlayNode, opacity, visible)
        return True

    @staticmethod
    def showOverlay(overlayNode, backgroundVolume=None, opacity: float = 0.6, visible: bool = True,
                    jumpToRAS=None) -> None:
        """Show the overlay as every slice view's foreground, optionally centring the views on a point."""
        mrml_overlay.show_in_slice_views(slicer.mrmlScene, overlayNode, backgroundVolume, opacity, visible)
        if jumpToRAS is not None:
            mrml_overlay.jump_slice_views(slicer.mrmlScene, jumpToRAS)


#
# CycleGANExplainTest
#


class CycleGANExplainTest(ScriptedLoadableModuleTest):
    """Loads the sample CT, explains a documented nodule and checks the overlay."""

    def setUp(self) -> None:
        # CTest's slicer_add_python_unittest loads the test_* methods on their own (runTest never runs
        # there), so every test checks torch here and skips with the reason.
        problem = self.torchProblem()
        if problem:
            raise unittest.SkipTest(problem)
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        """What Slicer's "Reload and Test" runs: each test, or why it was skipped."""
        for test in (self.test_ExplainSampleNodule, self.test_BaselineOnSampleNodule):
            try:
                self.setUp()
                test()
            except unittest.SkipTest as skipped:
                self.delayDisplay(f"Skipped {test.__name__}: {skipped}")

    @staticmethod
    def torchProblem() -> Optional[str]:
        """Why the test cannot run (torch missing or older than the bundles need), or None. A self-test
        never installs torch (several GB, the user's choice): the panel asks before installing it."""
        if importlib.util.find_spec("torch") is None:
            return ("PyTorch is not installed: install it in the PyTorch Utils module, or explain a seed in "
                    "the CycleGAN Explain module, which asks to install it.")
        return torch_version_problem(importlib.metadata.version("torch"))

    def test_ExplainSampleNodule(self) -> None:
        import SampleData

        self.delayDisplay("Loading the sample CT")
        registerSampleData()  # as Slicer's template test does: the module may have loaded after start-up
        volumeNode = SampleData.downloadSample(SELF_TEST_SAMPLE)
        seedNode = CycleGANExplainLogic().createSeedNode()
        CycleGANExplainLogic.placeSeed(seedNode, sampleNoduleRAS(SELF_TEST_SAMPLE, SELF_TEST_NODULE_ID))
        self.delayDisplay("Explaining the nodule")
        self.checkExplanation(volumeNode, seedNode)
        self.delayDisplay("Test passed")

    def test_BaselineOnSampleNodule(self) -> None:
        import SampleData

        if missing_packages(BASELINE_SELF_TEST_METHOD):
            self.skipTest(f"{', '.join(missing_packages(BASELINE_SELF_TEST_METHOD))} not installed (choose "
                          f"{METHODS[BASELINE_SELF_TEST_METHOD].label} in the module to install it).")
        registerSampleData()
        volumeNode = SampleData.downloadSample(SELF_TEST_SAMPLE)
        self.delayDisplay(f"Explaining the nodule with {METHODS[BASELINE_SELF_TEST_METHOD].label}")
        self.checkBaselineExplanation(volumeNode)
        self.delayDisplay("Test passed")

    def checkBaselineExplanation(self, volumeNode, method: str = BASELINE_SELF_TEST_METHOD,
                                 noduleId: str = SELF_TEST_NODULE_ID) -> float:
        """A baseline's map of a documented sample nodule is concentrated on the nodule; returns the
        enrichment (share of |R| inside the nodule's disk over the disk's share of the patch area).
        The map replaces CycleGAN-AM's in the same overlay node."""
        logic = CycleGANExplainLogic()
        metadata = logic.bundleMetadata()
        seedRAS = sampleNoduleRAS(SELF_TEST_SAMPLE, noduleId)
        # The seed's slice only: a baseline runs once per slice, and this checks the map of that slice.
        ours = logic.explain(volumeNode, seedRAS, device="cpu", halfExtentMm=0.0)
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        result = logic.explain(volumeNode, seedRAS, device="cpu", method=method, halfExtentMm=0.0)
        self.assertEqual(result.overlay_node.GetID(), ours.overlay_node.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)
        self.assertEqual(mrml_overlay.overlay_method(result.overlay_node), method)
        self.assertEqual(result.batch.method, method)

        relevance = slicer.util.arrayFromVolume(result.overlay_node)[result.central_index]
        np.testing.assert_allclose(relevance, result.batch[result.central_index].relevance)
        self.assertTrue(np.all(np.isfinite(relevance)))
        self.assertGreater(float(np.abs(relevance).sum()), 0.0)
        self.assertFalse(np.allclose(relevance, ours.batch[ours.central_index].relevance))
        # The probabilities come from the same networks whatever the method.
        self.assertAlmostEqual(result.batch[0].p_x, ours.batch[0].p_x, places=5)

        diameterMM = sample_nodule(noduleId, SELF_TEST_SAMPLE).diameter_mm
        pixelMM = metadata.patch_extent_mm / metadata.patch_size_px
        centre = (metadata.patch_size_px - 1) / 2.0
        rows, columns = np.indices(relevance.shape)
        distanceMM = np.hypot(rows - centre, columns - centre) * pixelMM
        nodule = distanceMM <= diameterMM / 2.0
        massInside = float(np.abs(relevance)[nodule].sum() / np.abs(relevance).sum())
        enrichment = massInside / float(nodule.mean())
        self.assertGreaterEqual(enrichment, BASELINE_MINIMUM_ENRICHMENT,
                                f"{method}: {massInside:.0%} of the relevance lies on nodule {noduleId}, "
                                f"which covers {nodule.mean():.0%} of the patch")
        return enrichment

    def checkExplanation(self, volumeNode, seedNode, halfExtentMm: float = 5.0, documentedNodule: bool = True):
        """The self-test's checks (also run by the pytest suite on a bare MRML scene).

        The order G-(x) <= x <= G+(x) is what the trained bundle promises on the sample's documented
        nodules; ``documentedNodule=False`` skips it for other, out-of-distribution test images.
        """
        from CycleGANExplainLib.overlay import symmetric_limit

        logic = CycleGANExplainLogic()
        metadata = logic.bundleMetadata()
        seedRAS = logic.seedPosition(seedNode)
        voxelsBefore = slicer.util.arrayFromVolume(volumeNode).copy()

        result = logic.explain(volumeNode, seedRAS, device="cpu", halfExtentMm=halfExtentMm)
        overlay = result.overlay_node
        logic.showOverlay(overlay, volumeNode, jumpToRAS=seedRAS)

        # Geometry: the seed's slice is centred on the seed at the bundle's pixel spacing.
        ijkToRAS = vtk.vtkMatrix4x4()
        overlay.GetIJKToRASMatrix(ijkToRAS)
        ijkToRAS = slicer.util.arrayFromVTKMatrix(ijkToRAS)
        centre = (metadata.patch_size_px - 1) / 2.0
        centreRAS = ijkToRAS @ np.array([centre, centre, result.central_index, 1.0])
        np.testing.assert_allclose(centreRAS[:3], seedRAS, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(ijkToRAS[:3, :2], axis=0),
                                   metadata.patch_extent_mm / metadata.patch_size_px, rtol=1e-9)
        relevance = slicer.util.arrayFromVolume(overlay)
        self.assertEqual(relevance.shape[1:], (metadata.patch_size_px, metadata.patch_size_px))
        # Through the nodule: one slice per step along S within the half-extent, one CT slice apart.
        self.assertEqual(relevance.shape[0], len(result.batch))
        self.assertEqual(relevance.shape[0], len(result.stack))
        np.testing.assert_array_less(np.abs(result.stack.offsets_mm), halfExtentMm + 1e-6)
        np.testing.assert_allclose(ijkToRAS[:3, 2], [0.0, 0.0, result.stack.plan.step_mm], atol=1e-9)

        # Values: R itself, finite, within [-2, 2] (a difference of two images in [-1, 1]),
        # and displayed with the symmetric window through the relevance colour table.
        self.assertTrue(np.all(np.isfinite(relevance)))
        self.assertLessEqual(float(np.abs(relevance).max()), 2.0)
        np.testing.assert_allclose(relevance[result.central_index], result.batch[result.central_index].relevance)
        display = overlay.GetScalarVolumeDisplayNode()
        limit = symmetric_limit(relevance)
        self.assertAlmostEqual(display.GetWindowLevelMin(), -limit, places=5)
        self.assertAlmostEqual(display.GetWindowLevelMax(), limit, places=5)
        colourNode = display.GetColorNode()
        self.assertIsNotNone(colourNode)
        self.assertEqual(colourNode.GetAttribute(mrml_overlay.ROLE_ATTRIBUTE), mrml_overlay.COLOUR_ROLE)

        # Re-explaining reuses the nodes, and the input CT is untouched.
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        again = logic.explain(volumeNode, seedRAS, device="cpu", halfExtentMm=halfExtentMm)
        self.assertEqual(again.overlay_node.GetID(), overlay.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volumeNode), voxelsBefore)

        # With a trained bundle, G- makes the patch look more benign and G+ more malignant; the
        # tolerance allows for probabilities saturated at 0 or 1 (float32 softmax).
        if metadata.trained and documentedNodule:
            explanation = result.batch[result.central_index]
            self.assertLessEqual(explanation.p_neg, explanation.p_x + PROBABILITY_TOLERANCE)
            self.assertLessEqual(explanation.p_x, explanation.p_pos + PROBABILITY_TOLERANCE)
        return result
