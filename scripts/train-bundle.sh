#!/usr/bin/env bash
# Trains one model bundle from scratch, resuming wherever a previous run stopped:
# data -> classifier -> CycleGAN-AM -> bundle -> evaluation on the test split.
#   bash scripts/train-bundle.sh VARIANT [STEPS]
# VARIANT:
#   lidc-voi        the default bundle, on real LIDC-IDRI nodule sub-volumes; needs
#                   LIDC_VOI_DIR=<folder laid out like lidc-voi> (split.csv, data/VOIs, metadata CSV).
#                   A second CycleGAN-AM seed (GAN_SEEDS="0 1", the default) is trained and
#                   evaluated beside the shipped one; only seed 0's bundle is shipped.
#   lidc-phantoms   LIDC shape phantoms (the earlier bundle, kept as a second choice)
#   lidc-phantoms-size-normalised   every phantom nodule scaled to one size (bundle kept in training/runs)
# STEPS (default: the config's) limits this run's CycleGAN-AM steps; a later call with more steps
# continues bit-for-bit from the checkpoint. Work files live in training/cache and training/runs
# (not committed); the evaluation report goes to training/results/VARIANT.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: train-bundle.sh lidc-voi|lidc-phantoms|lidc-phantoms-size-normalised [STEPS]}
GAN_SEEDS=(0)
case "$VARIANT" in
  lidc-voi)
    : "${LIDC_VOI_DIR:?set LIDC_VOI_DIR to the folder of real nodule sub-volumes (laid out like lidc-voi)}"
    PREPARE_FLAGS=(--source voi --voi-dir "$LIDC_VOI_DIR"); BUNDLE=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi
    VERSION=1.0.0; CONFIG=training/configs/lidc-voi.json; CLASSIFIER_CONFIG=$CONFIG
    read -r -a GAN_SEEDS <<< "${GAN_SEEDS_OVERRIDE:-0 1}" ;;
  lidc-phantoms)
    PREPARE_FLAGS=(--cache-dir training/cache/lidc); BUNDLE=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-phantoms
    VERSION=0.2.0; CONFIG=training/configs/cpu-shipped.json; CLASSIFIER_CONFIG=training/configs/paper.json ;;
  lidc-phantoms-size-normalised)
    PREPARE_FLAGS=(--cache-dir training/cache/lidc --size-normalised); BUNDLE=training/runs/$VARIANT/bundle
    VERSION=0.1.0; CONFIG=training/configs/cpu-shipped.json; CLASSIFIER_CONFIG=training/configs/paper.json ;;
  *) echo "unknown variant $VARIANT" >&2; exit 2 ;;
esac
bash scripts/setup.sh
TRAIN=.venv/bin/cyclegan-explain-train
DATA=training/cache/prepared/$VARIANT
RUNS=training/runs/$VARIANT
RESULTS=training/results/$VARIANT
# One torch thread per process: on a shared CPU, OpenMP threads that wait for each other are slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

[ -f "$DATA/manifest.json" ] || $TRAIN prepare --out "$DATA" "${PREPARE_FLAGS[@]}"
[ -f "$RUNS/classifier/classifier.pt" ] || $TRAIN train-classifier --dataset "$DATA" --config "$CLASSIFIER_CONFIG" --out "$RUNS/classifier"
STEPS=()
[ -n "${2:-}" ] && STEPS=(--steps "$2")
EXTRA_BUNDLES=()
for SEED in "${GAN_SEEDS[@]}"; do
  GAN_RUN=$RUNS/cyclegan; SEED_BUNDLE=$BUNDLE
  if [ "$SEED" != "${GAN_SEEDS[0]}" ]; then
    GAN_RUN=$RUNS/cyclegan-seed$SEED; SEED_BUNDLE=$RUNS/bundle-seed$SEED; EXTRA_BUNDLES+=(--extra-bundle "$SEED_BUNDLE")
  fi
  RESUME=()
  [ -f "$GAN_RUN/cyclegan.pt" ] && RESUME=(--resume)
  $TRAIN train-cyclegan --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --config "$CONFIG" \
    --seed "$SEED" --out "$GAN_RUN" "${RESUME[@]}" "${STEPS[@]}"
  $TRAIN export --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --cyclegan "$GAN_RUN/cyclegan.pt" \
    --out "$SEED_BUNDLE" --name "$VARIANT" --version "$VERSION" --overwrite
done
$TRAIN evaluate --allow-unknown-bundle --bundle "$BUNDLE" --dataset "$DATA" --out "$RESULTS" --attach "${EXTRA_BUNDLES[@]}"
