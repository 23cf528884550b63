#!/usr/bin/env bash
# Trains the embedded default model from scratch, exactly as shipped in synthbrain/models/default,
# then measures it. One command, resumable (run it again after an interruption):
#
#     bash examples/train_default_model.sh ../shared/data/ixi-hh
#
# On the 2-core CPU this took about 2 hours (times per stage in synthbrain/models/default/README.md).
set -euo pipefail
DATA=${1:?usage: train_default_model.sh IXI_HH_FOLDER [RUNS_FOLDER]}
RUNS=${2:-runs}

synthbrain prepare --images "$DATA/t1" --labels "$DATA/seg" --table "$DATA/participants.csv" --out "$RUNS/ixi-2mm-rigid" --spacing 2
synthbrain train autoencoder --prepared "$RUNS/ixi-2mm-rigid" --run "$RUNS/default/ae" --downsample 2 \
    --channels 16,32,32 --latent-channels 8 --perceptual-weight 0.3 --steps 3000 --batch-size 2 --lr 3e-4 --checkpoint-every 100 --seed 0 \
    --mirror-latents
synthbrain train diffusion --latents "$RUNS/default/ae/latents" --run "$RUNS/default/dm" \
    --channels 32,64 --attention 0,1 --head-channels 32 --embed-condition --prediction v_prediction --min-snr-gamma 5 \
    --steps 5000 --batch-size 8 --lr 3e-4 --checkpoint-every 250 --seed 0 \
    --default-sampler ddim --default-steps 10 --default-guidance-scale 2 --default-spacing trailing
rm -rf synthbrain/models/default.new
cp -r "$RUNS/default/dm/generator" synthbrain/models/default.new
cp synthbrain/models/default/README.md synthbrain/models/default.new/ 2>/dev/null || true
rm -rf synthbrain/models/default && mv synthbrain/models/default.new synthbrain/models/default

python benchmarks/generation_speed.py --model default --n 8
python benchmarks/generator_quality.py --model default --real "$RUNS/ixi-2mm-rigid" --downsample 2 --n 64 --compare-guidance 2,4
