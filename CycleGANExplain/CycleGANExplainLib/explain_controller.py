"""The module panel's behaviour without Qt: when to explain, what to ask first, what to show.

The Slicer widget builds the panel and hands every event here (seed placed or moved, parameter
changed, Explain clicked, timer fired); this class decides. It takes the logic, the installer,
the panel (``view``) and two timers as arguments, so it runs on a bare MRML scene in the tests:
in Slicer the timers are QTimers and the view is the widget.

- Placing the seed, or ending a drag of it, restarts a single-shot timer (the debounce): it
  explains once, when the point rests, and only with auto-update on. Only the module's own seed
  list is ever edited; in a user's point list the point placed or dragged last is explained.
- Choosing another method or bundle re-explains the shown map once per choice: a failed attempt
  is not retried on every later parameter change.
- "Explain all points" explains every placed point of the seed list through its nodule (the panel's
  half-extent) in one request (``mrml_case``): a table of them all, labelled as the points are, one overlay
  of every point's stack, and the last point's probabilities and per-slice plot until a row of the table
  is chosen (``show_case_point``).
- The networks run in the explanation process (``worker_client``: out of Slicer's GIL, a newer
  request interrupting the running one); the poll timer delivers the result on the GUI thread,
  and a result for a volume no longer chosen is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Protocol

from . import mrml_case, mrml_explain, mrml_overlay
from .attribution_methods import DEFAULT_METHOD
from .model_bundle import UntrustedBundleError, bundle_digest, check_trust
from .package_installer import DependencyInstaller
from .translation import tr as _
from .worker_client import WorkerClient, WorkerError


class Timer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class PanelView(Protocol):
    """What the controller needs of the panel (the Slicer widget implements it)."""

    def ask(self, question: str, title: str) -> bool: ...

    def show_error(self, message: str, error: BaseException) -> None: ...

    def show_status(self, message: str, duration_ms: int = 0) -> None: ...

    def set_busy(self, busy: bool) -> None: ...

    def clear_result(self) -> None: ...

    def show_result(self, result: mrml_explain.VolumeExplanation) -> None: ...

    def show_case_table(self, table_node: Any) -> None: ...


EXPLAIN_FAILED = _("Could not explain the seed point.")


class ExplainController:
    def __init__(self, logic: Any, installer: DependencyInstaller, view: PanelView, debounce_timer: Timer,
                 poll_timer: Timer, python: Optional[str] = None) -> None:
        """``logic``: a ``CycleGANExplainLogic``; ``debounce_timer`` calls ``explain`` when it fires
        and ``poll_timer`` calls ``poll`` repeatedly while it runs (the caller connects them);
        ``python``: the explanation process's Python (default: worker_client.worker_python())."""
        self.logic = logic
        self.installer = installer
        self.view = view
        self.debounce_timer = debounce_timer
        self.poll_timer = poll_timer
        self.explainer = WorkerClient(self.on_done, self.on_failed, python)
        self.parameters: Any = None
        self._choice_shown_or_tried: Optional[tuple] = None
        self._allowed_bundle_digests: set = set()  # unknown bundles the user confirmed in this session
        # (seed list's node ID, control point ID) of the point last placed or dragged: the one explained
        # (IDs, not indices: deleting another point of a user's list shifts the indices).
        self._seed_point: Optional[tuple] = None
        self._preparing = False  # installs and questions before a request (explain)
        self._requested_while_preparing = False
        self._case: Any = None  # the shown mrml_case.CaseExplanation: its rows can be chosen

    # --- events from the panel -------------------------------------------------------------------

    def set_parameters(self, parameters: Any) -> None:
        """The parameter node the panel now shows (None when the module is left or the scene closes)."""
        if parameters is None:
            self.debounce_timer.stop()  # a pending re-explain must not fire without a parameter node
        self.parameters = parameters
        self._choice_shown_or_tried = None

    def parameters_modified(self) -> None:
        """Follow the panel: the overlay's opacity, and a new method or bundle choice."""
        parameters = self.parameters
        if parameters is None:
            return
        if parameters.overlayVolume and not self.logic.updateOverlayDisplay(
                parameters.overlayVolume, parameters.inputVolume, parameters.overlayOpacity, parameters.showOverlay):
            # The overlay explains another volume than the one now chosen: it is out of the views.
            self.view.clear_result()
        self._reexplain_if_choice_changed()

    def seed_placed(self, seed_node: Any, point_index: Optional[int] = None) -> None:
        """A point of the seed list was placed, or a drag of it ended (the panel does not pass on
        PointModifiedEvent, which fires on every mouse move of the place-mode preview point and on
        label, selection and lock changes). That point becomes the one explained, after the debounce
        when auto-update is on. In the module's own seed list a second placed point moves the seed
        there; a user's list is never edited. ``point_index``: None when the event did not say."""
        if seed_node is None:
            return
        if self.logic.keepNewestSeed(seed_node):
            point_index = 0
        if point_index is not None and 0 <= point_index < seed_node.GetNumberOfControlPoints():
            point_id = seed_node.GetNthControlPointID(point_index)
            if self.logic.hasSeed(seed_node, point_id):
                self._seed_point = (seed_node.GetID(), point_id)
        if self.parameters is not None and self.parameters.autoUpdate and \
                self.logic.hasSeed(seed_node, self._seed_point_id(seed_node)):
            self.debounce_timer.start()

    def seed_removed(self, seed_node: Any) -> None:
        """A point of the seed list was deleted: if it was the explained one, nothing of its
        explanation stays (pending or running explanation, overlay in the views, figures)."""
        if seed_node is None or self.logic.hasSeed(seed_node, self._seed_point_id(seed_node)):
            return
        self._seed_point = None
        self.debounce_timer.stop()
        self.cancel()
        parameters = self.parameters
        if parameters is not None and parameters.overlayVolume:
            self.logic.removeOverlayFromViews(parameters.overlayVolume)
        self.view.clear_result()

    def explain(self) -> None:
        """Check and read the request on this thread, then compute it in the worker (a newer seed
        supersedes one still running). Errors are shown, never raised into Qt."""
        self._explain(all_points=False)

    def explain_all_points(self) -> None:
        """Explain every placed point of the seed list in one request, as ``explain`` does one."""
        self._explain(all_points=True)

    def _explain(self, all_points: bool) -> None:
        parameters = self.parameters
        if parameters is None:
            return
        if self._preparing:
            # An install or a question is under way: PyTorchUtils' and pip's logging and the dialogs
            # process Qt events, so timers and clicks arrive here meanwhile. One more explanation runs
            # once it is done (with the seed and choices as they are then), never a second install.
            self._requested_while_preparing = True
            return
        # Cleared first: if this explanation fails, no earlier seed's figures stay on screen as if current.
        self.view.clear_result()
        self._case = None  # its overlay is about to be replaced
        self._choice_shown_or_tried = (parameters.method, parameters.bundle)
        self._preparing, self._requested_while_preparing = True, False
        try:
            request = self._prepare_request(parameters, all_points)
        except Exception as error:  # noqa: BLE001 - every failure is the user's to read
            logging.error("Explanation failed", exc_info=True)
            self.view.show_error(EXPLAIN_FAILED, error)
            return
        finally:
            self._preparing = False
        if request is None:
            return
        if self._requested_while_preparing and self.parameters is not None:
            self.debounce_timer.start()
        try:
            job = mrml_case.worker_job(request) if all_points else mrml_explain.worker_job(request)
            self.explainer.submit(job, request)
        except Exception as error:  # noqa: BLE001 - e.g. the bundle's metadata, PythonSlicer not found
            logging.error("Explanation failed", exc_info=True)
            self.view.show_error(EXPLAIN_FAILED, error)
            return
        self.view.set_busy(True)
        self.view.show_status(_("Explaining {count} points...").format(count=len(request.labels))
                              if all_points else _("Explaining the seed point..."))
        self.poll_timer.start()

    def warm_up(self) -> None:
        """Start the explanation process ahead of the first click (the module was entered). A failure
        here is only logged: the click that needs the process reports it in the panel."""
        try:
            self.explainer.start()
        except Exception:  # noqa: BLE001 - e.g. PythonSlicer not found; shown when an explanation is asked
            logging.warning("Could not start the explanation process ahead of the first click", exc_info=True)

    def poll(self) -> None:
        self.explainer.poll()
        if not self.explainer.busy:
            self.poll_timer.stop()
            self.view.set_busy(False)
            self.view.show_status("")

    def cancel(self) -> None:
        if self.explainer.busy:
            self.explainer.cancel()
            self.view.show_status(_("Explanation cancelled."), 3000)
        self.view.set_busy(False)

    def shutdown(self) -> None:
        """The module is closed: no timer fires and no worker result arrives any more."""
        self.debounce_timer.stop()
        self.poll_timer.stop()
        self.explainer.shutdown()

    # --- results from the worker (delivered by poll, on the GUI thread) ------------------------

    def on_done(self, tag: Any, batch: Any) -> None:
        """``tag``: the ExplainRequest of one seed, or the PointsRequest of every point."""
        parameters = self.parameters
        request = tag.request if isinstance(tag, mrml_case.PointsRequest) else tag
        if parameters is None or parameters.inputVolume is None or \
                parameters.inputVolume.GetID() != request.volume_node.GetID():
            return  # the module was left, or another volume chosen, while it ran
        if isinstance(tag, mrml_case.PointsRequest):
            self._case = self.logic.showPointsExplanation(tag, batch, parameters.overlayOpacity,
                                                          parameters.showOverlay)
            result = self._case.shown
            parameters.caseTable = self._case.table_node
            self.view.show_case_table(self._case.table_node)
        else:
            result = self.logic.showExplanation(request, batch, parameters.overlayOpacity, parameters.showOverlay)
        parameters.overlayVolume = result.overlay_node
        self.view.show_result(result)

    def show_case_point(self, point: int) -> None:
        """A row of the case's table was chosen: that point (0-based) becomes the shown one (its probabilities,
        per-slice plot and "Save as DICOM"), the views centred on it. Nothing happens without a shown case of
        the chosen volume, or for a row the case lacks."""
        parameters, case = self.parameters, self._case
        if parameters is None or case is None or not 0 <= point < len(case.stacks) or \
                not mrml_overlay.overlay_explains(case.shown.overlay_node, parameters.inputVolume):
            return
        self.view.show_result(self.logic.showCasePoint(case, point))

    def on_failed(self, request: mrml_explain.ExplainRequest, error: BaseException) -> None:
        details = error.details if isinstance(error, WorkerError) and error.details else None
        logging.error("Explanation failed%s", f" in the explanation process:\n{details}" if details else "",
                      exc_info=None if details else (type(error), error, error.__traceback__))
        self.view.show_error(EXPLAIN_FAILED, error)

    # --- helpers ---------------------------------------------------------------------------------

    def _prepare_request(self, parameters: Any, all_points: bool = False) -> Any:
        """The request (an ExplainRequest; with ``all_points`` a PointsRequest), after torch, the method's
        packages and trust in the bundle are settled; None when the user declined one of them."""
        if not self.installer.ensure_torch():
            return None
        if not self.installer.ensure_method_packages(parameters.method):
            parameters.method = DEFAULT_METHOD  # the user declined: back to the method that needs nothing more
            return None
        allow_unknown = self._confirm_unknown_bundle(self.logic.bundleDirFor(parameters.bundle))
        if allow_unknown is None:
            return None
        if all_points:
            return self.logic.preparePointsRequest(parameters.inputVolume, parameters.seedNode, parameters.device,
                                                   parameters.halfExtentMm, method=parameters.method,
                                                   bundle=parameters.bundle, allowUnknownBundle=allow_unknown)
        seed_ras = self.logic.seedPosition(parameters.seedNode, self._seed_point_id(parameters.seedNode))
        return self.logic.prepareRequest(parameters.inputVolume, seed_ras,
                                         parameters.device, parameters.halfExtentMm, method=parameters.method,
                                         bundle=parameters.bundle, allowUnknownBundle=allow_unknown)

    def _confirm_unknown_bundle(self, bundle_dir: Path) -> Optional[bool]:
        """False for a shipped bundle; True once the user confirms an unknown one (asked once per
        bundle content and session); None when they decline."""
        try:
            check_trust(bundle_dir, allow_unknown=False)
            return False
        except UntrustedBundleError as refusal:
            digest = bundle_digest(bundle_dir)
            if digest in self._allowed_bundle_digests:
                return True
            if not self.view.ask(_("{refusal}\n\nRun this model bundle anyway?").format(refusal=refusal),
                                 _("Unknown model bundle")):
                return None
            self._allowed_bundle_digests.add(digest)
            return True

    def _seed_point_id(self, seed_node: Any) -> Optional[str]:
        """The ID of the point of ``seed_node`` last placed or dragged; None: none was (its first point)."""
        if self._seed_point is None or seed_node is None or self._seed_point[0] != seed_node.GetID():
            return None
        return self._seed_point[1]

    def _reexplain_if_choice_changed(self) -> None:
        parameters = self.parameters
        if not (parameters.overlayVolume and self.logic.hasSeed(parameters.seedNode,
                                                                self._seed_point_id(parameters.seedNode))):
            return
        if self._choice_shown_or_tried is None:
            # The overlay records its method; its bundle is the one saved beside it in the parameter node.
            self._choice_shown_or_tried = (mrml_overlay.overlay_method(parameters.overlayVolume), parameters.bundle)
        if (parameters.method, parameters.bundle) != self._choice_shown_or_tried:
            self._choice_shown_or_tried = (parameters.method, parameters.bundle)
            self.debounce_timer.start()
