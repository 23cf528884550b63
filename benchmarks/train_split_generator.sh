#!/usr/bin/env bash
# The downstream benchmark's generator: trained only on the "generator" part of a stratified split,
# with the default model's recipe and sampling defaults (DDIM 10, guidance 2; shorter diffusion
# training: the part has 55 of the 150 subjects). Resumable.
#
#     bash benchmarks/train_split_generator.sh runs/ixi-2mm-rigid runs/downstream
set -euo pipefail
PREPARED=${1:?usage: train_split_generator.sh PREPARED_COHORT OUT_FOLDER}
OUT=${2:?usage: train_split_generator.sh PREPARED_COHORT OUT_FOLDER}

synthbrain split --prepared "$PREPARED" --out "$OUT/split" --parts generator=0.35,pool=0.3,val=0.1,test=0.25 --seed 0
synthbrain train autoencoder --prepared "$OUT/split/generator" --run "$OUT/ae" --downsample 2 \
    --channels 16,32,32 --latent-channels 8 --perceptual-weight 0.3 --steps 3000 --batch-size 2 --lr 3e-4 --checkpoint-every 100 --seed 0 \
    --mirror-latents
synthbrain train diffusion --latents "$OUT/ae/latents" --run "$OUT/dm" \
    --channels 32,64 --attention 0,1 --head-channels 32 --embed-condition --prediction v_prediction --min-snr-gamma 5 \
    --steps 3000 --batch-size 8 --lr 3e-4 --checkpoint-every 250 --seed 0 \
    --default-sampler ddim --default-steps 10 --default-guidance-scale 2 --default-spacing trailing
