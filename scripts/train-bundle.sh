#!/usr/bin/env bash
# Trains one model bundle from scratch, resuming wherever a previous run stopped:
# LIDC shape phantoms -> classifier -> CycleGAN-AM -> bundle -> evaluation on the test split.
#   bash scripts/train-bundle.sh VARIANT [STEPS]
# VARIANT: lidc-phantoms (the shipped bundle, written to CycleGANExplain/Resources/Models) or
# lidc-phantoms-size-normalised (every nodule scaled to one size; bundle kept in training/runs).
# STEPS (default: the config's) limits this run's CycleGAN-AM steps; a later call with more steps
# continues bit-for-bit from the checkpoint. Work files live in training/cache and training/runs
# (not committed); the evaluation report goes to training/results/VARIANT.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: train-bundle.sh lidc-phantoms|lidc-phantoms-size-normalised [STEPS]}
case "$VARIANT" in
  lidc-phantoms)
    PREPARE_FLAGS=(); BUNDLE=CycleGANExplain/Resources/Models/lidc-phantoms; VERSION=0.2.0 ;;
  lidc-phantoms-size-normalised)
    PREPARE_FLAGS=(--size-normalised); BUNDLE=training/runs/$VARIANT/bundle; VERSION=0.1.0 ;;
  *) echo "unknown variant $VARIANT" >&2; exit 2 ;;
esac
bash scripts/setup.sh
TRAIN=.venv/bin/cyclegan-explain-train
CONFIG=training/configs/cpu-shipped.json
DATA=training/cache/prepared/$VARIANT
RUNS=training/runs/$VARIANT
RESULTS=training/results/$VARIANT

[ -f "$DATA/manifest.json" ] || $TRAIN prepare --out "$DATA" --cache-dir training/cache/lidc "${PREPARE_FLAGS[@]}"
[ -f "$RUNS/classifier/classifier.pt" ] || $TRAIN train-classifier --dataset "$DATA" --config training/configs/paper.json --out "$RUNS/classifier"
RESUME=()
[ -f "$RUNS/cyclegan/cyclegan.pt" ] && RESUME=(--resume)
STEPS=()
[ -n "${2:-}" ] && STEPS=(--steps "$2")
$TRAIN train-cyclegan --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --config "$CONFIG" \
  --out "$RUNS/cyclegan" "${RESUME[@]}" "${STEPS[@]}"
$TRAIN export --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --cyclegan "$RUNS/cyclegan/cyclegan.pt" \
  --out "$BUNDLE" --name "$VARIANT" --version "$VERSION" --overwrite
$TRAIN evaluate --bundle "$BUNDLE" --dataset "$DATA" --out "$RESULTS" --attach
