#!/usr/bin/env bash
# Issue 21, item 3: classifiers trained against the size confound, beside the shipped one.
#   LIDC_VOI_DIR=../shared/lidc-voi bash scripts/train-size-confound.sh
# Trains each candidate that is not trained yet (training/configs/lidc-voi-{beyond-size,size-balanced,
# ratings}.json; beyond-size also with seed 1, ratings with seeds 1 and 2: the chosen recipe's spread
# over seeds, trained after the choice), all with the shipped classifier's validation patients,
# then compares them (compare-classifiers): the validation figures are where a choice is made, the
# test figures (--test) are the final report. Needs the lidc-voi pipeline's prepared data and its
# imported classifier (bash scripts/train-bundle.sh lidc-voi makes both). About 15-20 min per
# classifier on one CPU core.
source "$(dirname "$0")/lidc-voi-env.sh"
RESULTS=training/results/lidc-voi-size-confound
# classifier.pt is written at every better epoch; "epochs_run" is added only when training ended.
finished() { [ -f "$1" ] && .venv/bin/python -c 'import sys, torch
sys.exit("epochs_run" not in torch.load(sys.argv[1], map_location="cpu", weights_only=False))' "$1"; }
CANDIDATES=()
for RUN in beyond-size:beyond-size:0 beyond-size-seed1:beyond-size:1 size-balanced:size-balanced:0 ratings:ratings:0 \
           ratings-seed1:ratings:1 ratings-seed2:ratings:2; do
  IFS=: read -r NAME CONFIG SEED <<< "$RUN"
  OUT=$RUNS/classifier-$NAME
  finished "$OUT/classifier.pt" || $TRAIN train-classifier --dataset "$DATA" --config "training/configs/lidc-voi-$CONFIG.json" \
    --seed "$SEED" --ratings-from "$LIDC_VOI_DIR" --out "$OUT" --quiet
  CANDIDATES+=(--candidate "$NAME=$OUT/classifier.pt")
done
CANDIDATES+=(--candidate "twin=$RUNS/classifier-twin/classifier.pt")
$TRAIN compare-classifiers --dataset "$DATA" --reference "$RUNS/classifier/classifier.pt" "${CANDIDATES[@]}" \
  --out "$RESULTS/validation"
$TRAIN compare-classifiers --dataset "$DATA" --reference "$RUNS/classifier/classifier.pt" "${CANDIDATES[@]}" \
  --test --out "$RESULTS"
