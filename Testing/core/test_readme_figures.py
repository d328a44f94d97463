"""The README's figures were made with the bundle that ships as the default (scripts/make-figures.sh)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata

REPO_ROOT = Path(__file__).resolve().parents[2]
FIGURES = REPO_ROOT / "Resources" / "Screenshots"


def test_every_readme_figure_is_recorded_as_made_with_the_default_bundle():
    record = json.loads((FIGURES / "figures.json").read_text())
    metadata = read_metadata(default_bundle_dir())
    assert record["bundle"] == f"{metadata.name} {metadata.version}", (
        "the README's figures were made with another bundle: run bash scripts/make-figures.sh")
    shown = set(re.findall(r"\]\(Resources/Screenshots/([^)]+)\)", (REPO_ROOT / "README.md").read_text()))
    assert shown and shown <= set(record["figures"]), f"figures not made by the script: {shown - set(record['figures'])}"
    for name in record["figures"]:
        assert (FIGURES / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
