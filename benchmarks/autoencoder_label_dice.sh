#!/usr/bin/env bash
# Does a soft Dice term on the decoded labels (--labels-dice-weight) keep the 2 mm autoencoder's cortex thin?
# (issue 30; results in docs/benchmarks/autoencoder-label-dice.md). Three autoencoders, each measured on the
# 29 held-out subjects of the v4 split, whole and in windows of the training patch size:
#   ctrl:    the shipped default-2mm autoencoder fine-tuned 1500 steps with its own recipe (a fresh discriminator);
#   dice1:   the same with --labels-dice-weight 1 (the only difference);
#   scratch: the whole v4 recipe from scratch (seed 0, 8650 steps, as shipped) with --labels-dice-weight 1.
# About 1 h 50 min on 2 cores. Needs the split of examples/train_default_model_v4.sh in RUNS/v4/split.
#
#     bash benchmarks/autoencoder_label_dice.sh [RUNS_FOLDER]
set -euo pipefail
RUNS=${1:-runs}
recipe="--prepared $RUNS/v4/split/train --channels 16,32,64 --latent-channels 8 --patch-size 32,48,32 --batch-size 2
    --lr 2e-4 --perceptual-weight 0.3 --adversarial-weight 0.1 --precision bf16-mixed --checkpoint-every 50 --mirror-latents"
finetune="$recipe --init synthbrain/models/default-2mm/autoencoder --adversarial-warmup 0 --steps 1500 --seed 1"
# shellcheck disable=SC2086  # the recipes are word lists
synthbrain train autoencoder $finetune --run "$RUNS/v4/ae-ctrl"
# shellcheck disable=SC2086
synthbrain train autoencoder $finetune --run "$RUNS/v4/ae-dice1" --labels-dice-weight 1
# shellcheck disable=SC2086
synthbrain train autoencoder $recipe --adversarial-warmup 1000 --steps 8650 --seed 0 --run "$RUNS/v4/ae-dice-scratch" \
    --labels-dice-weight 1
measure() {  # NAME AUTOENCODER
    python benchmarks/autoencoder_detail.py --autoencoder "$2" --real "$RUNS/v4/split/test" --out "$RUNS/v4/label-dice/$1-whole"
    python benchmarks/autoencoder_detail.py --autoencoder "$2" --real "$RUNS/v4/split/test" --window 32,48,32 --overlap 0.5 \
        --out "$RUNS/v4/label-dice/$1-windows"
}
measure shipped synthbrain/models/default-2mm/autoencoder
measure ctrl "$RUNS/v4/ae-ctrl/autoencoder"
measure dice1 "$RUNS/v4/ae-dice1/autoencoder"
measure scratch-dice1 "$RUNS/v4/ae-dice-scratch/autoencoder"
python benchmarks/autoencoder_label_dice_report.py "$RUNS/v4/label-dice" docs/benchmarks/autoencoder-label-dice
