# Sourced by the scripts/train-*.sh of issue 21's runs on the lidc-voi sub-volumes: the repository
# root, the training command, one torch thread per job (two jobs share a 2-core machine), the
# shared folders, and the prepared dataset (made once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${LIDC_VOI_DIR:?set LIDC_VOI_DIR to the folder of real nodule sub-volumes (laid out like lidc-voi)}"
TRAIN=.venv/bin/cyclegan-explain-train
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=training/cache/prepared/lidc-voi; RUNS=training/runs/lidc-voi-v2
[ -f "$DATA/manifest.json" ] || $TRAIN prepare --source voi --voi-dir "$LIDC_VOI_DIR" --out "$DATA"
