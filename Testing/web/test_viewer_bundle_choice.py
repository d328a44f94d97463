"""The page's bundle choice, in-process on a real viewer (trame server not started): the page's
state is the browser's to write, so the bundles it may choose are kept on the server and the page
sends only a key (issue 23, item 12)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from CycleGANExplainLib.model_bundle import read_metadata, shipped_bundles


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory, tiny_bundle) -> Path:
    """A bundle folder on the server that was never offered (think: a stranger's upload area)."""
    return Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("elsewhere") / "not-offered"))


@pytest.fixture(scope="module")
def viewer(tiny_bundle):
    app = viewer_module.ExplainViewer(server=get_server("bundle-choice-test", client_type="vue3"), device="cpu",
                                      bundle_dir=tiny_bundle, allow_unknown_bundle=True)
    app.state.ready()  # from now on state changes call the @change handlers
    return app


def set_state(viewer, **values) -> None:
    """What the page does: set state; the change handlers run on flush."""
    async def scenario():
        with viewer.state:
            viewer.state.update(values)

    asyncio.run(scenario())


def test_the_page_gets_keys_and_titles_never_server_paths(viewer, tiny_bundle):
    values = [item["value"] for item in viewer.state.bundle_choices]
    assert values == [viewer_module.STARTUP_BUNDLE_KEY, *(path.name for path in shipped_bundles())]
    assert viewer.state.bundle == viewer_module.STARTUP_BUNDLE_KEY
    assert f"(folder {tiny_bundle.name})" in viewer.state.bundle_choices[0]["title"]
    assert not any(str(tiny_bundle.parent) in str(item) for item in viewer.state.bundle_choices)


def test_a_folder_the_page_writes_into_its_own_list_is_refused(viewer, tiny_bundle, other_folder):
    forged = [*viewer.state.bundle_choices, {"title": "mine", "value": str(other_folder)}]
    set_state(viewer, bundle_choices=forged, bundle=str(other_folder))
    assert viewer.bundle_dir == tiny_bundle  # still the bundle given at start-up
    assert "is not one of the listed model bundles" in viewer.state.error_text
    assert str(other_folder.parent) not in viewer.state.error_text
    assert viewer.state.bundle == viewer_module.STARTUP_BUNDLE_KEY  # the choice goes back
    for forged_value in ("../" + other_folder.name, {"path": str(other_folder)}, shipped_bundles()[0].as_posix()):
        set_state(viewer, bundle=forged_value)
        assert viewer.bundle_dir == tiny_bundle, forged_value


def test_a_listed_key_chooses_that_bundle(viewer, tiny_bundle):
    shipped = shipped_bundles()[0]
    set_state(viewer, bundle=shipped.name)
    assert viewer.bundle_dir == shipped
    assert viewer.state.bundle_text == read_metadata(shipped).display_name
    set_state(viewer, bundle=viewer_module.STARTUP_BUNDLE_KEY)
    assert viewer.bundle_dir == tiny_bundle
