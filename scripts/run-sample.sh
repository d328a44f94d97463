#!/usr/bin/env bash
# Sets up .venv and explains the documented nodules of the bundled synthetic chest CT.
# Results (overlay NRRDs, PNG figures, summary.json) go to out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SAMPLE=CycleGANExplain/Resources/SampleData/SyntheticChestCT
mapfile -t SEEDS < <(.venv/bin/python -c "
import json
for nodule in json.load(open('$SAMPLE.json'))['nodules']:
    print('--seed=' + ','.join(str(v) for v in nodule['centre_ras_mm']))
")
.venv/bin/cyclegan-explain explain "$SAMPLE.nrrd" "${SEEDS[@]}" --out out/sample "$@"
