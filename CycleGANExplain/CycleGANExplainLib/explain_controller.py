"""The module panel's behaviour without Qt: when to explain, what to ask first, what to show.

The Slicer widget builds the panel and hands every event here (seed placed or moved, parameter
changed, Explain clicked, timer fired); this class decides. It takes the logic, the installer,
the panel (``view``) and two timers as arguments, so it runs on a bare MRML scene in the tests:
in Slicer the timers are QTimers and the view is the widget.

- Moving the seed restarts a single-shot timer (the debounce): dragging explains once, when the
  point rests, and only with auto-update on.
- Choosing another method or bundle re-explains the shown map once per choice: a failed attempt
  is not retried on every later parameter change.
- The networks run in ``BackgroundExplainer``'s worker; the poll timer delivers the result on the
  GUI thread, and a result for a volume no longer chosen is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from . import mrml_explain, mrml_overlay
from .attribution_methods import DEFAULT_METHOD
from .background_explainer import BackgroundExplainer
from .model_bundle import UntrustedBundleError, bundle_digest, check_trust
from .package_installer import DependencyInstaller
from .translation import tr as _


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


EXPLAIN_FAILED = _("Could not explain the seed point.")


class ExplainController:
    def __init__(self, logic: Any, installer: DependencyInstaller, view: PanelView, debounce_timer: Timer,
                 poll_timer: Timer, compute: Callable = mrml_explain.compute) -> None:
        """``logic``: a ``CycleGANExplainLogic``; ``debounce_timer`` calls ``explain`` when it fires
        and ``poll_timer`` calls ``poll`` repeatedly while it runs (the caller connects them)."""
        self.logic = logic
        self.installer = installer
        self.view = view
        self.debounce_timer = debounce_timer
        self.poll_timer = poll_timer
        self.explainer = BackgroundExplainer(compute, self.on_done, self.on_failed)
        self.parameters: Any = None
        self._choice_shown_or_tried: Optional[tuple] = None
        self._allowed_bundle_digests: set = set()  # unknown bundles the user confirmed in this session

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

    def seed_moved(self, seed_node: Any) -> None:
        """A point was placed or moved: a second placed point moves the seed there (the node keeps
        one point), and the seed's rest position is explained when auto-update is on."""
        if seed_node is not None and self.logic.keepNewestSeed(seed_node):
            return  # the move fires another point event, which comes back here
        if self.parameters is not None and self.parameters.autoUpdate and self.logic.hasSeed(seed_node):
            self.debounce_timer.start()

    def explain(self) -> None:
        """Check and read the request on this thread, then compute it in the worker (a newer seed
        supersedes one still running). Errors are shown, never raised into Qt."""
        parameters = self.parameters
        if parameters is None:
            return
        # Cleared first: if this explanation fails, no earlier seed's figures stay on screen as if current.
        self.view.clear_result()
        self._choice_shown_or_tried = (parameters.method, parameters.bundle)
        try:
            request = self._prepare_request(parameters)
        except Exception as error:  # noqa: BLE001 - every failure is the user's to read
            logging.error("Explanation failed", exc_info=True)
            self.view.show_error(EXPLAIN_FAILED, error)
            return
        if request is None:
            return
        self.explainer.submit(request)
        self.view.set_busy(True)
        self.view.show_status(_("Explaining the seed point..."))
        self.poll_timer.start()

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

    def on_done(self, request: mrml_explain.ExplainRequest, batch: Any) -> None:
        parameters = self.parameters
        if parameters is None or parameters.inputVolume is None or \
                parameters.inputVolume.GetID() != request.volume_node.GetID():
            return  # the module was left, or another volume chosen, while it ran
        result = self.logic.showExplanation(request, batch, parameters.overlayOpacity, parameters.showOverlay)
        parameters.overlayVolume = result.overlay_node
        self.view.show_result(result)

    def on_failed(self, request: mrml_explain.ExplainRequest, error: BaseException) -> None:
        logging.error("Explanation failed", exc_info=(type(error), error, error.__traceback__))
        self.view.show_error(EXPLAIN_FAILED, error)

    # --- helpers ---------------------------------------------------------------------------------

    def _prepare_request(self, parameters: Any) -> Optional[mrml_explain.ExplainRequest]:
        """The request, after torch, the method's packages and trust in the bundle are settled;
        None when the user declined one of them."""
        if not self.installer.ensure_torch():
            return None
        if not self.installer.ensure_method_packages(parameters.method):
            parameters.method = DEFAULT_METHOD  # the user declined: back to the method that needs nothing more
            return None
        allow_unknown = self._confirm_unknown_bundle(self.logic.bundleDirFor(parameters.bundle))
        if allow_unknown is None:
            return None
        return self.logic.prepareRequest(parameters.inputVolume, self.logic.seedPosition(parameters.seedNode),
                                         parameters.device, parameters.neighbourSlices, method=parameters.method,
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

    def _reexplain_if_choice_changed(self) -> None:
        parameters = self.parameters
        if not (parameters.overlayVolume and self.logic.hasSeed(parameters.seedNode)):
            return
        if self._choice_shown_or_tried is None:
            # The overlay records its method; its bundle is the one saved beside it in the parameter node.
            self._choice_shown_or_tried = (mrml_overlay.overlay_method(parameters.overlayVolume), parameters.bundle)
        if (parameters.method, parameters.bundle) != self._choice_shown_or_tried:
            self._choice_shown_or_tried = (parameters.method, parameters.bundle)
            self.debounce_timer.start()
