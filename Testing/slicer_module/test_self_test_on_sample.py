"""The module's self-test checks on the bundled sample CT, loaded as Slicer loads it."""

from __future__ import annotations

import numpy as np

from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_volume_path


def test_self_test_checks_pass_on_the_sample_nodule(module, scene_app):
    volume = scene_app.load_volume(sample_volume_path(SYNTHETIC_SAMPLE), SYNTHETIC_SAMPLE)
    seed_ras = module.sampleNoduleRAS(module.SELF_TEST_SAMPLE, module.SELF_TEST_NODULE_ID)
    seed_node = scene_app.seed_node(seed_ras)
    result = module.CycleGANExplainTest().checkExplanation(volume, seed_node, halfExtentMm=2.5)
    # The documented nodule (20 mm, solid) is bright at the patch centre; lung around it is dark.
    patch = result.batch[result.central_index].patch_hu
    assert patch[30:34, 30:34].mean() > -100.0
    assert np.percentile(patch, 10) < -700.0
