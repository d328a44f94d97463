"""The page says when an explanation failed, in-process on a real viewer (trame server not started): the
caveats of the explained seed (caveats.explanation_caveats) are in the page's state and in its template."""

from __future__ import annotations

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib.caveats import G_NEG_NOT_BENIGN, LESION_FILLS_PATCH
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE

# On the synthetic sample CT, in the mediastinum: the shipped default bundle's G-(x) stops at p about 0.89, and the
# soft tissue fills the patch.
MEDIASTINUM_RAS = (-10.0, 40.0, -20.0)


def test_a_failed_counterfactual_and_a_structure_filling_the_patch_are_shown_then_cleared(synthetic_viewer,
                                                                                           explain_in):
    viewer, explain_at = synthetic_viewer, explain_in
    assert 'id="caveats"' in viewer.ui.html and "caveat in caveats" in viewer.ui.html
    explain_at(viewer, MEDIASTINUM_RAS)
    assert viewer.state.has_result, viewer.state.error_text
    assert [caveat["code"] for caveat in viewer.state.caveats] == [G_NEG_NOT_BENIGN, LESION_FILLS_PATCH]
    assert viewer.state.caveats[0]["text"].startswith(
        f"G-(x) did not reach benign (p = {viewer.state.p_neg}, not below 0.500)")
    explain_at(viewer, viewer_module.sample_nodule_ras("N2", SYNTHETIC_SAMPLE))  # the spiculated nodule: explained without caveats
    assert viewer.state.has_result and viewer.state.caveats == []
