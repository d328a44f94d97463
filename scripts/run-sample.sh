#!/usr/bin/env bash
# Sets up .venv with the core only (scripts/setup-core.sh) and runs the main job on the bundled
# synthetic chest CT:
#   bash scripts/run-sample.sh          explains its documented nodules; results in out/sample/
#                                       (overlay NRRDs, PNG figures, summary.json)
#   bash scripts/run-sample.sh web      opens it in the web viewer (prints the address)
# Further arguments pass through to `cyclegan-explain`, e.g. --device cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-core.sh "${1:-}"
SAMPLE=CycleGANExplain/CycleGANExplainLib/resources/sample_data/SyntheticChestCT
if [ "${1:-}" = "web" ]; then
  shift
  exec .venv/bin/cyclegan-explain-web "$SAMPLE.nrrd" "$@"
fi
mapfile -t SEEDS < <(.venv/bin/python -c "
import json
for nodule in json.load(open('$SAMPLE.json'))['nodules']:
    print('--seed=' + ','.join(str(v) for v in nodule['centre_ras_mm']))
")
.venv/bin/cyclegan-explain explain "$SAMPLE.nrrd" "${SEEDS[@]}" --out out/sample "$@"
