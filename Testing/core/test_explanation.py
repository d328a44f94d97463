"""explain(): batching, relevance, probabilities, warnings, and the CUDA-failure fallback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.intensity import denormalise_to_hu, normalise_hu
from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.patch_sampling import SeedOutsideVolumeError, extract_patch


def test_batch_of_seeds_matches_one_at_a_time(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    seeds = [[0.0, 0.0, 0.0], [10.0, -5.0, 2.5], [-20.0, 15.0, -10.0]]
    batch = explain(volume, ijk_to_ras, seeds, bundle, batch_size=2)
    assert len(batch) == 3 and batch.device == "cpu" and batch.seconds > 0
    for seed, item in zip(seeds, batch.explanations):
        alone = explain(volume, ijk_to_ras, [seed], bundle)[0]
        np.testing.assert_allclose(item.relevance, alone.relevance, atol=1e-5)
        assert item.p_x == pytest.approx(alone.p_x, abs=1e-5)
        patch = extract_patch(volume, ijk_to_ras, seed)
        np.testing.assert_array_equal(item.patch_hu, patch.pixels)
        np.testing.assert_array_equal(item.patch_to_ras, patch.patch_to_ras)
        np.testing.assert_array_equal(item.x, normalise_hu(patch.pixels, bundle.metadata.hu_window))
        np.testing.assert_allclose(item.relevance, item.g_pos - item.g_neg, atol=1e-7)
        assert item.relevance.shape == (64, 64) and item.relevance.dtype == np.float32
        for probability in (item.p_x, item.p_pos, item.p_neg):
            assert 0.0 <= probability <= 1.0


def test_probabilities_are_the_classifiers_softmax(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    item = explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], bundle)[0]
    with torch.inference_mode():
        logits = bundle.classifier(torch.from_numpy(item.x)[None, None])
        generated = bundle.classifier(torch.from_numpy(item.g_pos)[None, None])
    assert item.p_x == pytest.approx(torch.softmax(logits, 1)[0, 1].item(), abs=1e-6)
    assert item.p_pos == pytest.approx(torch.softmax(generated, 1)[0, 1].item(), abs=1e-6)


def test_untrained_bundle_and_mostly_outside_patch_are_warned(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    batch = explain(volume, ijk_to_ras, [[60.0, 0.0, 0.0]], load_bundle(tiny_bundle, "cpu", allow_unknown=True))
    assert any("UNTRAINED" in warning for warning in batch.warnings)
    assert any("lies outside the volume" in warning for warning in batch.warnings)


def test_seed_outside_is_refused_before_inference(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    with pytest.raises(SeedOutsideVolumeError):
        explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0], [0.0, 0.0, 500.0]], load_bundle(tiny_bundle, "cpu", allow_unknown=True))


class CudaOutOfMemoryStandIn(torch.nn.Module):
    """Stand-in for a network on an exhausted GPU (no GPU exists on these machines)."""

    def forward(self, images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_cuda_out_of_memory_falls_back_to_cpu_and_says_so(lung_volume, tiny_bundle):
    volume, ijk_to_ras = lung_volume
    real = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    # The stand-in raises what a GPU raises; the tensors themselves stay on the CPU.
    exhausted_gpu = dataclasses.replace(real, generator_pos=CudaOutOfMemoryStandIn(), warnings=[])
    batch = explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], exhausted_gpu)
    assert batch.device == "cpu"
    assert any("OutOfMemoryError" in warning and "fell back to CPU" in warning for warning in batch.warnings)
    expected = explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], real)[0]
    np.testing.assert_allclose(batch[0].relevance, expected.relevance, atol=1e-6)


def test_other_failures_are_not_hidden(lung_volume, tiny_bundle):
    class Broken(torch.nn.Module):
        def forward(self, images):
            raise ValueError("shape mismatch")

    volume, ijk_to_ras = lung_volume
    broken = dataclasses.replace(load_bundle(tiny_bundle, "cpu", allow_unknown=True), classifier=Broken())
    with pytest.raises(ValueError, match="shape mismatch"):
        explain(volume, ijk_to_ras, [[0.0, 0.0, 0.0]], broken)


def test_intensity_window_maps_to_unit_range_and_back():
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0])
    normalised = normalise_hu(hu, (-1000.0, 400.0))
    np.testing.assert_allclose(normalised, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(denormalise_to_hu(normalised[1:4], (-1000.0, 400.0)), hu[1:4], atol=1e-3)
    with pytest.raises(ValueError, match="low < high"):
        normalise_hu(hu, (400.0, -1000.0))
