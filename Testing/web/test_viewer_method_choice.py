"""The page's Method choice, in-process on a real viewer (trame server not started): a chosen method
explains the current seed again with its map and legend; a method whose packages are missing is
refused with the pip command, and the choice goes back."""

from __future__ import annotations

import asyncio
import sys

import pytest
from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib import mrml_overlay
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS
from CycleGANExplainLib.overlay import legend_entries, rgb_hex


@pytest.fixture(scope="module")
def viewer():
    app = viewer_module.ExplainViewer(server=get_server("method-choice-test", client_type="vue3"), device="cpu")
    app.state.ready()  # what starting the server does: from now on state changes call the @change handlers
    app.load_sample()
    assert app.volume_node is not None, app.state.error_text
    return app


def explain_seed(viewer) -> None:
    async def scenario():
        viewer.request_explanation(viewer_module.sample_nodule_ras(), "axial")
        while viewer._explaining:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())


def shown_legend(viewer) -> list:
    return [(entry["colour"], entry["meaning"]) for entry in viewer.state.legend]


def test_every_method_is_offered_with_cyclegan_am_chosen(viewer):
    assert [item["value"] for item in viewer.state.method_choices] == list(METHODS)
    assert [item["title"] for item in viewer.state.method_choices] == [method.label for method in METHODS.values()]
    assert viewer.state.method == DEFAULT_METHOD
    assert shown_legend(viewer) == [(rgb_hex(rgb), meaning) for rgb, meaning in legend_entries(DEFAULT_METHOD)]


def test_a_chosen_method_explains_the_seed_again_with_its_map_and_legend(viewer, choose_in):
    explain_seed(viewer)
    assert viewer.state.has_result and mrml_overlay.overlay_method(viewer.overlay_node) == DEFAULT_METHOD
    cyclegan_am_probability = viewer.state.p_x
    choose_in(viewer, "method", "saliency")
    assert mrml_overlay.overlay_method(viewer.overlay_node) == "saliency", viewer.state.error_text
    assert viewer.state.method_text == "Saliency (|gradient|) (captum)"
    assert viewer.state.map_title == METHODS["saliency"].map_title
    assert shown_legend(viewer) == [(rgb_hex(rgb), meaning) for rgb, meaning in legend_entries("saliency")]
    assert "unsigned" in viewer.state.legend[0]["meaning"] and len(viewer.state.legend) == 1
    assert viewer.state.p_x == cyclegan_am_probability  # the probabilities come from the same networks
    choose_in(viewer, "method", DEFAULT_METHOD)
    assert mrml_overlay.overlay_method(viewer.overlay_node) == DEFAULT_METHOD


def test_a_method_whose_packages_are_missing_is_refused_with_the_pip_command(viewer, monkeypatch, choose_in):
    explain_seed(viewer)
    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    choose_in(viewer, "method", "occlusion")
    assert "Could not use Occlusion" in viewer.state.error_text and "pip install" in viewer.state.error_text
    assert viewer.state.method == DEFAULT_METHOD and viewer.method == DEFAULT_METHOD
    assert mrml_overlay.overlay_method(viewer.overlay_node) == DEFAULT_METHOD


def test_a_key_the_page_does_not_list_is_refused(viewer, choose_in):
    choose_in(viewer, "method", "../../some-method")
    assert "is not one of the listed methods" in viewer.state.error_text
    assert viewer.state.method == DEFAULT_METHOD
