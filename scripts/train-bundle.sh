#!/usr/bin/env bash
# Trains one model bundle from scratch, resuming wherever a previous run stopped:
# data -> classifier -> CycleGAN-AM -> bundle -> evaluation on the test split.
#   bash scripts/train-bundle.sh VARIANT [STEPS]
# VARIANT:
#   lidc-voi        the default bundle (2.0.0), on real LIDC-IDRI nodule sub-volumes; needs
#                   LIDC_VOI_DIR=<folder laid out like lidc-voi> (split.csv, data/VOIs, metadata CSV).
#                   Classifier, its twin and a held-out ResNet; GAN A (realism terms), GAN B (A's
#                   networks plus L_AM over the classifier and its twin); select-generators over
#                   every validation check of both and the 1.0.0 bundle; export; evaluate; audit.
#   lidc-voi-1      the 1.0.0 bundle's recipe (two GAN seeds, no realism terms), into training/runs
#   lidc-phantoms   LIDC shape phantoms (the earlier bundle, kept as a second choice)
#   lidc-phantoms-size-normalised   every phantom nodule scaled to one size (bundle kept in training/runs)
# STEPS (default: the config's) limits this run's CycleGAN-AM steps; a later call with more steps
# continues bit-for-bit from the checkpoint. Work files live in training/cache and training/runs
# (not committed); the evaluation report goes to training/results/VARIANT.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: train-bundle.sh lidc-voi|lidc-voi-1|lidc-phantoms|lidc-phantoms-size-normalised [STEPS]}
GAN_SEEDS=(0)
TRAIN=.venv/bin/cyclegan-explain-train
# One torch thread per process: on a shared CPU, OpenMP threads that wait for each other are slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$VARIANT" = lidc-voi ]; then
  : "${LIDC_VOI_DIR:?set LIDC_VOI_DIR to the folder of real nodule sub-volumes (laid out like lidc-voi)}"
  bash scripts/setup.sh
  DATA=training/cache/prepared/lidc-voi; RUNS=training/runs/lidc-voi-v2; RESULTS=training/results/lidc-voi
  BUNDLE=CycleGANExplain/CycleGANExplainLib/resources/models/lidc-voi; V2=training/configs/lidc-voi-v2.json
  [ -f "$DATA/manifest.json" ] || $TRAIN prepare --out "$DATA" --source voi --voi-dir "$LIDC_VOI_DIR"
  for RUN in classifier:lidc-voi classifier-twin:lidc-voi-twin classifier-resnet:lidc-voi-resnet; do
    [ -f "$RUNS/${RUN%%:*}/classifier.pt" ] || $TRAIN train-classifier --dataset "$DATA" \
      --config "training/configs/${RUN##*:}.json" --out "$RUNS/${RUN%%:*}"
  done
  gan() {  # run folder, then train-cyclegan's other flags; resumes a run that exists
    local out=$1; shift
    local resume=(); [ -f "$out/cyclegan.pt" ] && resume=(--resume)
    $TRAIN train-cyclegan --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --config "$V2" \
      --out "$out" "${resume[@]}" "$@"
  }
  # GAN A stopped at 2,300 of the config's 3,000 steps (CPU time); GAN B starts from its networks.
  gan "$RUNS/gan-a" --seed 0 --steps 2300
  WARM=(); [ -f "$RUNS/gan-b/cyclegan.pt" ] || WARM=(--warm-start "$RUNS/gan-a/cyclegan.pt")
  gan "$RUNS/gan-b" --seed 1 --steps 600 --also-maximise-for "$RUNS/classifier-twin/classifier.pt" "${WARM[@]}"
  $TRAIN select-generators --cyclegan "$RUNS/gan-a/cyclegan.pt" "$RUNS/gan-b/cyclegan.pt" --dataset "$DATA" \
    --out "$RUNS/selection" ${PREVIOUS_BUNDLE:+--bundle "$PREVIOUS_BUNDLE" --allow-unknown-bundle}
  CHOSEN=$(.venv/bin/python -c 'import json,sys; c=json.load(open(sys.argv[1]))["chosen"]; print(c["run"], c["check"])' \
    "$RUNS/selection/selection.json")
  read -r CHOSEN_RUN CHOSEN_CHECK <<< "$CHOSEN"
  [ "$CHOSEN_CHECK" != None ] || { echo "the previous bundle scored best on validation: nothing to export" >&2; exit 1; }
  $TRAIN export --dataset "$DATA" --classifier "$RUNS/classifier/classifier.pt" --cyclegan "$CHOSEN_RUN" \
    --generators "$CHOSEN_CHECK" --out "$BUNDLE" --name lidc-voi --version 2.0.0 --overwrite
  $TRAIN evaluate --allow-unknown-bundle --bundle "$BUNDLE" --dataset "$DATA" --out "$RESULTS" --attach \
    --voi-dir "$LIDC_VOI_DIR"
  $TRAIN audit --allow-unknown-bundle --bundle "$BUNDLE" --dataset "$DATA" --out "$RESULTS" \
    --held-out-classifier "$RUNS/classifier-resnet/classifier.pt"
  exit 0
fi
case "$VARIANT" in
  lidc-voi-1)
    : "${LIDC_VOI_DIR:?set LIDC_VOI_DIR to the folder of real nodule sub-volumes (laid out like lidc-voi)}"
    PREPARE_FLAGS=(--source voi --voi-dir "$LIDC_VOI_DIR"); BUNDLE=training/runs/lidc-voi/bundle
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
DATA=training/cache/prepared/${VARIANT%-1}
RUNS=training/runs/${VARIANT%-1}
RESULTS=training/results/$VARIANT

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
