#!/usr/bin/env bash
# Issue 21, transfer: 2.1.0's generators trained on with L_AM over the shipped classifier and a
# ResNet, chosen on validation patients (training/results/lidc-voi-resnet-am/RULE.md).
#   LIDC_VOI_DIR=../shared/lidc-voi bash scripts/train-resnet-am.sh [judge|train|select|ship]
# 1. judge: the shipped classifier imported (its validation patients), the seed-3 ResNet that L_AM
#    maximises (lidc-voi-resnet-judge.json) and the seed-4 ResNet that judges (…-judge-seed4.json).
# 2. train: gan-resnet-am (seed 3) and gan-resnet-am-seed4, warm-started from the shipped bundle's
#    generators, 800 steps each.
# 3. select: select-generators over its checks and 2.1.0 (judge: seed-4 ResNet); the best check by
#    the judged score that passes the keep floor is exported and audited on validation beside 2.1.0.
# Resumes every step. About 2 x 28 min (1), 2 x 60 min (2), 25 min (3) on one CPU core each.
source "$(dirname "$0")/lidc-voi-env.sh"
RESULTS=training/results/lidc-voi-resnet-am
SHIPPED=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi
CLASSIFIER=$RUNS/classifier/classifier.pt; MAXIMISED=$RUNS/classifier-resnet-judge/classifier.pt
JUDGE=$RUNS/classifier-resnet-judge-seed4/classifier.pt; RUN=$RUNS/gan-resnet-am
STAGE=${1:-all}
if [ "$STAGE" = all ] || [ "$STAGE" = judge ]; then
  bash scripts/train-gain.sh judge  # the imported classifier and the seed-3 ResNet
  [ -f "$JUDGE" ] || $TRAIN train-classifier --dataset "$DATA" \
    --config training/configs/lidc-voi-resnet-judge-seed4.json --out "$(dirname "$JUDGE")"
fi
if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  for SEED in 3 4; do
    OUT=$RUN; [ "$SEED" = 4 ] && OUT=$RUN-seed4
    FLAGS=(); [ -f "$OUT/cyclegan.pt" ] && FLAGS=(--resume) || FLAGS=(--warm-start "$SHIPPED")
    $TRAIN train-cyclegan --dataset "$DATA" --classifier "$CLASSIFIER" \
      --config training/configs/lidc-voi-v2-resnet-am.json --out "$OUT" --seed "$SEED" --also-maximise-for "$MAXIMISED" \
      "${FLAGS[@]}"
  done
fi
if [ "$STAGE" = all ] || [ "$STAGE" = select ]; then
  [ -f "$RESULTS/selection/selection.json" ] || $TRAIN select-generators --cyclegan "$RUN/cyclegan.pt" "$RUN-seed4/cyclegan.pt" \
    --dataset "$DATA" --out "$RESULTS/selection" --bundle "$SHIPPED" --judge-classifier "$JUDGE"
  # RULE.md 1-2: the best check by the judged score whose worst fill keeps p(G+) >= 0.85,
  # p(G-) <= 0.15 and own flips >= 0.90 both ways.
  CHECK=$(.venv/bin/python - "$RESULTS/selection/selection.json" <<'PY'
import json, sys
rows = [row for row in json.load(open(sys.argv[1]))["candidates"] if not row["bundle"]]
def worst(row, key, pick):
    return pick(row["figures"][f"{fill}/{key}"] for fill in ("air", "lung"))
kept = [row for row in rows if worst(row, "p_pos", min) >= 0.85 and worst(row, "p_neg", max) <= 0.15
        and worst(row, "flip_benign_to_malignant", min) >= 0.90 and worst(row, "flip_malignant_to_benign", min) >= 0.90]
print(max(kept, key=lambda row: row["score"]["value"])["check"] if kept else "")
PY
)
  if [ -z "$CHECK" ]; then echo "No check of $RUN passes the keep floor: 2.1.0 stays (RULE.md 4)."; exit 0; fi
  echo "Keep floor passed, best judged score: $CHECK"
  [ -f "$RUNS/bundle-resnet-am/metadata.json" ] || $TRAIN export --dataset "$DATA" --classifier "$CLASSIFIER" \
    --cyclegan "$(dirname "$(dirname "$CHECK")")/cyclegan.pt" --generators "$CHECK" --out "$RUNS/bundle-resnet-am" --name lidc-voi \
    --version 2.2.0-candidate
  for NAME in shipped candidate; do
    BUNDLE=$SHIPPED; FLAGS=(); [ "$NAME" = candidate ] && BUNDLE=$RUNS/bundle-resnet-am FLAGS=(--allow-unknown-bundle)
    [ -f "$RESULTS/validation/$NAME/audit.json" ] || $TRAIN audit "${FLAGS[@]}" --bundle "$BUNDLE" --dataset "$DATA" \
      --out "$RESULTS/validation/$NAME" --validation-of "$CLASSIFIER" --held-out-classifier "$JUDGE"
  done
fi
