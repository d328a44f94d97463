"""The page's "Through the nodule (±)" field, in-process on a real viewer (trame server not started): the
current seed explained again over the chosen half-extent (0: one slice; 5 mm: the slices nodule_stack plans for
this CT), an out-of-range value refused with a message on the page, the setting kept for the next click; the
field's range and step those of nodule_stack and of the module's .ui file."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib import mrml_explain
from CycleGANExplainLib.nodule_stack import (DEFAULT_HALF_EXTENT_MM, HALF_EXTENT_CONTROL_STEP_MM, MAX_HALF_EXTENT_MM,
                                             plan_stack)
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE

MODULE_UI = Path(__file__).resolve().parents[2] / "CycleGANExplain" / "Resources" / "UI" / "CycleGANExplain.ui"


def overlay_slices(viewer) -> int:
    import slicer

    relevance = slicer.util.arrayFromVolume(viewer.overlay_node)
    assert relevance.shape[1:] == (64, 64)
    return relevance.shape[0]


def planned(viewer, ras, half_extent_mm: float):
    voxels, ijk_to_ras = mrml_explain.volume_array_and_geometry(viewer.volume_node)
    return plan_stack(voxels, ijk_to_ras, ras, half_extent_mm)


@pytest.fixture(scope="module")
def explained(synthetic_viewer, explain_in):
    ras = viewer_module.sample_nodule_ras("N2", SYNTHETIC_SAMPLE)
    explain_in(synthetic_viewer, ras)
    assert synthetic_viewer.state.has_result, synthetic_viewer.state.error_text
    return synthetic_viewer, ras


def test_the_field_starts_at_the_default_with_the_modules_range_and_step(synthetic_viewer):
    assert synthetic_viewer.state.half_extent_mm == DEFAULT_HALF_EXTENT_MM == synthetic_viewer.half_extent_mm
    page = synthetic_viewer.ui.html
    field = re.search(r"<VNumberInput id=\"half-extent-input\"[^>]*>", page, re.S).group(0)
    assert 'label="Through the nodule (±)"' in field and 'suffix="mm"' in field
    assert f':max="{MAX_HALF_EXTENT_MM:g}"' in field and f':step="{HALF_EXTENT_CONTROL_STEP_MM:g}"' in field
    assert ':min="0"' in field
    # The module's slider (Qt Designer file): the same label, maximum and step.
    widgets = {widget.get("name"): widget for widget in ElementTree.parse(MODULE_UI).iter("widget")}
    assert widgets["halfExtentLabel"].find("property/string").text.startswith("Through the nodule (±)")
    slider = {prop.get("name"): prop[0].text for prop in widgets["halfExtentSliderWidget"].iter("property")}
    assert float(slider["maximum"]) == MAX_HALF_EXTENT_MM and float(slider["singleStep"]) == HALF_EXTENT_CONTROL_STEP_MM


def test_zero_explains_the_seeds_slice_alone(explained, choose_in):
    viewer, ras = explained
    choose_in(viewer, "half_extent_mm", 0)
    assert viewer.state.error_text == "" and viewer.half_extent_mm == 0.0
    assert overlay_slices(viewer) == 1 and len(viewer.shown_result.stack) == 1
    np.testing.assert_allclose(viewer.shown_result.stack.centre.seed_ras, ras, atol=1e-6)
    assert viewer.state.slice_plot_svg == "" and viewer.state.slice_plot_text == ""  # one slice: nothing to plot


def test_five_mm_explains_the_slices_nodule_stack_plans_for_this_ct(explained, choose_in):
    viewer, ras = explained
    choose_in(viewer, "half_extent_mm", "5")  # a number field's value arrives as text
    plan = planned(viewer, ras, 5.0)
    assert len(plan) == 5  # the synthetic CT's 2.5 mm slices: -5 to +5 mm
    assert overlay_slices(viewer) == len(plan)
    np.testing.assert_allclose(viewer.shown_result.stack.offsets_mm, plan.offsets_mm)
    # The per-slice probabilities: one line per probability, one point per slice, the stack's own values.
    svg = viewer.state.slice_plot_svg
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert len(lines) == 3 and all(len(points.split()) == len(plan) for points in lines)
    heights = np.array([float(point.split(",")[1]) for point in lines[0].split()])
    height = viewer_module.SLICE_PLOT_SIZE[1]
    np.testing.assert_allclose(heights, 2 + (height - 4) * (1 - viewer.shown_result.stack.p_x), atol=0.06)
    assert viewer.state.slice_plot_text == "Per slice, -5.0 to +5.0 mm along S (5 slices)"


@pytest.mark.parametrize("value", [MAX_HALF_EXTENT_MM + 2.5, -2.5, "ten"])
def test_a_value_out_of_range_is_refused_with_a_message_and_the_field_goes_back(explained, value, choose_in):
    viewer, ras = explained
    choose_in(viewer, "half_extent_mm", 5.0)
    shown = viewer.shown_result
    choose_in(viewer, "half_extent_mm", value)
    assert viewer.state.error_text.startswith("Could not use that extent through the nodule: The half-extent through "
                                              f"the nodule must be a distance from 0 to {MAX_HALF_EXTENT_MM:g} mm")
    assert repr(value) in viewer.state.error_text
    assert viewer.state.half_extent_mm == 5.0 and viewer.half_extent_mm == 5.0
    assert viewer.shown_result is shown and viewer.state.has_result  # the result shown stays, not re-explained
    assert overlay_slices(viewer) == 5


def test_the_setting_is_kept_for_a_new_click(explained, explain_in, choose_in):
    viewer, _ = explained
    choose_in(viewer, "half_extent_mm", 7.5)
    other = viewer_module.sample_nodule_ras("N1", SYNTHETIC_SAMPLE)
    explain_in(viewer, other)
    assert viewer.state.has_result, viewer.state.error_text
    plan = planned(viewer, other, 7.5)
    assert len(plan) == 7 and overlay_slices(viewer) == len(plan)
    np.testing.assert_allclose(viewer.shown_result.stack.centre.seed_ras, other, atol=1e-6)
    assert viewer.state.half_extent_mm == 7.5
