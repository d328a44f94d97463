#!/usr/bin/env bash
# Issue 21, items 1 and 2 on the shipped classifier: the change deadband (UNetGenerator's
# change_deadband: changes under N HU dropped) and the transfer recipe on GAN A's lineage.
#   LIDC_VOI_DIR=../shared/lidc-voi bash scripts/train-deadband.sh
# 1. gan-a-transfer-deadband: warm-started from GAN A (the 2.0.0 generators' run), against the shipped
#    classifier, L_AM also over the four other classifiers of gan-transfer, read through same-nodule
#    views, changes under 10 HU dropped (lidc-voi-v2-a-transfer-deadband.json), 800 steps.
# 2. deadband bundles: GAN A's step 2,100 (the 2.0.0 generators) exported with deadbands of 0, 5, 10
#    and 15 HU, each audited on the validation patients (audit --validation-of): realism detectors
#    fitted on the fitting patients, scored on validation; the test split is not read.
# 3. select-generators over the new run's checks and 2.0.0 with the judges of train-transfer.sh.
# Needs train-bundle.sh lidc-voi's and train-size-confound.sh's classifiers. Resumes every step.
# About 50 min (1) and 25 min (2) on one CPU core each, 15 min (3).
source "$(dirname "$0")/lidc-voi-env.sh"
RESULTS=training/results/lidc-voi-deadband
CLASSIFIER=$RUNS/classifier/classifier.pt
STAGE=${1:-all}
if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  OUT=$RUNS/gan-a-transfer-deadband
  FLAGS=(); [ -f "$OUT/cyclegan.pt" ] && FLAGS=(--resume) || FLAGS=(--warm-start "$RUNS/gan-a/cyclegan.pt")
  for OTHER in classifier-ratings classifier-ratings-seed1 classifier-ratings-seed2 classifier-beyond-size-seed1; do
    FLAGS+=(--also-maximise-for "$RUNS/$OTHER/classifier.pt")
  done
  $TRAIN train-cyclegan --dataset "$DATA" --classifier "$CLASSIFIER" \
    --config training/configs/lidc-voi-v2-a-transfer-deadband.json --out "$OUT" --seed 3 --steps 800 "${FLAGS[@]}"
fi
if [ "$STAGE" = all ] || [ "$STAGE" = bundles ]; then
  for HU in 0 5 10 15; do
    BUNDLE=$RUNS/bundle-deadband-$HU
    [ -f "$BUNDLE/metadata.json" ] || $TRAIN export --dataset "$DATA" --classifier "$CLASSIFIER" \
      --cyclegan "$RUNS/gan-a/cyclegan.pt" --generators "$RUNS/gan-a/validation-checks/step-002100.pt" \
      --change-deadband-hu "$HU" --out "$BUNDLE" --name lidc-voi --version "2.1.0-deadband-$HU"
    [ -f "$RESULTS/validation/deadband-$HU/audit.json" ] || $TRAIN audit --allow-unknown-bundle --bundle "$BUNDLE" \
      --dataset "$DATA" --out "$RESULTS/validation/deadband-$HU" --validation-of "$CLASSIFIER" \
      --held-out-classifier "$RUNS/classifier-twin/classifier.pt"
  done
fi
if [ "$STAGE" = all ] || [ "$STAGE" = select ]; then
  BUNDLES=(--bundle CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi)
  for HU in 5 10 15; do BUNDLES+=(--bundle "$RUNS/bundle-deadband-$HU"); done
  $TRAIN select-generators --cyclegan "$RUNS/gan-a-transfer-deadband/cyclegan.pt" --dataset "$DATA" \
    --out "$RESULTS/selection" "${BUNDLES[@]}" --allow-unknown-bundle \
    --judge-classifier "$RUNS/classifier-twin/classifier.pt" \
    --judge-classifier "$RUNS/classifier-size-balanced/classifier.pt"
fi
if [ "$STAGE" = ship ]; then
  # RULE.md's choice: GAN A's step 2,100 with a 10 HU deadband, as the default lidc-voi 2.1.0.
  BUNDLE=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi; SHIPPED=training/results/lidc-voi
  $TRAIN export --dataset "$DATA" --classifier "$CLASSIFIER" --cyclegan "$RUNS/gan-a/cyclegan.pt" \
    --generators "$RUNS/gan-a/validation-checks/step-002100.pt" --change-deadband-hu 10 \
    --out "$BUNDLE" --name lidc-voi --version 2.1.0 --overwrite
  $TRAIN evaluate --allow-unknown-bundle --bundle "$BUNDLE" --dataset "$DATA" --out "$SHIPPED" --attach \
    --voi-dir "$LIDC_VOI_DIR"
  $TRAIN audit --allow-unknown-bundle --bundle "$BUNDLE" --dataset "$DATA" --out "$SHIPPED" \
    --held-out-classifier "$RUNS/classifier-resnet/classifier.pt"
fi
