#!/usr/bin/env bash
# Regenerates the README's figures with the default shipped bundle, and records which bundle made
# them in Resources/Screenshots/figures.json (Testing/core/test_readme_figures.py fails when a
# figure is older than the shipped bundle). Needs the full set-up: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FIGURES=Resources/Screenshots
# The default sample (the real CT) and its documented tumour T1, from the module that owns them;
# all three figures show it.
{ read -r SAMPLE; read -r SEED; } < <(.venv/bin/python -c "
from CycleGANExplainLib.sample_data import sample_nodule, sample_volume_path
print(sample_volume_path()); print(','.join(str(v) for v in sample_nodule().centre_ras_mm))")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The command line's figure of the tumour.
.venv/bin/cyclegan-explain explain "$SAMPLE" "--seed=$SEED" --out "$WORK/cli" --device cpu
cp "$WORK/cli/explanation_seed01.png" "$FIGURES/cli_sample_T1.png"
# The module's overlay, as Slicer's slice logic composites it.
.venv/bin/python Testing/slicer_module/make_overlay_screenshot.py
# The web viewer after a click on the tumour, from the browser test. CI=true makes a missing browser
# fail it instead of skipping, so figures.json never names a screenshot that was not remade.
CI=true CYCLEGAN_EXPLAIN_SCREENSHOTS="$FIGURES" .venv/bin/python -m pytest -p no:cacheprovider -q \
  Testing/web/test_browser.py -k test_click_on_nodule_shows_overlay_and_probabilities

.venv/bin/python - "$FIGURES/figures.json" <<'PY'
import json, sys
from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata
from CycleGANExplainLib.sample_data import DEFAULT_SAMPLE, opening_nodule_id

metadata = read_metadata(default_bundle_dir())
record = {"bundle": f"{metadata.name} {metadata.version}", "made_by": "bash scripts/make-figures.sh",
          "sample": f"{DEFAULT_SAMPLE}, nodule {opening_nodule_id()}",
          "figures": ["cli_sample_T1.png", "overlay_axial.png", "web_viewer.png"]}
with open(sys.argv[1], "w", encoding="utf-8") as file:
    json.dump(record, file, indent=2)
    file.write("\n")
print(f"Figures made with {record['bundle']}")
PY
