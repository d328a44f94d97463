"""The panel's behaviour (ExplainController) with the module's real Logic on a real MRML scene.

The controller is what the widget hands its events to. Here the real Logic, installer and
background explainer run; the two Qt timers and the dialogs are the parts that need Slicer's
application, so a ManualTimer (fired by the test) and a RecordingPanel (answers questions as told
and records what the panel was asked to show) stand in for them.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from CycleGANExplainLib import mrml_overlay
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD
from CycleGANExplainLib.explain_controller import EXPLAIN_FAILED, ExplainController
from CycleGANExplainLib.package_installer import DependencyInstaller

from .qt_stand_ins import ManualTimer

BASELINE = "saliency"


class RecordingPanel:
    """STAND-IN for the widget's dialogs and labels (explain_controller.PanelView)."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.questions, self.messages, self.errors, self.results = [], [], [], []
        self.busy = False
        self.cleared = 0

    def ask(self, question: str, title: str) -> bool:
        self.questions.append((title, question))
        return self.answer

    def tell(self, message: str, title: str) -> None:
        self.messages.append((title, message))

    def show_error(self, message: str, error: BaseException) -> None:
        self.errors.append((message, str(error)))

    def show_status(self, message: str, duration_ms: int = 0) -> None:
        pass

    def set_busy(self, busy: bool) -> None:
        self.busy = busy

    def clear_result(self) -> None:
        self.cleared += 1

    def show_result(self, result) -> None:
        self.results.append(result)


class Panel:
    """A controller wired as the widget wires it, with its parameter node on the scene."""

    def __init__(self, module, scene_app, volume, answer: bool = True) -> None:
        self.view = RecordingPanel(answer)
        self.debounce, self.poll_timer = ManualTimer(), ManualTimer()
        self.logic = module.CycleGANExplainLogic()
        installer = DependencyInstaller(self.view.ask, self.view.tell, self.view.show_status,
                                        pip_install=self._refuse_pip)
        self.controller = ExplainController(self.logic, installer, self.view, self.debounce, self.poll_timer)
        self.parameters = self.logic.getParameterNode()
        self.parameters.device = "cpu"
        self.logic.completeParameters(self.parameters)
        assert self.parameters.inputVolume is volume
        self.controller.set_parameters(self.parameters)

    @staticmethod
    def _refuse_pip(arguments) -> None:
        raise AssertionError(f"no install expected here: pip {arguments}")

    def fire_debounce(self) -> None:
        assert self.debounce.active, "the debounce timer was not running"
        self.debounce.active = False
        self.controller.explain()

    def wait(self, timeout_s: float = 60.0) -> None:
        """Poll as the poll timer would until the worker's result is delivered."""
        deadline = time.monotonic() + timeout_s
        while self.poll_timer.active:
            assert time.monotonic() < deadline, "the explanation did not finish"
            self.controller.poll()
            time.sleep(0.01)

    def place(self, ras) -> None:
        self.logic.placeSeed(self.parameters.seedNode, ras)
        self.controller.seed_placed(self.parameters.seedNode, 0)


@pytest.fixture
def panel(module, scene_app, synthetic_ct):
    volume = scene_app.load_volume(synthetic_ct)
    made = Panel(module, scene_app, volume)
    yield made
    made.controller.shutdown()


def overlay_centre_ras(overlay_node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    overlay_node.GetIJKToRASMatrix(matrix)
    # The seed's slice is the middle one of the stack: these seeds lie far from the CT's first and last slices.
    middle = (overlay_node.GetImageData().GetDimensions()[2] - 1) / 2
    return (slicer.util.arrayFromVTKMatrix(matrix) @ [31.5, 31.5, middle, 1.0])[:3]


def test_dragging_the_seed_explains_once_where_it_rests(panel, nodule_ras):
    for step in range(5):  # a drag: five moves before the point rests
        panel.place(nodule_ras + [step * 0.5, 0.0, 0.0])
        assert not panel.poll_timer.active, "nothing may run before the seed rests"
    assert panel.debounce.starts == 5
    panel.fire_debounce()
    panel.wait()
    assert len(panel.view.results) == 1 and not panel.view.errors
    np.testing.assert_allclose(overlay_centre_ras(panel.view.results[0].overlay_node), nodule_ras + [2.0, 0.0, 0.0],
                               atol=1e-6)
    assert panel.parameters.overlayVolume is panel.view.results[0].overlay_node
    assert not panel.view.busy


def test_without_auto_update_moving_the_seed_explains_nothing(panel, nodule_ras):
    panel.parameters.autoUpdate = False
    panel.place(nodule_ras)
    assert panel.debounce.starts == 0
    panel.controller.explain()  # the Explain button still does
    panel.wait()
    assert len(panel.view.results) == 1


def test_a_second_placed_point_moves_the_seed_and_explains_there(panel, nodule_ras):
    panel.place(nodule_ras)
    seed = panel.parameters.seedNode
    index = seed.AddControlPointWorld(*map(float, nodule_ras + [0.0, 3.0, 0.0]))  # a new click with Place
    panel.controller.seed_placed(seed, index)
    assert seed.GetNumberOfControlPoints() == 1
    panel.fire_debounce()
    panel.wait()
    np.testing.assert_allclose(overlay_centre_ras(panel.view.results[-1].overlay_node), nodule_ras + [0.0, 3.0, 0.0],
                               atol=1e-6)


def test_another_method_re_explains_the_shown_map_once(panel, nodule_ras):
    panel.place(nodule_ras)
    panel.fire_debounce()
    panel.wait()
    panel.controller.parameters_modified()  # e.g. the opacity slider: no new explanation
    assert not panel.debounce.active

    panel.parameters.method = BASELINE
    panel.controller.parameters_modified()
    panel.fire_debounce()
    panel.wait()
    assert mrml_overlay.overlay_method(panel.parameters.overlayVolume) == BASELINE
    assert panel.view.results[-1].overlay_node is panel.view.results[0].overlay_node
    panel.controller.parameters_modified()
    panel.controller.parameters_modified()
    assert not panel.debounce.active, "the same choice must not be explained again"


def test_a_failed_choice_is_not_retried_on_every_change(panel, nodule_ras, tmp_path):
    panel.place(nodule_ras)
    panel.fire_debounce()
    panel.wait()
    panel.parameters.bundle = "no-such-bundle"
    panel.controller.parameters_modified()
    panel.fire_debounce()
    assert panel.view.errors and panel.view.errors[-1][0] == EXPLAIN_FAILED
    assert "no-such-bundle" in panel.view.errors[-1][1]
    for _ in range(3):
        panel.controller.parameters_modified()
    assert not panel.debounce.active
    assert len(panel.view.errors) == 1


def test_declining_a_baselines_packages_goes_back_to_cyclegan_am(panel, nodule_ras, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    panel.view.answer = False
    panel.parameters.method = BASELINE
    panel.place(nodule_ras)
    panel.fire_debounce()
    assert not panel.poll_timer.active and not panel.view.results
    [(title, question)] = panel.view.questions
    assert "captum" in question and BASELINE.capitalize() in title
    [(_, message)] = panel.view.messages
    assert "captum is not installed" in message and "CycleGAN-AM" in message
    assert panel.parameters.method == DEFAULT_METHOD


def test_a_seed_outside_the_volume_is_an_error_the_user_reads(panel):
    panel.place([500.0, 500.0, 500.0])
    panel.fire_debounce()
    [(message, detail)] = panel.view.errors
    assert message == EXPLAIN_FAILED and "outside" in detail
    assert not panel.poll_timer.active and not panel.view.busy
    assert panel.view.cleared >= 1


def test_a_result_for_a_volume_no_longer_chosen_is_dropped(panel, scene_app, synthetic_ct, nodule_ras):
    panel.place(nodule_ras)
    panel.fire_debounce()
    panel.parameters.inputVolume = scene_app.load_volume(synthetic_ct, "another CT")
    panel.wait()
    assert not panel.view.results and not panel.view.errors
    assert panel.parameters.overlayVolume is None


def test_cancel_discards_the_running_explanation(panel, nodule_ras):
    panel.place(nodule_ras)
    panel.fire_debounce()
    panel.controller.cancel()
    assert not panel.view.busy
    panel.wait()
    assert not panel.view.results


def test_an_unknown_bundle_runs_only_once_confirmed_and_is_asked_about_once(panel, nodule_ras, tiny_bundle,
                                                                             monkeypatch):
    monkeypatch.setattr(panel.logic, "bundleDirFor", lambda bundle=None: tiny_bundle)
    panel.view.answer = False
    panel.place(nodule_ras)
    panel.fire_debounce()
    assert len(panel.view.questions) == 1 and "Run this model bundle anyway?" in panel.view.questions[0][1]
    assert not panel.poll_timer.active and not panel.view.results

    panel.view.answer = True
    for _ in range(2):
        panel.controller.explain()
        panel.wait()
    assert len(panel.view.questions) == 2, "confirmed once, not asked again in this session"
    assert len(panel.view.results) == 2 and not panel.view.errors
    assert any("was not shipped" in warning for warning in panel.view.results[-1].batch.warnings)


def test_leaving_the_module_stops_a_pending_re_explain(panel, nodule_ras):
    panel.place(nodule_ras)
    assert panel.debounce.active
    panel.controller.set_parameters(None)
    assert not panel.debounce.active
    panel.controller.explain()  # a timer that fired anyway does nothing
    assert not panel.poll_timer.active and not panel.view.errors


def test_clicks_and_timers_during_a_package_install_start_no_second_install(panel, nodule_ras, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # missing until the "install" below
    installs = []

    def pip_install(arguments) -> None:
        # pip_install's logging calls processEvents(): a click on Explain and the debounce timer land here.
        installs.append(arguments)
        panel.place(nodule_ras + [0.0, 2.0, 0.0])
        panel.controller.explain()
        panel.controller.explain()
        del sys.modules["captum"]  # installed

    panel.controller.installer = DependencyInstaller(panel.view.ask, panel.view.tell, panel.view.show_status,
                                                     pip_install=pip_install)
    panel.parameters.method = BASELINE
    panel.place(nodule_ras)
    panel.fire_debounce()
    assert len(installs) == 1 and len(panel.view.questions) == 1 and not panel.view.errors
    # The request prepared after the install reads the seed as it is then; one more explanation follows.
    panel.wait()
    np.testing.assert_allclose(overlay_centre_ras(panel.view.results[-1].overlay_node), nodule_ras + [0.0, 2.0, 0.0],
                               atol=1e-6)
    panel.fire_debounce()
    panel.wait()
    assert len(installs) == 1 and len(panel.view.questions) == 1 and len(panel.view.results) == 2


def test_clicks_during_a_torch_install_start_no_second_install(panel, nodule_ras, monkeypatch):
    import importlib.util
    import types

    real_find_spec = importlib.util.find_spec
    installed = []
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" and not installed else real_find_spec(name, *args))

    class PyTorchUtilsLogic:  # STAND-IN for the PyTorch extension; its install processes Qt events
        def torchInstalled(self) -> bool:
            return bool(installed)

        def installTorch(self, **kwargs):
            panel.controller.explain()  # a click on Explain while the install runs
            installed.append(kwargs)
            return object()

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    panel.controller.installer = DependencyInstaller(panel.view.ask, panel.view.tell, panel.view.show_status,
                                                     pip_install=Panel._refuse_pip)
    panel.place(nodule_ras)
    panel.fire_debounce()
    panel.wait()
    assert len(installed) == 1 and len(panel.view.questions) == 1 and len(panel.view.results) == 1
    assert panel.debounce.active, "the click during the install is explained once it is done"
