"""The module's method choice on a real MRML scene: one overlay node whatever the method, method recorded."""

from __future__ import annotations

import sys
import typing

import numpy as np
import pytest

from CycleGANExplainLib import mrml_overlay
from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS, MissingDependencyError, missing_packages
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_volume_path


def overlay_nodes(scene) -> list:
    return [
        scene.GetNthNode(index)
        for index in range(scene.GetNumberOfNodes())
        if scene.GetNthNode(index).GetAttribute(mrml_overlay.ROLE_ATTRIBUTE) == mrml_overlay.OVERLAY_ROLE
    ]


def test_switching_methods_updates_the_same_overlay_node(module, scene_app, synthetic_ct, nodule_ras):
    import slicer

    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    ours = logic.explain(volume, nodule_ras, device="cpu", halfExtentMm=2.0)
    ours_map = slicer.util.arrayFromVolume(ours.overlay_node).copy()
    count = scene_app.scene.GetNumberOfNodes()
    for method in ("saliency", "integrated-gradients", DEFAULT_METHOD):
        result = logic.explain(volume, nodule_ras, device="cpu", halfExtentMm=2.0, method=method)
        assert result.overlay_node is ours.overlay_node
        assert scene_app.scene.GetNumberOfNodes() == count and len(overlay_nodes(scene_app.scene)) == 1
        assert result.batch.method == method
        assert mrml_overlay.overlay_method(result.overlay_node) == method
        assert METHODS[method].label in result.overlay_node.GetName()
        shown = slicer.util.arrayFromVolume(result.overlay_node)
        np.testing.assert_allclose(shown, [item.relevance for item in result.batch], atol=1e-7)
        display = result.overlay_node.GetScalarVolumeDisplayNode()
        assert display.GetWindowLevelMin() == pytest.approx(-display.GetWindowLevelMax())
        if method == DEFAULT_METHOD:
            np.testing.assert_allclose(shown, ours_map, atol=1e-6)
        else:
            assert not np.allclose(shown, ours_map, atol=1e-4)


def test_missing_package_leaves_the_shown_overlay_alone(module, scene_app, synthetic_ct, nodule_ras, monkeypatch):
    import slicer

    logic = module.CycleGANExplainLogic()
    volume = scene_app.load_volume(synthetic_ct)
    ours = logic.explain(volume, nodule_ras, device="cpu")
    before = slicer.util.arrayFromVolume(ours.overlay_node).copy()
    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    assert "captum" in missing_packages("integrated-gradients")
    with pytest.raises(MissingDependencyError, match="pip install"):
        logic.explain(volume, nodule_ras, device="cpu", method="integrated-gradients")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ours.overlay_node), before)
    assert mrml_overlay.overlay_method(ours.overlay_node) == DEFAULT_METHOD


def test_self_test_baseline_check_on_the_sample_nodule(module, scene_app):
    missing = missing_packages(module.BASELINE_SELF_TEST_METHOD)
    if missing:
        pytest.skip(f"{module.BASELINE_SELF_TEST_METHOD} needs {missing}")
    volume = scene_app.load_volume(sample_volume_path(SYNTHETIC_SAMPLE), SYNTHETIC_SAMPLE)
    enrichment = module.CycleGANExplainTest().checkBaselineExplanation(volume)
    assert enrichment >= module.BASELINE_MINIMUM_ENRICHMENT


def test_method_parameter_offers_every_method_with_cyclegan_am_first(module):
    hints = typing.get_type_hints(module.CycleGANExplainParameterNode, include_extras=True)
    choice = typing.get_args(hints["method"])[1]
    assert list(choice.choices) == list(METHODS)  # the combo box lists them in this order
    assert module.CycleGANExplainParameterNode.method == DEFAULT_METHOD == "cyclegan-am"


def test_legend_names_the_method_and_flags_unsigned_maps():
    from CycleGANExplainLib.overlay import BENIGN_RGB, MALIGNANT_RGB, legend_html, rgb_hex

    assert rgb_hex(MALIGNANT_RGB) == "#b2182b" and rgb_hex(BENIGN_RGB) == "#2166ac"  # ColorBrewer RdBu
    for key, info in METHODS.items():
        legend = legend_html(key)
        assert info.label in legend and info.reading in legend
        assert ("unsigned" in legend and "magnitude" in legend) == (not info.signed), key
        assert ("blue = benign-indicating" in legend) == info.signed, key
        assert ("#2166ac" in legend) == info.signed and "#b2182b" in legend, key
