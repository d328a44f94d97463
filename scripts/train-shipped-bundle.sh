#!/usr/bin/env bash
# Reproduces the shipped model bundle from scratch, resuming wherever a previous run stopped:
# LIDC shape phantoms -> classifier -> CycleGAN-AM -> bundle -> evaluation on the test split.
#   bash scripts/train-shipped-bundle.sh [STEPS]
# STEPS (default: the config's) limits this run's CycleGAN-AM steps; a later call with more steps
# continues bit-for-bit from the checkpoint. Work files live in training/cache and training/runs
# (not committed); the bundle goes to CycleGANExplain/Resources/Models/lidc-phantoms and the
# evaluation report to training/results/lidc-phantoms.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TRAIN=.venv/bin/cyclegan-explain-train
CONFIG=training/configs/cpu-shipped.json
DATA=training/cache/prepared/lidc-phantoms
RUNS=training/runs/lidc-phantoms
BUNDLE=CycleGANExplain/Resources/Models/lidc-phantoms
RESULTS=training/results/lidc-phantoms

[ -f "$DATA/manifest.json" ] || $TRAIN prepare --out "$DATA" --cache-dir training/cache/lidc
[ -f "$RUNS/classifier/classifier.pt" ] || $TRAIN train-classifier --dataset "$DATA" --config "$CONFIG" --out "$RUNS/classifier"
RESUME=()
[ -f "$RUNS/cyclegan/cyclegan.pt" ] && RESUME=(--resume)
STEPS=()
[ -n "${1:-}" ] && STEPS=(--steps "$1")
$TRAIN train-cyclegan --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --config "$CONFIG" \
  --out "$RUNS/cyclegan" "${RESUME[@]}" "${STEPS[@]}"
$TRAIN export --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --cyclegan "$RUNS/cyclegan/cyclegan.pt" \
  --out "$BUNDLE" --name lidc-phantoms --version 0.2.0 --overwrite
$TRAIN evaluate --bundle "$BUNDLE" --dataset "$DATA" --out "$RESULTS" --attach
