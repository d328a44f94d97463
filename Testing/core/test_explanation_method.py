"""explain(method=...): a baseline's map beside the same probabilities, checks before inference, CUDA fallback."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from CycleGANExplainLib.attribution_methods import METHODS, MissingDependencyError, attribute
from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.overlay import colour_legend
from CycleGANExplainLib.model_bundle import load_bundle

SEEDS = [[0.0, 0.0, 0.0], [10.0, -5.0, 2.5]]
BASELINE = "integrated-gradients"


class MustNotRun(torch.nn.Module):
    """A network that fails the test if anything reaches inference."""

    def forward(self, images):
        raise AssertionError("inference ran before the method was checked")


def test_baseline_relevance_is_the_methods_map_with_the_same_probabilities(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    ours = explain(volume, ijk_to_ras, SEEDS, bundle)
    theirs = explain(volume, ijk_to_ras, SEEDS, bundle, method=BASELINE)
    assert (ours.method, theirs.method) == ("cyclegan-am", BASELINE)
    assert theirs.method_label == METHODS[BASELINE].label
    expected = attribute(BASELINE, bundle, np.stack([item.x for item in ours.explanations]))
    for index, (mine, baseline) in enumerate(zip(ours.explanations, theirs.explanations)):
        np.testing.assert_allclose(baseline.relevance, expected[index], rtol=1e-4, atol=1e-6)
        assert baseline.relevance.dtype == np.float32 and baseline.relevance.shape == (64, 64)
        assert not np.allclose(baseline.relevance, mine.relevance, atol=1e-4)
        assert (baseline.p_x, baseline.p_pos, baseline.p_neg) == pytest.approx((mine.p_x, mine.p_pos, mine.p_neg),
                                                                                abs=1e-6)
        np.testing.assert_allclose(baseline.g_pos, mine.g_pos, atol=1e-6)


def test_unknown_method_is_refused_before_inference(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    untouchable = dataclasses.replace(load_bundle(tiny_bundle, "cpu", allow_unknown=True), generator_pos=MustNotRun())
    with pytest.raises(ValueError, match="deep-dream") as error:
        explain(volume, ijk_to_ras, SEEDS, untouchable, method="deep-dream")
    assert "integrated-gradients" in str(error.value)  # the known methods are listed


def test_missing_package_is_refused_before_inference(lung_volume, tiny_bundle, monkeypatch):
    volume, ijk_to_ras = lung_volume
    untouchable = dataclasses.replace(load_bundle(tiny_bundle, "cpu", allow_unknown=True), generator_pos=MustNotRun())
    monkeypatch.setitem(sys.modules, "zennit", None)  # how Python marks a module as not importable
    with pytest.raises(MissingDependencyError, match="zennit") as error:
        explain(volume, ijk_to_ras, SEEDS, untouchable, method="lrp")
    assert "pip install" in str(error.value)


def test_cuda_out_of_memory_falls_back_to_cpu_for_a_baseline(lung_volume, tiny_bundle):
    class CudaOutOfMemoryStandIn(torch.nn.Module):
        """Raises what an exhausted GPU raises (no GPU exists on these machines)."""

        def forward(self, images):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    volume, ijk_to_ras = lung_volume
    real = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    exhausted_gpu = dataclasses.replace(real, generator_neg=CudaOutOfMemoryStandIn(), warnings=[])
    batch = explain(volume, ijk_to_ras, SEEDS[:1], exhausted_gpu, method=BASELINE)
    assert batch.device == "cpu" and batch.method == BASELINE
    assert any("fell back to CPU" in warning for warning in batch.warnings)
    expected = explain(volume, ijk_to_ras, SEEDS[:1], real, method=BASELINE)[0]
    np.testing.assert_allclose(batch[0].relevance, expected.relevance, rtol=1e-4, atol=1e-6)


def test_colour_legend_says_when_a_map_is_unsigned():
    for key, info in METHODS.items():
        legend = colour_legend(key)
        if info.signed:
            assert "blue = benign-indicating" in legend, key
        else:
            assert legend.startswith("unsigned map") and "never blue" in legend, key
    assert not all(info.signed for info in METHODS.values())  # saliency and Grad-CAM are unsigned


def test_display_limit_keeps_small_baseline_maps_visible():
    from CycleGANExplainLib.overlay import display_limit
    from CycleGANExplainLib.overlay import MINIMUM_LIMIT, TRANSPARENT_BELOW, relevance_to_rgba

    # LRP's maps are around 0.005 on some nodules: CycleGAN-AM's floor would make them transparent.
    small = np.linspace(-0.005, 0.005, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert display_limit(small, "cyclegan-am") == MINIMUM_LIMIT
    limit = display_limit(small, "lrp")
    assert limit == pytest.approx(np.percentile(np.abs(small), 99.5))
    assert (relevance_to_rgba(small, limit)[..., 3] > 0).mean() > 1 - TRANSPARENT_BELOW - 0.05
    assert display_limit(np.zeros((64, 64), np.float32), "grad-cam") > 0  # an empty map is drawn, transparent
