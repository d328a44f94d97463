#!/usr/bin/env bash
# Sets up .venv with the core only (scripts/setup-core.sh) and runs the main job on the bundled
# sample CT, a real chest CT from TCIA's Lung-PET-CT-Dx collection (CC BY 4.0; its attribution is
# printed with the results and shown in the web page):
#   bash scripts/run-sample.sh          explains its documented tumour; results in out/sample/
#                                       (overlay NRRDs, PNG figures, summary.json)
#   bash scripts/run-sample.sh web      opens it in the web viewer, centred and zoomed on the tumour
#                                       (prints the address)
# Further arguments pass through to `cyclegan-explain`, e.g. --device cuda. The synthetic sample
# (SyntheticChestCT, four nodules, no patient data) is beside it in the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-core.sh "${1:-}"
if [ "${1:-}" = "web" ]; then
  shift
  exec .venv/bin/cyclegan-explain-web "$@"  # with no CT given it opens the default sample
fi
# The sample's path and its documented nodules' centres, from the module that owns them.
mapfile -t SAMPLE_AND_SEEDS < <(.venv/bin/python -c "
from CycleGANExplainLib.sample_data import sample_nodules, sample_volume_path
print(sample_volume_path())
for nodule in sample_nodules().values():
    print('--seed=' + ','.join(str(v) for v in nodule.centre_ras_mm))
")
.venv/bin/cyclegan-explain explain "${SAMPLE_AND_SEEDS[0]}" "${SAMPLE_AND_SEEDS[@]:1}" --out out/sample "$@"
