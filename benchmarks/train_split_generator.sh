#!/usr/bin/env bash
# The downstream benchmark's generator: trained only on the "generator" part of a stratified split,
# with the default model's recipe and sampling defaults (DDIM 10, guidance 2; shorter training: the
# part has 62 of the 150 subjects). Resumable.
#
#     bash benchmarks/train_split_generator.sh runs/ixi-2mm-rigid runs/downstream
set -euo pipefail
PREPARED=${1:?usage: train_split_generator.sh PREPARED_COHORT OUT_FOLDER}
OUT=${2:?usage: train_split_generator.sh PREPARED_COHORT OUT_FOLDER}

synthbrain split --prepared "$PREPARED" --out "$OUT/split" --parts generator=0.4,pool=0.3,test=0.3 --seed 0
synthbrain train autoencoder --prepared "$OUT/split/generator" --run "$OUT/ae" --downsample 2 \
    --channels 16,32,32 --latent-channels 3 --steps 2000 --batch-size 2 --lr 3e-4 --checkpoint-every 100 --seed 0 --mirror-latents
synthbrain train diffusion --latents "$OUT/ae/latents" --run "$OUT/dm" \
    --channels 32,64 --attention 0,1 --head-channels 32 --embed-condition --steps 4000 --batch-size 8 --lr 3e-4 \
    --checkpoint-every 500 --seed 0 --default-sampler ddim --default-steps 10 --default-guidance-scale 2
