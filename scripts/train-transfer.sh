#!/usr/bin/env bash
# Issue 21, items 2 and 4: generators against the classifier chosen in train-size-confound.sh, and a
# run that aims at transfer to networks it never saw, chosen on validation with judges.
#   LIDC_VOI_DIR=../shared/lidc-voi bash scripts/train-transfer.sh
# 1. gan-ratings: GAN A's recipe (lidc-voi-v2.json) against classifier-ratings, 2,300 steps.
# 2. gan-transfer: warm-started from gan-ratings, L_AM averaged over classifier-ratings and four more
#    classifiers on the same patients and read through random same-nodule views
#    (lidc-voi-v2-transfer.json), 1,200 steps.
# 3. select-generators over every validation check of both, with two judges no run maximised (the
#    shipped classifier's twin and the size-balanced classifier): their flips join the score.
# 4. the choice exported as a candidate bundle (training/runs, not shipped), evaluate and audit
#    (held-out ResNet) into training/results/lidc-voi-transfer.
# 5. stage 2: gan-transfer-am2, warm-started from gan-transfer with L_AM weighted 2
#    (lidc-voi-v2-transfer-am2.json), 400 steps; the judged selection over all three runs
#    (selection-am2), its choice exported, evaluated and audited into .../am2.
# Needs train-bundle.sh lidc-voi's and train-size-confound.sh's classifiers. Resumes every step.
# About 2 h (1) + 1.1 h (2) + 25 min (3) + 10 min (4) + 1 h (5) on one CPU core each.
source "$(dirname "$0")/lidc-voi-env.sh"
RESULTS=training/results/lidc-voi-transfer
gan() {  # run folder, config, then train-cyclegan's other flags; resumes a run that exists
  local out=$1 config=$2; shift 2
  local resume=(); [ -f "$out/cyclegan.pt" ] && resume=(--resume)
  $TRAIN train-cyclegan --dataset "$DATA" --classifier "$RUNS/classifier-ratings/classifier.pt" --config "$config" \
    --out "$out" "${resume[@]}" "$@"
}
gan "$RUNS/gan-ratings" training/configs/lidc-voi-v2.json --seed 0 --steps 2300
WARM=(); [ -f "$RUNS/gan-transfer/cyclegan.pt" ] || WARM=(--warm-start "$RUNS/gan-ratings/cyclegan.pt")
ENSEMBLE=()
for OTHER in classifier-ratings-seed1 classifier-ratings-seed2 classifier classifier-beyond-size-seed1; do
  ENSEMBLE+=(--also-maximise-for "$RUNS/$OTHER/classifier.pt")
done
gan "$RUNS/gan-transfer" training/configs/lidc-voi-v2-transfer.json --seed 1 --steps 1200 "${ENSEMBLE[@]}" "${WARM[@]}"
JUDGES=(--judge-classifier "$RUNS/classifier-twin/classifier.pt" --judge-classifier "$RUNS/classifier-size-balanced/classifier.pt")
candidate() {  # selection folder, bundle folder, version, results folder: export the choice, evaluate, audit
  local chosen run check
  chosen=$(.venv/bin/python -c 'import json,sys; c=json.load(open(sys.argv[1]))["chosen"]; print(c["run"], c["check"])' \
    "$1/selection.json")
  read -r run check <<< "$chosen"
  $TRAIN export --dataset "$DATA" --classifier "$RUNS/classifier-ratings/classifier.pt" --cyclegan "$run" \
    --generators "$check" --out "$2" --name lidc-voi --version "$3" --overwrite
  $TRAIN evaluate --allow-unknown-bundle --bundle "$2" --dataset "$DATA" --out "$4" --voi-dir "$LIDC_VOI_DIR"
  $TRAIN audit --allow-unknown-bundle --bundle "$2" --dataset "$DATA" --out "$4" \
    --held-out-classifier "$RUNS/classifier-resnet/classifier.pt"
}
$TRAIN select-generators --cyclegan "$RUNS/gan-ratings/cyclegan.pt" "$RUNS/gan-transfer/cyclegan.pt" --dataset "$DATA" \
  --out "$RESULTS/selection" "${JUDGES[@]}"
candidate "$RESULTS/selection" "$RUNS/bundle-candidate" 2.1.0-candidate "$RESULTS"
WARM=(); [ -f "$RUNS/gan-transfer-am2/cyclegan.pt" ] || WARM=(--warm-start "$RUNS/gan-transfer/cyclegan.pt")
gan "$RUNS/gan-transfer-am2" training/configs/lidc-voi-v2-transfer-am2.json --seed 2 --steps 400 "${ENSEMBLE[@]}" "${WARM[@]}"
$TRAIN select-generators --cyclegan "$RUNS/gan-ratings/cyclegan.pt" "$RUNS/gan-transfer/cyclegan.pt" \
  "$RUNS/gan-transfer-am2/cyclegan.pt" --dataset "$DATA" --out "$RESULTS/selection-am2" "${JUDGES[@]}"
candidate "$RESULTS/selection-am2" "$RUNS/bundle-candidate-am2" 2.1.0-candidate-am2 "$RESULTS/am2"
