"""The module's bundle choice on a real MRML scene: the parameter node offers the shipped bundles,
and the Logic explains with the one chosen, into the same overlay node."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from CycleGANExplainLib.model_bundle import BundleError, UntrustedBundleError, default_bundle_dir, read_metadata, shipped_bundles


def test_bundle_parameter_offers_the_shipped_bundles_with_the_default_selected(module):
    hints = typing.get_type_hints(module.CycleGANExplainParameterNode, include_extras=True)
    choice = typing.get_args(hints["bundle"])[1]
    assert list(choice.choices) == [path.name for path in shipped_bundles()] == module.shippedBundleNames()
    assert module.CycleGANExplainParameterNode.bundle == default_bundle_dir().name
    assert module.CycleGANExplainParameterNode.bundle in choice.choices


def test_logic_explains_with_the_chosen_bundle_into_the_same_overlay(module, scene_app, synthetic_ct, nodule_ras,
                                                                     tiny_bundle):
    import slicer

    logic = module.CycleGANExplainLogic()
    assert logic.bundleDir == default_bundle_dir()
    volume = scene_app.load_volume(synthetic_ct)
    shipped = shipped_bundles()[0]
    by_name = logic.explain(volume, nodule_ras, device="cpu", bundle=shipped.name)  # what the widget passes
    assert by_name.batch.bundle_name == "{0.name} {0.version}".format(read_metadata(shipped))
    shown = slicer.util.arrayFromVolume(by_name.overlay_node).copy()
    count = scene_app.scene.GetNumberOfNodes()

    with pytest.raises(UntrustedBundleError, match="not one of the bundles shipped with CycleGANExplain"):
        logic.explain(volume, nodule_ras, device="cpu", bundle=str(tiny_bundle))  # the widget asks first
    assert scene_app.scene.GetNumberOfNodes() == count
    by_path = logic.explain(volume, nodule_ras, device="cpu", bundle=str(tiny_bundle), allowUnknownBundle=True)
    tiny = read_metadata(tiny_bundle)
    assert by_path.batch.bundle_name == f"{tiny.name} {tiny.version}" and by_path.batch.trained is False
    assert by_path.overlay_node is by_name.overlay_node and scene_app.scene.GetNumberOfNodes() == count
    assert not np.allclose(slicer.util.arrayFromVolume(by_path.overlay_node), shown, atol=1e-4)
    assert by_path.batch[0].p_x != pytest.approx(by_name.batch[0].p_x, abs=1e-6)

    assert logic.bundleMetadata(shipped.name).name == read_metadata(shipped).name
    assert module.CycleGANExplainLogic(tiny_bundle).bundleMetadata().name == tiny.name


def test_unknown_bundle_is_refused_naming_the_shipped_ones(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    with pytest.raises(BundleError, match=f"Shipped bundles: {shipped_bundles()[0].name}"):
        module.CycleGANExplainLogic().explain(volume, nodule_ras, device="cpu", bundle="no-such-bundle")
