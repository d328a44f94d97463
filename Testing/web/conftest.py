"""Fixtures of the in-process viewer tests: a real viewer (trame server not started) and explaining in it."""

from __future__ import annotations

import asyncio
from typing import Callable, Sequence

import pytest
from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE


@pytest.fixture(scope="module")
def synthetic_viewer(request) -> "viewer_module.ExplainViewer":
    """A viewer with the synthetic sample CT open, one per test module (its own trame server by name)."""
    app = viewer_module.ExplainViewer(server=get_server(f"{request.module.__name__}-viewer", client_type="vue3"),
                                      device="cpu")
    app.state.ready()
    app.load_sample(SYNTHETIC_SAMPLE)
    assert app.volume_node is not None, app.state.error_text
    return app


@pytest.fixture(scope="session")
def explain_in() -> Callable[["viewer_module.ExplainViewer", Sequence[float]], None]:
    """explain_in(viewer, ras): a click's explanation at ``ras`` in the axial view, run to its end."""
    def explain(viewer: "viewer_module.ExplainViewer", ras: Sequence[float]) -> None:
        async def scenario():
            viewer.request_explanation(ras, "axial")
            while viewer._explaining:
                await asyncio.sleep(0.01)

        asyncio.run(scenario())

    return explain


@pytest.fixture(scope="session")
def choose_in() -> Callable[..., None]:
    """choose_in(viewer, name, value): what a page control does: set the state (its change handler runs
    when the state is flushed), then wait for the explanation that the choice may start."""
    def choose(viewer: "viewer_module.ExplainViewer", name: str, value) -> None:
        async def scenario():
            with viewer.state:
                viewer.state[name] = value
            while viewer._explaining:
                await asyncio.sleep(0.01)

        asyncio.run(scenario())

    return choose
