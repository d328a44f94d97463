#!/usr/bin/env bash
# Issue 21, transfer: the shipped generators with their change multiplied by a gain, chosen on
# validation patients (training/results/lidc-voi-gain/RULE.md).
#   LIDC_VOI_DIR=../shared/lidc-voi bash scripts/train-gain.sh
# 1. judge: a ResNet that only judges transfer on validation (lidc-voi-resnet-judge.json, seed 3);
#    the shipped classifier imported as a checkpoint (its validation patients).
# 2. bundles: 2.1.0 copied with gains 1.25, 1.5 and 2 (export-with-gain); each, and 2.1.0, audited
#    on the validation patients (audit --validation-of); the test split is not read.
# Resumes every step. About 26 min (1) and 10 min (2) on one CPU core.
source "$(dirname "$0")/lidc-voi-env.sh"
RESULTS=training/results/lidc-voi-gain
SHIPPED=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi
CLASSIFIER=$RUNS/classifier/classifier.pt; JUDGE=$RUNS/classifier-resnet-judge/classifier.pt
STAGE=${1:-all}
if [ "$STAGE" = all ] || [ "$STAGE" = judge ]; then
  [ -f "$CLASSIFIER" ] || $TRAIN import-classifier --bundle "$SHIPPED" --dataset "$DATA" --out "$(dirname "$CLASSIFIER")"
  [ -f "$JUDGE" ] || $TRAIN train-classifier --dataset "$DATA" --config training/configs/lidc-voi-resnet-judge.json \
    --out "$(dirname "$JUDGE")"
fi
if [ "$STAGE" = all ] || [ "$STAGE" = bundles ]; then
  for GAIN in 1 1.25 1.5 2; do
    BUNDLE=$RUNS/bundle-gain-$GAIN; FLAGS=(--allow-unknown-bundle)
    if [ "$GAIN" = 1 ]; then BUNDLE=$SHIPPED; FLAGS=(); fi
    [ -f "$BUNDLE/metadata.json" ] || $TRAIN export-with-gain --bundle "$SHIPPED" --change-gain "$GAIN" \
      --out "$BUNDLE" --version "2.2.0-gain-$GAIN"
    [ -f "$RESULTS/validation/gain-$GAIN/audit.json" ] || $TRAIN audit "${FLAGS[@]}" --bundle "$BUNDLE" \
      --dataset "$DATA" --out "$RESULTS/validation/gain-$GAIN" --validation-of "$CLASSIFIER" --held-out-classifier "$JUDGE"
  done
fi
