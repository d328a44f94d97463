"""The viewer's explanation queue, in-process on a real viewer (trame server not started): clicks
made while an explanation runs coalesce into one, and a CT opened meanwhile drops the stale one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib import mrml_explain


@pytest.fixture(scope="module")
def viewer():
    app = viewer_module.ExplainViewer(server=get_server("coalescing-test", client_type="vue3"), device="cpu")
    app.load_sample()
    assert app.volume_node is not None, app.state.error_text
    return app


def run_until_idle(viewer, requests) -> None:
    async def scenario():
        requests()
        while viewer._explaining:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())


def test_clicks_made_while_busy_cost_one_explanation(viewer, monkeypatch):
    computed = []
    real_compute = mrml_explain.compute
    monkeypatch.setattr(mrml_explain, "compute", lambda request, *a: computed.append(request.plan.seed_ras) or
                        real_compute(request, *a))
    centre = viewer_module.sample_nodule_ras()
    seeds = [centre + [0.5 * step, 0.0, 0.0] for step in range(10)]
    run_until_idle(viewer, lambda: [viewer.request_explanation(seed, "axial") for seed in seeds])
    assert len(computed) == 1  # not ten
    np.testing.assert_allclose(computed[0], seeds[-1])
    assert "(the latest of 10 clicks made while busy)" in viewer.state.status_text
    assert viewer.state.seed_text == "{:.1f}, {:.1f}, {:.1f}".format(*seeds[-1])


def test_an_explanation_of_a_replaced_ct_is_dropped(viewer, monkeypatch):
    real_compute = mrml_explain.compute

    def compute_then_replace_the_ct(request, *args):
        batch = real_compute(request, *args)
        viewer._volume_generation += 1  # what opening another CT does while the networks run
        return batch

    monkeypatch.setattr(mrml_explain, "compute", compute_then_replace_the_ct)
    viewer._clear_result()
    run_until_idle(viewer, lambda: viewer.request_explanation(viewer_module.sample_nodule_ras(), "axial"))
    assert viewer.state.has_result is False and viewer.state.seed_text == ""
    assert viewer.state.busy is False
