"""The web viewer: trame-slicer's MRML slice views, a side panel, and the module's own logic.

Clicking a slice view explains the clicked point with ``mrml_explain.explain_volume_node`` and
shows R with ``mrml_overlay.show_in_slice_views``: the same calls the Slicer module's Logic
makes, on the same kind of MRML scene. Choosing another model bundle explains the current seed
again with it. Errors (unreadable file, non-CT, click outside the volume) are shown in the page
and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import threading
from html import escape
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import slicer
from trame.app import TrameApp
from trame.decorators import change, trigger
from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import connect_slice_view_slider_to_state
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.ui import create_vertical_view_gutter_ui
from trame_slicer.app.ui.load_volume_ui import LoadVolumeButton, LoadVolumeState
from trame_slicer.app.ui.slider import Slider
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_server.utils.asynchronous import create_task
from vtkmodules.vtkCommonCore import vtkCommand

from CycleGANExplainLib import mrml_explain, mrml_overlay
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS, MissingDependencyError, missing_packages
from CycleGANExplainLib.caveats import explanation_caveats
from CycleGANExplainLib.dicom_results import DicomResultsError
from CycleGANExplainLib.formatting import probability_text, ras_text, seconds_text
from CycleGANExplainLib.nodule_stack import (DEFAULT_HALF_EXTENT_MM, HALF_EXTENT_CONTROL_STEP_MM, MAX_HALF_EXTENT_MM,
                                             HalfExtentError, NoduleStack, check_half_extent)
from CycleGANExplainLib.model_bundle import (DEVICE_CHOICES, BundleError, load_bundle, read_metadata, resolve_bundle,
                                             shipped_bundles)
from CycleGANExplainLib.sample_data import (DEFAULT_SAMPLE, sample_nodule, sample_notice, sample_of_path,
                                           sample_volume_path)
from CycleGANExplainLib.notices import LIDC_IDRI_CITATIONS, LIDC_IDRI_LICENCE, RESEARCH_NOTICE
from CycleGANExplainLib.overlay import PROBABILITY_LINES, legend_entries, rgb_hex
from CycleGANExplainLib.patch_sampling import InvalidVolumeError, SeedOutsideVolumeError
from CycleGANExplainLib.triton_guard import load_triton_early
from CycleGANExplainLib.volume_checks import NotCTError
from CycleGANExplainLib.volume_io import LoadedVolume, UnreadableVolumeError

from .dicom_download import ZIP_NAME, DicomSource, dicom_results_zip, dicom_source
from .slice_clicks import SliceClickObserver
from .access import TOKEN_PARAMETER, SingleSessionGuard, is_loopback, new_token
from .volume_upload import (UploadLimits, add_volume_node, check_upload_size, read_ct_volume, read_uploaded_volume,
                            uploaded_bytes, without_server_paths, write_uploaded_files)
from .vtk_warnings import INTERACTOR_RESIZE_DEPRECATION, hidden_vtk_warnings

logger = logging.getLogger(__name__)

LAYOUT_ID = "Axial, coronal, sagittal"
SEED_NODE_NAME = "CycleGANExplain seed"
# Yellow: never mistaken for the overlay's red or blue.
SEED_COLOUR = (1.0, 0.9, 0.1)
# The marker is a cross with an open centre (Slicer's Cross2D: arms from 0.2 to 0.5 of its size),
# drawn at this percentage of the view's height, so that the map's centre (the seed) stays visible
# inside it; Slicer's 2D glyphs are otherwise filled. The page's "Show seed marker" hides it.
SEED_GLYPH_SCALE_PERCENT = 8.0
# A sample opens zoomed on its documented nodule: this many mm of the patient across each view's
# narrower side (about three 45 mm patches: the nodule and the lung around it). A user's CT opens
# whole, centred, on its middle slices, since nothing says where its nodules are.
SAMPLE_FIELD_OF_VIEW_MM = 150.0
# Errors a person can fix (another file, another click); anything else is a bug and is logged.
INPUT_ERRORS = (UnreadableVolumeError, InvalidVolumeError, NotCTError, SeedOutsideVolumeError,
                mrml_explain.NoInputVolumeError, BundleError, MissingDependencyError, DicomResultsError,
                HalfExtentError)
# The page's "Download DICOM results" asks the server for the zip's bytes by this trigger.
DICOM_ZIP_TRIGGER = "dicom_results_zip"


def sample_nodule_ras(nodule_id: Optional[str] = None, sample: str = DEFAULT_SAMPLE) -> np.ndarray:
    """RAS centre (mm) of a nodule documented with a sample CT (None: the one it opens on)."""
    return np.array(sample_nodule(nodule_id, sample).centre_ras_mm, dtype=float)


def viewer_layout() -> Layout:
    """Axial view on the left, coronal above sagittal on the right (no 3D view: nothing to show there)."""
    return Layout(
        LayoutDirection.Horizontal,
        [
            ViewLayoutDefinition.axial_view(),
            Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(),
                                              ViewLayoutDefinition.sagittal_view()]),
        ],
        flex_sizes=["3", "2"],
    )


# The chooser's key for the bundle folder given on the command line (shipped bundles go by name).
STARTUP_BUNDLE_KEY = "startup-folder"


def allowed_bundles(chosen_dir: Path) -> Dict[str, Path]:
    """The bundles the page may choose from, by the key the page sends: the shipped bundles by
    name, and ``chosen_dir`` (a folder given on the command line) as STARTUP_BUNDLE_KEY when it
    is not one of them. Kept on the server: the page's state is the browser's to write."""
    allowed = {path.name: path for path in shipped_bundles()}
    if chosen_dir.resolve() not in {path.resolve() for path in allowed.values()}:
        allowed = {STARTUP_BUNDLE_KEY: chosen_dir, **allowed}
    return allowed


def bundle_choices(allowed: Dict[str, Path]) -> List[dict]:
    """The bundle chooser's items (title, value = key); the start-up folder by its folder name."""
    items = []
    for key, path in allowed.items():
        title = read_metadata(path).display_name
        items.append({"title": f"{title} (folder {path.name})" if key == STARTUP_BUNDLE_KEY else title, "value": key})
    return items


def bundle_choice_value(allowed: Dict[str, Path], bundle_dir: Path) -> str:
    """The chooser's key for ``bundle_dir``, one of ``allowed``."""
    return next(key for key, path in allowed.items() if path.resolve() == bundle_dir.resolve())


# The per-slice probability plot's SVG user units: the plot, then a legend column on its right.
SLICE_PLOT_SIZE = (340, 32)
SLICE_PLOT_WIDTH = 270


def slice_plot_svg(stack: NoduleStack) -> str:
    """The module's per-slice probability plot in small, as SVG markup (numbers and the fixed labels of
    overlay.PROBABILITY_LINES only, never text from the page): p(x), p(G-(x)), p(G+(x)) from 0 to 1 against
    each slice's position along S, in the lines' colours on a white ground (as in the figure), the seed's
    slice dashed. "" for a stack of one slice: nothing to plot."""
    if len(stack) < 2:
        return ""
    width, height = SLICE_PLOT_SIZE
    offsets = np.asarray(stack.offsets_mm, dtype=float)
    span = offsets[-1] - offsets[0]

    def x(offset: float) -> float:
        return 2 + (SLICE_PLOT_WIDTH - 4) * (offset - offsets[0]) / span

    def y(probability: float) -> float:
        return 2 + (height - 4) * (1.0 - float(probability))

    seed_x = x(offsets[stack.centre_index])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
             f'height="{height}" role="img" aria-label="Malignancy probability per slice">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{seed_x:.1f}" x2="{seed_x:.1f}" y1="0" y2="{height}" stroke="#999" stroke-dasharray="2 2"/>']
    for row, (attribute, label, colour) in enumerate(PROBABILITY_LINES):
        points = " ".join(f"{x(offset):.1f},{y(p):.1f}" for offset, p in zip(offsets, getattr(stack, attribute)))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{rgb_hex(colour)}" stroke-width="1.5"/>')
        parts.append(f'<text x="{SLICE_PLOT_WIDTH + 6}" y="{9 + 10 * row}" font-size="9" '
                     f'fill="{rgb_hex(colour)}">{escape(label)}</text>')
    return "".join(parts) + "</svg>"


def slice_plot_text(stack: NoduleStack) -> str:
    """What slice_plot_svg shows, in words: the slices' span along S and how many."""
    if len(stack) < 2:
        return ""
    return f"Per slice, {stack.offsets_mm[0]:+.1f} to {stack.offsets_mm[-1]:+.1f} mm along S ({len(stack)} slices)"


def slice_view_gutter(server, view_id: str, view) -> None:
    """trame-slicer's reset button and slice slider, without its 3D-visibility button."""
    create_vertical_view_gutter_ui(server, view_id, view)
    with html.Div(style="position: absolute; bottom: 0; left: 0; width: 100%; background-color: transparent;"):
        Slider(typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", dense=True)


class CappedLoadVolumeButton(LoadVolumeButton):
    """trame-slicer's upload button, with --max-upload-mb checked as the browser's messages arrive.

    trame-slicer's page script sends the chosen files in groups of about 10 MB (a larger file on
    its own), one websocket message each, and its button keeps them all until the last message.
    Here the running total is checked at every message: once it is over the limit, what arrived is
    let go at once and later messages are dropped as they come, so the server holds at most the
    limit and one message. Not possible at this level: refusing a message before it is whole.
    wslink reassembles each message before any handler sees it, and lets an authenticated client
    send one of up to 4 GB (wslink.protocol, after wslink.hello), so a single file larger than the
    limit is received whole before it is refused.
    """

    def __init__(self, limits: UploadLimits, on_refused: Callable[[UnreadableVolumeError], None], **kwargs) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.on_refused = on_refused
        self.received = 0  # bytes of the upload in progress
        self.refused: Optional[UnreadableVolumeError] = None

    async def load_chunk(self, files: List[dict]) -> None:
        if files:  # one message of the upload
            if self.refused is None:
                self.received += uploaded_bytes(files)
                try:
                    check_upload_size(self.received, self.limits)
                except UnreadableVolumeError as error:
                    self.refused, self.files = error, []
                    return
                self.files.extend(files)
            return
        refused, self.refused, self.received = self.refused, None, 0  # the end: the next upload starts afresh
        if refused is not None:
            self.files = []
            self.on_refused(refused)
            return
        await super().load_chunk(files)


class ExplainViewer(TrameApp):
    """One MRML scene, three slice views and the explanation panel, served by trame."""

    def __init__(self, server=None, device: str = "auto", bundle_dir: Union[str, Path, None] = None,
                 allow_unknown_bundle: bool = False, limits: UploadLimits = UploadLimits(),
                 verbose: bool = False) -> None:
        load_triton_early()  # before the views' renderer loads Mesa's LLVM (triton_guard)
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        self.scene = self.slicer_app.scene
        self.bundle_dir = resolve_bundle(bundle_dir)  # a shipped bundle's name or a folder; None: the default
        self.metadata = read_metadata(self.bundle_dir)
        # For the folder given at start-up only: the chooser offers shipped bundles besides it.
        self.allow_unknown_bundle = allow_unknown_bundle
        self.allowed_bundles = allowed_bundles(self.bundle_dir)  # the page sends a key of this, never a path
        self.limits = limits
        self._pending_seed = None  # (ras, view name, clicks it stands for) of the latest click not yet explained
        self._explaining = False
        self.method = DEFAULT_METHOD  # the attribution method of the next explanation (the page's choice)
        # The next explanation's slices: this many mm above and below the seed (the page's "Through the nodule").
        self.half_extent_mm = DEFAULT_HALF_EXTENT_MM
        self._volume_generation = 0  # counts CTs opened, so that a late explanation of an old one is dropped
        self.volume_node = None
        self.overlay_node = None
        self.dicom_source = DicomSource()  # the open CT's series headers, for the DICOM download
        self.shown_result: Optional[mrml_explain.VolumeExplanation] = None
        self.seed_node = self._create_seed_node()

        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=slice_view_gutter)
        self.layout_manager = LayoutManager(self.scene, self.slicer_app.view_manager, self.server)
        # Registering the layout creates the views, each of which has trame-slicer observe the
        # interactor's WindowResizeEvent: VTK 9.6 prints a deprecation notice per view, which
        # only trame-slicer can act on. Hidden here, by its text alone (--verbose shows it).
        with contextlib.nullcontext() if verbose else hidden_vtk_warnings(INTERACTOR_RESIZE_DEPRECATION):
            self.layout_manager.register_layout(LAYOUT_ID, viewer_layout())
        self.layout_manager.set_layout(LAYOUT_ID)
        self.focus_ras: Optional[np.ndarray] = None
        self.field_of_view_mm: Optional[float] = None  # None: the whole CT
        self.click_observers = []
        for view in self.slicer_app.view_manager.get_slice_views():
            self.click_observers.append(SliceClickObserver(view, self.on_slice_click))
            # The render window's WindowResizeEvent, which VTK 9.6 recommends instead of the
            # interactor's (its other choice, ConfigureEvent, is not sent for a remote view). The
            # browser's resize sets the render window's size before this event is sent, and
            # _fit_view resizes the slice node to it, so trame-slicer's handler need not run first.
            view.render_window().AddObserver(vtkCommand.WindowResizeEvent, lambda *_, v=view: self._fit_view(v))

        self._initialise_state(device)
        self._build_ui()

    def preload_bundle(self) -> None:
        """Verify and load the bundle in a background thread while the page is being opened, so
        that the first click does not pay for it (the loader's cache lock makes that click wait
        for this load rather than start another one). A failure is reported at the click."""
        def load() -> None:
            try:
                load_bundle(self.bundle_dir, self.state.device, allow_unknown=self.allow_unknown_bundle)
            except Exception:  # noqa: BLE001 - the click reports it, with the page to show it in
                logger.debug("preloading the bundle failed", exc_info=True)

        threading.Thread(target=load, name="bundle-preload", daemon=True).start()

    # --- scene ---------------------------------------------------------------------------------

    def _create_seed_node(self):
        """The seed as a markups point, drawn by Slicer's markups displayable manager.

        Locked, so a click on it is a new click rather than a drag of the point.
        """
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", SEED_NODE_NAME)
        node.SetMaximumNumberOfControlPoints(1)
        node.SetLocked(True)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*SEED_COLOUR)
        display.SetColor(*SEED_COLOUR)
        display.SetGlyphType(display.Cross2D)
        display.SetUseGlyphScale(True)
        display.SetGlyphScale(SEED_GLYPH_SCALE_PERCENT)
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        return node

    def _place_seed(self, ras: Sequence[float]) -> None:
        if self.seed_node.GetNumberOfControlPoints() == 0:
            self.seed_node.AddControlPointWorld(*map(float, ras))
        else:
            self.seed_node.SetNthControlPointPositionWorld(0, *map(float, ras))

    def show_volume(self, loaded, name: str, centre_ras: Optional[Sequence[float]] = None,
                    field_of_view_mm: Optional[float] = None, dicom: Optional[DicomSource] = None) -> None:
        """Replace the volume (and any explanation of the previous one) by ``loaded``; the views
        centred on ``centre_ras`` if given, showing ``field_of_view_mm`` across if given. ``dicom``: its
        series' headers read while its files existed (an upload's); None: read from its files now."""
        self.dicom_source = dicom if dicom is not None else dicom_source(loaded)
        self.state.dicom_note = self.dicom_source.note
        mrml_overlay.remove_overlay_nodes(self.scene)
        self.overlay_node = None
        self.seed_node.RemoveAllControlPoints()
        if self.volume_node is not None:
            self.scene.RemoveNode(self.volume_node)
        self.volume_node = add_volume_node(self.scene, loaded, name)
        mrml_overlay.show_in_slice_views(self.scene, None, self.volume_node)
        self.focus_ras = None if centre_ras is None else np.asarray(centre_ras, dtype=float)
        self.field_of_view_mm = field_of_view_mm
        for view in self.slicer_app.view_manager.get_slice_views():
            self._fit_view(view)
        shape = loaded.volume_kji.shape
        self.state.volume_text = f"{name}: {loaded.description}, {shape[2]} x {shape[1]} x {shape[0]} voxels"
        self._clear_result()
        self._render()

    def _fit_view(self, view) -> None:
        """Show the whole volume, or field_of_view_mm of it across the view's narrower side (a
        sample's nodule), centred on the focus point (sample nodule or seed) if there is one.

        Also run whenever the browser resizes a view, so that the first image a person sees
        is the same whatever the size of their window.
        """
        view.fit_view_to_content()
        slice_node = view.get_view_node()
        if self.field_of_view_mm is not None:
            width, height, depth = slice_node.GetFieldOfView()
            scale = self.field_of_view_mm / min(width, height)
            if scale < 1.0:  # never zoomed out beyond the whole CT
                slice_node.SetFieldOfView(width * scale, height * scale, depth)
        if self.focus_ras is not None:
            slice_node.JumpSliceByCentering(*map(float, self.focus_ras))
        view.schedule_render()

    def _render(self) -> None:
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    # --- state and UI ----------------------------------------------------------------------------

    def _initialise_state(self, device: str) -> None:
        state = self.state
        state.trame__title = "CycleGAN Explain"
        state.notice = RESEARCH_NOTICE
        state.bundle_choices = bundle_choices(self.allowed_bundles)
        state.bundle = bundle_choice_value(self.allowed_bundles, self.bundle_dir)
        self._show_bundle()
        state.device_choices = list(DEVICE_CHOICES)
        state.device = device
        state.method_choices = [{"title": method.label, "value": method.key} for method in METHODS.values()]
        state.method = DEFAULT_METHOD
        self._show_method_legend(DEFAULT_METHOD)
        state.half_extent_mm = self.half_extent_mm
        state.volume_text = "No CT loaded."
        state.overlay_visible = True
        state.seed_visible = True
        state.sample_notice = ""
        state.overlay_opacity = 0.6
        state.busy = False
        state.status_text = ""
        state.error_text = ""
        state.dicom_note = self.dicom_source.note
        state.dicom_writing = False
        self._clear_result()

    def _clear_result(self) -> None:
        """No result shown, and no status line about one ("Explained ..." would be stale)."""
        self.shown_result = None
        self.state.update({"has_result": False, "seed_text": "", "p_x": "", "p_pos": "", "p_neg": "",
                           "device_text": "", "method_text": "", "warnings_text": "", "caveats": [],
                           "slice_plot_svg": "", "slice_plot_text": "", "status_text": ""})

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, theme="dark") as layout:
            layout.title.set_text("CycleGAN Explain")
            layout.drawer.width = 380
            with layout.toolbar:
                v3.VSpacer()
                html.Span("{{ notice }}", id="toolbar-notice", classes="text-caption mr-4")
            with layout.drawer, html.Div(classes="pa-3 d-flex flex-column", style="gap: 10px;"):
                self._build_panel()
            with layout.content:
                self.layout_manager.initialize_layout_grid(layout)
            with layout.footer:
                self._build_data_attribution()
        self.ui = layout

    @staticmethod
    def _build_data_attribution() -> None:
        """LIDC-IDRI's CC BY 3.0 attribution, always on the page (notices.py holds the text), and the
        open sample CT's (sample_data)."""
        with html.Div(id="data-attribution", classes="text-caption text-grey-lighten-1 ml-4",
                      style="flex: 100 1 0; white-space: normal; line-height: 1.2; font-size: 10px !important;"):
            html.Span(LIDC_IDRI_LICENCE + " Please cite: ")
            html.Span(" ".join(f"({number}) {citation}." for number, citation in enumerate(LIDC_IDRI_CITATIONS, 1)))
            # The open sample's own attribution (the real CT's CC BY licence asks for it where it is used).
            html.Div("{{ sample_notice }}", v_if=("sample_notice",), id="sample-attribution", classes="mt-1")

    def _build_panel(self) -> None:
        """Top to bottom as a reading goes: the notice, the CT, what to do, then the result and its
        errors, which stay in view at 1400 x 900 without scrolling (Testing/web/test_browser.py);
        the choices made once (bundle, device, method) come last."""
        v3.VAlert(text=("notice",), type="info", density="compact", variant="tonal", id="research-notice")
        v3.VAlert(v_if=("!bundle_trained",), type="warning", id="untrained-warning", density="compact",
                  variant="tonal", text="Untrained model bundle: random weights, the explanation is meaningless.")

        html.Div("CT volume", classes="text-subtitle-2")
        with html.Div(classes="d-flex flex-row align-center", style="gap: 8px;"):
            self.upload_buttons = self._build_upload_buttons()
            v3.VBtn("Load sample CT", click=self.load_sample, size="small", variant="tonal", id="load-sample")
        html.Div("Open a NRRD, NIfTI or MHA file, a .nhdr or .mhd header with its data file, or a DICOM series "
                 "(several files, a folder or a .zip).",
                 classes="text-caption")
        html.Div("{{ volume_text }}", id="volume-text", classes="text-body-2")

        html.Div("Click a nodule in the axial, coronal or sagittal view to explain it; click again to move the "
                 "seed.", classes="text-body-2", id="instructions")
        v3.VProgressLinear(v_if=("busy",), indeterminate=True, id="busy-indicator")
        html.Div("{{ status_text }}", v_if=("status_text",), id="status-text", classes="text-caption")
        v3.VAlert(v_if=("error_text",), text=("error_text",), type="error", density="compact", closable=True,
                  id="error-message", click_close="error_text = ''")

        with html.Div(v_if=("has_result",), id="result", classes="d-flex flex-column", style="gap: 4px;"):
            html.Div("Seed (R, A, S): {{ seed_text }} mm", id="seed-text", classes="text-body-2")
            html.Div("Malignancy probability", classes="text-subtitle-2")
            with html.Table(id="probabilities", classes="text-body-2"):
                for label, key in (("x (the CT patch)", "p_x"), ("G+(x), towards malignant", "p_pos"),
                                   ("G-(x), towards benign", "p_neg")):
                    with html.Tr():
                        html.Td(label, classes="pr-4")
                        html.Td(f"{{{{ {key} }}}}", id=f"probability-{key.replace('_', '-')}")
            html.Div("Map: {{ method_text }}", id="method-used", classes="text-caption")
            html.Div("Device: {{ device_text }}", id="device-used", classes="text-caption")
            with v3.VAlert(v_if=("caveats.length",), type="warning", density="compact", variant="tonal",
                           id="caveats"):
                html.Div("{{ caveat.text }}", v_for="caveat in caveats", key="caveat.code", classes="text-body-2")
            html.Div("{{ warnings_text }}", v_if=("warnings_text",), id="warnings",
                     classes="text-caption text-warning", style="white-space: pre-line;")
            # The server returns the zip's bytes (None after an error, which the page then shows);
            # trame's utils.download saves them through a blob link.
            v3.VBtn("Download DICOM results", v_if=("!dicom_note",), disabled=("!has_result || dicom_writing",),
                    loading=("dicom_writing",), size="small", variant="tonal", prepend_icon="mdi-download",
                    id="download-dicom", classes="align-self-start mt-1",
                    click=(f"trigger('{DICOM_ZIP_TRIGGER}').then(zip => zip && "
                           f"utils.download('{ZIP_NAME}', zip, 'application/zip'))"))
            html.Div("{{ dicom_note }}", v_if=("dicom_note",), id="dicom-note", classes="text-caption")
            # Last in the result: the probabilities, caveats and DICOM line above it stay in view at 1400 x 900.
            self._build_slice_plot()

        html.Div("Relevance overlay {{ map_title }}", classes="text-subtitle-2 mt-2", id="map-title")
        with html.Div(id="legend", classes="text-body-2"):
            with html.Div(v_for="entry in legend", key="entry.meaning", classes="d-flex align-center",
                          style="gap: 6px;"):
                html.Span(style=("'display:inline-block;flex-shrink:0;width:14px;height:14px;background:' "
                                 "+ entry.colour",))
                html.Span("{{ entry.meaning }}")
            html.Div("{{ legend_reading }} Near zero is transparent: the CT shows through.", classes="text-caption")
        with html.Div(classes="d-flex flex-row", style="gap: 12px;"):
            v3.VSwitch(label="Show overlay", v_model=("overlay_visible",), density="compact", hide_details=True,
                       color="primary", id="show-overlay")
            v3.VSwitch(label="Show seed marker", v_model=("seed_visible",), density="compact", hide_details=True,
                       color="primary", id="show-seed")
        v3.VSlider(label="Opacity", v_model=("overlay_opacity",), min=0.0, max=1.0, step=0.05, density="compact",
                   hide_details=True, thumb_label=True, id="overlay-opacity")

        html.Div("Model", classes="text-subtitle-2 mt-2")
        with html.Div(id="bundle-select"):  # Vuetify gives a VSelect's id to its hidden input
            v3.VSelect(label="Model bundle", v_model=("bundle",), items=("bundle_choices",), density="compact",
                       hide_details=True)
        html.Div("Model bundle: {{ bundle_text }}", id="bundle-name", classes="text-body-2")
        html.Div("{{ bundle_summary }}", id="bundle-summary", classes="text-caption")
        v3.VSelect(label="Device", v_model=("device",), items=("device_choices",), density="compact",
                   hide_details=True)
        with html.Div(id="method-select"):
            v3.VSelect(label="Method", v_model=("method",), items=("method_choices",), density="compact",
                       hide_details=True)
        # The module's "Through the nodule (±)" control: nodule_stack's range, default and step.
        with html.Div(id="half-extent", classes="d-flex flex-row align-center", style="gap: 8px;"):
            # Numbers as bound expressions (":max"): as static attributes Vue would pass them as text.
            v3.VNumberInput(label="Through the nodule (±)", v_model=("half_extent_mm",), min=("0",),
                            max=(f"{MAX_HALF_EXTENT_MM:g}",), step=(f"{HALF_EXTENT_CONTROL_STEP_MM:g}",),
                            precision=("1",), suffix="mm", density="compact", hide_details=True, max_width=("230",),
                            id="half-extent-input")
            html.Div("0: the seed's slice only", classes="text-caption")

    @staticmethod
    def _build_slice_plot() -> None:
        """The stack's per-slice probabilities in small (slice_plot_svg), under the seed's own."""
        with html.Div(v_if=("slice_plot_svg",), id="slice-plot"):
            html.Div(v_html=("slice_plot_svg",), style="line-height: 0;")
            html.Div("{{ slice_plot_text }}", classes="text-caption")

    def _build_upload_buttons(self) -> List[CappedLoadVolumeButton]:
        """trame-slicer's two upload buttons (files, a folder), as its LoadVolumeUI makes them, capped."""
        typed_state = TypedState(self.state, LoadVolumeState)
        client.Style(".v-input__prepend .v-icon { opacity: 1.0; }")  # as LoadVolumeUI: Vuetify dims the icon
        buttons = []
        for name, directory, icon, sub_state in (
                ("Open Files", False, "mdi-file-upload", typed_state.name.file_button),
                ("Open Directory", True, "mdi-folder-upload", typed_state.name.dir_button)):
            button = CappedLoadVolumeButton(self.limits, self._refuse_upload, name=name, load_directory=directory,
                                            icon=icon, typed_state=typed_state.get_sub_state(sub_state))
            button.on_load_volume.connect(self.load_uploaded_files)
            buttons.append(button)
        return buttons

    # --- actions -----------------------------------------------------------------------------------

    def _refuse_upload(self, error: UnreadableVolumeError) -> None:
        with self.state:
            self._report_error(error, "Could not open the upload")

    def _report_error(self, error: BaseException, context: str) -> None:
        if isinstance(error, INPUT_ERRORS):
            self.state.error_text = f"{context}: {error}"
        else:  # a bug: its details (paths, internals) go to the server's log, not to the page
            logger.exception("%s", context)
            self.state.error_text = f"{context}: unexpected {type(error).__name__} (details in the server's log)."

    def load_sample(self, sample: str = DEFAULT_SAMPLE) -> None:
        self.load_path(sample_volume_path(sample))

    def load_path(self, path: Union[str, Path]) -> None:
        """Open a CT file or DICOM folder from the server's disk (the command line's VOLUME). A
        sample CT (sample_data.sample_of_path: the packaged file or a copy) opens centred and
        zoomed on its documented nodule, with its attribution on the page."""
        self.state.error_text = ""
        try:
            loaded = read_ct_volume(path, self.limits.max_voxels)
            sample = sample_of_path(path)
            if sample is None:
                self.show_volume(loaded, Path(path).name.split(".")[0])
            else:
                self.show_volume(loaded, sample, sample_nodule_ras(sample=sample), SAMPLE_FIELD_OF_VIEW_MM)
            self.state.sample_notice = (sample_notice(sample) if sample else None) or ""
        except Exception as error:  # noqa: BLE001 - shown in the page, the session goes on
            self._report_error(error, f"Could not open {Path(path).name}")

    def load_uploaded_files(self, files: List[dict]) -> None:
        """An upload: read in a worker thread so that the page stays responsive."""
        create_task(self._load_uploaded(files))

    async def _load_uploaded(self, files: List[dict]) -> None:
        names = [str(file.get("name", "")) for file in files]
        label = names[0] if len(names) == 1 else f"{len(names)} files"
        with self.state:
            self.state.update({"error_text": "", "busy": True, "status_text": f"Reading {label}..."})
        try:
            loaded, dicom = await asyncio.to_thread(self._read_upload, files)
            self._volume_generation += 1  # an explanation still running is for the old CT
            self._pending_seed = None
            self.show_volume(loaded, Path(names[0]).name.split(".")[0] if len(names) == 1 else "DICOM series",
                             dicom=dicom)
            self.state.sample_notice = ""
        except Exception as error:  # noqa: BLE001 - shown in the page, the session goes on
            self._report_error(error, f"Could not open {label}")
        with self.state:
            self.state.update({"busy": self._explaining, "status_text": ""})

    def _read_upload(self, files: List[dict]) -> "tuple[LoadedVolume, DicomSource]":
        """The uploaded CT, and its DICOM series' headers read while the files exist (the folder goes with them)."""
        with tempfile.TemporaryDirectory(prefix="cyclegan-explain-upload-") as folder:
            write_uploaded_files(files, Path(folder), self.limits)
            loaded = read_uploaded_volume(Path(folder), self.limits)
            dicom = dicom_source(loaded)
            return loaded, DicomSource(dicom.headers, without_server_paths(dicom.note, Path(folder)))

    def on_slice_click(self, ras: np.ndarray, view_name: str) -> None:
        """A click in a slice view: explain there (after the click's own event has returned)."""
        self.request_explanation(ras, view_name)

    def request_explanation(self, ras: Sequence[float], view_name: str = "") -> None:
        """Explain at ``ras`` as soon as the running explanation (if any) ends.

        Clicks coalesce: while one explanation runs, only the latest click waits, so a burst of
        clicks costs one explanation more, not one per click.
        """
        clicks = self._pending_seed[2] + 1 if self._pending_seed is not None else 1
        self._pending_seed = (np.asarray(ras, dtype=float), view_name, clicks)
        if not self._explaining:
            self._explaining = True
            create_task(self._explain_pending())

    def _show_bundle(self) -> None:
        self.state.update({
            "bundle_text": self.metadata.display_name,
            "bundle_trained": self.metadata.trained,
            "bundle_summary": f"Trained on {self.metadata.trained_on}. Evaluation: {self.metadata.headline_evaluation}.",
        })

    def _show_method_legend(self, method: str) -> None:
        """The legend of the method whose map is shown: the overlay's colours and words
        (overlay.legend_entries), as in the module and the CLI."""
        info = METHODS[method]
        self.state.update({
            "map_title": info.map_title,
            "legend": [{"colour": rgb_hex(rgb), "meaning": meaning} for rgb, meaning in legend_entries(method)],
            "legend_reading": info.reading,
        })

    @change("method")
    def _on_method_chosen(self, method, **_) -> None:
        """Another method chosen: its packages must be there (else the page says which and how to
        install them, and the choice goes back); then the current seed is explained with it."""
        if method not in METHODS:  # the browser sets state freely: only the listed keys
            self.state.error_text = f"Could not use the method: {method!r} is not one of the listed methods."
            self.state.method = self.method
            return
        if missing_packages(method):
            self._report_error(MissingDependencyError(missing_packages(method)),
                               f"Could not use {METHODS[method].label}")
            self.state.method = self.method
            return
        if method == self.method:
            return  # also how the initial value arrives when the page connects
        self.method = method
        self._explain_current_seed()

    @change("half_extent_mm")
    def _on_half_extent_chosen(self, half_extent_mm, **_) -> None:
        """Another half-extent: the current seed is explained again through that many mm of the nodule. A value
        out of range (typed into the field, or set by the browser, which writes state freely) is refused with
        nodule_stack's message, and the field goes back to the value in use."""
        if half_extent_mm in ("", None):
            return  # the field emptied while a number is typed: the value in use stays until one is there
        try:
            value = check_half_extent(half_extent_mm)
        except HalfExtentError as error:
            self._report_error(error, "Could not use that extent through the nodule")
            self.state.half_extent_mm = self.half_extent_mm
            return
        if value == self.half_extent_mm:
            return  # also how the initial value arrives when the page connects
        self.half_extent_mm = value
        self._explain_current_seed()

    def _explain_current_seed(self) -> None:
        if self.volume_node is not None and self.seed_node.GetNumberOfControlPoints() > 0:
            seed = [0.0, 0.0, 0.0]
            self.seed_node.GetNthControlPointPositionWorld(0, seed)
            self.request_explanation(seed)

    @change("bundle")
    def _on_bundle_chosen(self, bundle, **_) -> None:
        """Another bundle chosen: use it from now on, and explain the current seed again with it."""
        bundle_dir = self.allowed_bundles.get(bundle) if isinstance(bundle, str) else None
        if bundle_dir is None:
            # The browser sets state freely (bundle_choices included): only the server's own list counts.
            self._report_error(BundleError("the page asked for a bundle that is not one of the listed model bundles."),
                               "Could not use the chosen model bundle")
            self.state.bundle = bundle_choice_value(self.allowed_bundles, self.bundle_dir)
            return
        try:
            metadata = read_metadata(bundle_dir)
        except BundleError as error:
            self._report_error(error, "Could not use the chosen model bundle")
            return
        if bundle_dir.resolve() == self.bundle_dir.resolve():
            return  # also how the initial value arrives when the page connects
        self.bundle_dir, self.metadata = bundle_dir, metadata
        self._show_bundle()
        self._explain_current_seed()

    async def _explain_pending(self) -> None:
        try:
            while self._pending_seed is not None:
                ras, view_name, clicks = self._pending_seed
                self._pending_seed = None
                await self.explain_at(ras, view_name, clicks)
        finally:
            self._explaining = False

    async def explain_at(self, ras: Sequence[float], view_name: str = "", clicks: int = 1) -> None:
        """Explain at ``ras``: the scene is read and written here, the networks run in a worker
        thread meanwhile (the page stays responsive and further clicks are taken)."""
        ras = np.asarray(ras, dtype=float)
        generation = self._volume_generation
        with self.state:
            self.state.busy = True
            self.state.error_text = ""
            self.state.status_text = f"Explaining ({ras_text(ras)}) mm..."
        try:
            request = mrml_explain.prepare_request(self.volume_node, ras, self.bundle_dir, self.state.device,
                                                   self.half_extent_mm, method=self.method,
                                                   allow_unknown_bundle=self.allow_unknown_bundle)
            batch = await asyncio.to_thread(mrml_explain.compute, request)
        except Exception as error:  # noqa: BLE001 - shown in the page, the session goes on
            with self.state:
                self._report_error(error, "Could not explain the clicked point")
                self._clear_result()  # never the previous seed's figures as if they were this one's
                self._hide_overlay()
                self.state.status_text = ""
                self.state.busy = self._pending_seed is not None
            return
        if generation != self._volume_generation or self._pending_seed is not None:
            # Another CT was opened meanwhile, or a newer click supersedes this one.
            with self.state:
                self.state.busy = self._pending_seed is not None
                self.state.status_text = ""
            return
        result = mrml_explain.show(self.scene, request, batch)
        self.overlay_node = result.overlay_node
        self.focus_ras = ras
        self._place_seed(ras)
        # Bring the other views to the seed's slices without panning the view that was clicked.
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, *map(float, ras), slicer.vtkMRMLSliceNode.DefaultJumpSlice)
        self._show_overlay()
        self._show_result(result, view_name, clicks)

    def _hide_overlay(self) -> None:
        if self.overlay_node is not None:
            mrml_overlay.show_in_slice_views(self.scene, self.overlay_node, self.volume_node,
                                             float(self.state.overlay_opacity), False)
            self._render()

    def _show_status(self, message: str) -> None:
        self.state.status_text = message
        self.state.flush()

    def _show_result(self, result: "mrml_explain.VolumeExplanation", view_name: str, clicks: int = 1) -> None:
        explanation = result.batch[result.central_index]
        batch = result.batch
        self.shown_result = result
        with self.state:
            self._show_method_legend(batch.method)
            self.state.update({
                "has_result": True,
                "seed_text": ras_text(explanation.seed_ras),
                "p_x": probability_text(explanation.p_x),
                "p_pos": probability_text(explanation.p_pos),
                "p_neg": probability_text(explanation.p_neg),
                "device_text": f"{batch.device}, {seconds_text(batch.seconds)}",
                "method_text": f"{METHODS[batch.method].label} ({METHODS[batch.method].library})",
                "warnings_text": "\n".join(batch.warnings),
                "caveats": [{"code": caveat.code, "text": caveat.text}
                            for caveat in explanation_caveats(explanation, batch.method)],
                "slice_plot_svg": slice_plot_svg(result.stack),
                "slice_plot_text": slice_plot_text(result.stack),
                "status_text": (f"Explained the point clicked in the {view_name} view" if view_name
                                else f"Explained the seed with {batch.bundle_name}")
                               + (f" (the latest of {clicks} clicks made while busy)." if clicks > 1 else "."),
                "busy": self._pending_seed is not None,
            })

    @trigger(DICOM_ZIP_TRIGGER)
    async def download_dicom_results(self) -> Optional[bytes]:
        """The shown explanation's DICOM objects as a zip's bytes (dicom_download), which the page saves as
        ZIP_NAME; None, with the reason on the page, when they cannot be written. Written in a worker thread:
        the page stays responsive, and a click meanwhile does not change what is written."""
        context = "Could not write the DICOM results"
        result, source = self.shown_result, self.dicom_source
        self.state.error_text = ""
        if result is None:
            self.state.error_text = f"{context}: explain a point first."
            return None
        self.state.dicom_writing = True
        self.state.flush()
        try:
            return await asyncio.to_thread(dicom_results_zip, result, source)
        except Exception as error:  # noqa: BLE001 - shown in the page, the session goes on
            self._report_error(error, context)
            return None
        finally:
            self.state.dicom_writing = False
            self.state.flush()

    @change("seed_visible")
    def _show_seed(self, seed_visible, **_) -> None:
        self.seed_node.GetDisplayNode().SetVisibility(bool(seed_visible))
        self._render()

    @change("overlay_visible", "overlay_opacity")
    def _show_overlay(self, **_) -> None:
        if self.overlay_node is None:
            return
        mrml_overlay.show_in_slice_views(self.scene, self.overlay_node, self.volume_node,
                                         float(self.state.overlay_opacity), bool(self.state.overlay_visible))
        self._render()


def serve(volume: Union[str, Path, None] = None, port: int = 0, host: str = "127.0.0.1", device: str = "auto",
          bundle_dir: Union[str, Path, None] = None, allow_unknown_bundle: bool = False,
          limits: UploadLimits = UploadLimits(), verbose: bool = False) -> None:
    """Start the viewer and block; prints the URL with its access token (``port=0``: a free port).
    ``verbose``: also print the third-party warnings hidden by default (see vtk_warnings)."""
    if not os.environ.get("DISPLAY"):
        # Without an X server VTK would try X first, warn, then fall back to EGL: go to EGL directly.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    viewer = ExplainViewer(device=device, bundle_dir=bundle_dir, allow_unknown_bundle=allow_unknown_bundle,
                           limits=limits, verbose=verbose)
    viewer.preload_bundle()
    if volume is None:
        viewer.load_sample()
    else:
        viewer.load_path(volume)
    if viewer.state.error_text:  # also shown in the page, where another CT can be opened
        print(f"warning: {viewer.state.error_text}", file=sys.stderr, flush=True)

    # Every host gets a token, loopback included: other users of a shared machine reach it too.
    token = new_token()
    guard = SingleSessionGuard(token)
    viewer.server.controller.on_server_bind.add(guard.bind)
    viewer.server.cli.set_defaults(authKey=token)  # wslink checks it on every websocket
    if not is_loopback(host):
        print(f"warning: serving on {host!r}, reachable from other machines. Anyone who has the address below "
              "(it holds the access token) can see and drive this session, and the connection is not "
              "encrypted: use it only on a network you trust.", file=sys.stderr, flush=True)

    def announce(**_) -> None:
        print(f"CycleGANExplain web viewer: http://{host}:{viewer.server.port}/?{TOKEN_PARAMETER}={token}  "
              f"({RESEARCH_NOTICE})", flush=True)

    viewer.server.controller.on_server_ready.add(announce)
    viewer.server.start(port=port, host=host, open_browser=False, show_connection_info=False, timeout=0)
