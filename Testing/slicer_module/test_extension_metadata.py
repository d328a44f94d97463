"""The extension's CMake metadata and its catalog entry agree, and the images they name exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The properties of Slicer's slicer-extension-catalog-entry-schema-v1.0.1.json (additionalProperties: false).
CATALOG_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                      "build_subdirectory", "enabled", "tier"}


def cmake_variables() -> dict:
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    variables = {}
    for name, value in re.findall(r'^set\((EXTENSION_\w+) ("[^"]*"|[^)]*)\)', text, flags=re.MULTILINE):
        value = value.strip().strip('"')
        variables[name] = re.sub(r"\$\{(\w+)\}", lambda match: variables[match.group(1)], value)
    return variables


def test_catalog_entry_matches_the_cmake_metadata():
    entry = json.loads((REPO_ROOT / "ExtensionsIndex" / "CycleGANExplain.json").read_text())
    variables = cmake_variables()
    assert set(entry) <= CATALOG_PROPERTIES and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["category"] == variables["EXTENSION_CATEGORY"]
    assert entry["scm_url"] == variables["EXTENSION_HOMEPAGE"] + ".git"
    assert entry["build_dependencies"] == variables["EXTENSION_DEPENDS"].split()
    assert 1 <= entry["tier"] <= 5


def test_icon_and_screenshot_urls_are_files_of_this_repository():
    variables = cmake_variables()
    urls = [variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]
    assert "example.org" not in " ".join(urls)
    for url in urls:
        assert url.startswith(variables["EXTENSION_RAW_URL"] + "/"), url
        path = REPO_ROOT / url.removeprefix(variables["EXTENSION_RAW_URL"] + "/")
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url


def test_the_module_is_listed_under_the_extensions_category_and_contributors(module, monkeypatch):
    import types

    import slicer

    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(connect=lambda *args: None), raising=False)
    parent = types.SimpleNamespace()
    module.CycleGANExplain(parent)
    variables = cmake_variables()
    assert parent.categories == [variables["EXTENSION_CATEGORY"]]
    assert parent.contributors == [variables["EXTENSION_CONTRIBUTORS"]]
    # The extension index and Slicer's About box expect "Name (Organisation)", comma-separated.
    for contributor in variables["EXTENSION_CONTRIBUTORS"].split(", "):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", contributor), contributor
