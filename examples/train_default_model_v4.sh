#!/usr/bin/env bash
# Trains default model version 4 (2 mm, 80 x 112 x 80 voxels) from scratch. IN PROGRESS: the
# autoencoder stage below is the one being trained; the diffusion stage and the sampling defaults
# are not decided yet (they will be chosen by measured recall, variety and ventricular r, issue 30),
# so this script stops after the autoencoder and its measurement. Resumable: run it again after an
# interruption, or with a larger PATCH_STEPS to train further (phase 2 then starts afresh in a folder
# named after PATCH_STEPS, from the longer phase 1).
#
#     bash examples/train_default_model_v4.sh ../shared/data/ixi-hh [RUNS_FOLDER] [PATCH_STEPS] [WHOLE_VOLUME_STEPS]
#
# Autoencoder (attempt 3): 4x compression per axis (3 levels, 16-32-64 channels, 8 latent channels),
# so the 2 mm grid gives a 20 x 28 x 20 latent (the released brain LDM's latent size; it compresses 1 mm
# volumes 8x). Chosen by measurement over the 8x network of attempts 1 and 2 (16-32-64-64 channels,
# 10 x 14 x 10 latent), whose patch loss stopped falling after 2000 steps (L1 0.079 there, the 4x
# network's 0.059) at the same cost a step, and whose held-out crops kept less detail (model card,
# synthbrain/models/default/README.md). Phase 1 trains on random 32 x 48 x 32 patches (64 x 96 x 64
# mm; MAISI trains on patches, the network is fully convolutional): L1 + cross-entropy + KL +
# perceptual (deepbet's features, weight 0.3), and after 1000 reconstruction-only steps a patch
# discriminator with MAISI's fixed adversarial weight 0.1. Phase 2 continues on whole volumes from
# phase 1's weights: group normalisation computes its statistics over the whole input, and a volume
# that is mostly background gives other statistics than a brain patch (a patch-trained network
# reconstructs whole volumes too bright inside the brain); 40 steps by default, as 160 kept less fine
# detail (high-frequency share 0.26 against 0.34 of real). Phase 2 starts a new discriminator at once
# (the reconstruction is trained already). Each phase caches latents; the diffusion stage takes phase 2's.
# bf16-mixed: bfloat16 autocast, about twice as fast a step on CPUs with bfloat16 instructions
# (docs/benchmarks/training-step.md); use --precision 32-true on others.
set -euo pipefail
DATA=${1:?usage: train_default_model_v4.sh IXI_HH_FOLDER [RUNS_FOLDER] [PATCH_STEPS] [WHOLE_VOLUME_STEPS]}
RUNS=${2:-runs}
STEPS=${3:-20000}
WHOLE_STEPS=${4:-40}

synthbrain prepare --images "$DATA/t1" --labels "$DATA/seg" --table "$DATA/participants.csv" --out "$RUNS/ixi-2mm-rigid" --spacing 2
# 20 % of the subjects are held out (stratified by sex and age) so that reconstructions and samples
# are measured on brains the model never saw.
synthbrain split --prepared "$RUNS/ixi-2mm-rigid" --out "$RUNS/v4/split" --parts train=0.8,test=0.2 --seed 0
synthbrain train autoencoder --prepared "$RUNS/v4/split/train" --run "$RUNS/v4/ae" \
    --channels 16,32,64 --latent-channels 8 --patch-size 32,48,32 --batch-size 2 --lr 2e-4 \
    --perceptual-weight 0.3 --adversarial-weight 0.1 --adversarial-warmup 1000 --precision bf16-mixed \
    --steps "$STEPS" --checkpoint-every 50 --seed 0
synthbrain train autoencoder --prepared "$RUNS/v4/split/train" --run "$RUNS/v4/ae-whole-$STEPS" --init "$RUNS/v4/ae/autoencoder" \
    --channels 16,32,64 --latent-channels 8 --batch-size 1 --lr 1e-4 \
    --perceptual-weight 0.3 --adversarial-weight 0.1 --adversarial-warmup 0 --precision bf16-mixed \
    --steps "$WHOLE_STEPS" --checkpoint-every 20 --seed 0 --mirror-latents
python benchmarks/autoencoder_detail.py --autoencoder "$RUNS/v4/ae-whole-$STEPS/autoencoder" --real "$RUNS/v4/split/test" \
    --out docs/benchmarks/autoencoder-detail
