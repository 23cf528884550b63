"""Seconds per training step of the generator's networks on this machine, to plan training budgets.

Autoencoder: the joint image + label model (1 + C channels in and out) and the image-only model
(1 channel, the reference model's layout), on random data of the grid's shape; and version 4's
autoencoder (2 mm, 16-32-64-64 channels, 8 latent channels) on its training patches of 32 x 48 x 32
voxels. Diffusion UNet: on latents of the matching shape. Each network in every --precisions
(``synthbrain.training.PRECISIONS``) and in float32 ("32-true", always measured first: "vs 32-true" is
the ratio to it in the same run). Medians of --repeats steps after one warm-up.

    python benchmarks/training_step.py --grid 40,56,40 --classes 8 --precisions 32-true,bf16-mixed
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from _report import markdown_table

from synthbrain import _io, training
from synthbrain.autoencoder.losses import autoencoder_loss
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig


def time_steps(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autoencoder_step(config: AutoencoderConfig, grid, batch: int, precision: str):
    torch.manual_seed(0)
    model = BrainAutoencoder(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.rand(batch, 1, *grid)
    labels = torch.randint(0, config.num_classes, (batch, *grid)) if config.num_classes else None

    def step():
        with training.autocast(torch.device("cpu"), precision):
            out = model(image, labels)
        loss = autoencoder_loss(out, image, labels)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step, sum(p.numel() for p in model.parameters())


def unet_step(config: DiffusionConfig, latent, batch: int, precision: str):
    torch.manual_seed(0)
    model = ConditionalUNet(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, c, t = torch.randn(batch, config.latent_channels, *latent), torch.rand(batch, config.condition_dim), torch.randint(0, 1000, (batch,))

    def step():
        with training.autocast(torch.device("cpu"), precision):
            prediction = model(x, t, c)
        loss = prediction.float().pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="40,56,40", help="image grid (4 mm: 40,56,40)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="32-true", help="comma-separated, from synthbrain.training.PRECISIONS")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    grid = tuple(int(x) for x in args.grid.split(","))
    precisions = list(dict.fromkeys(["32-true", *(training.check_precision(p) for p in args.precisions.split(","))]))
    rows = []

    def measure(network: str, data: str, make) -> None:
        reference = None
        for precision in precisions:  # 32-true first
            step, params = make(precision)
            seconds = time_steps(step, args.repeats)
            reference = reference or seconds
            rows.append({"network": network, "input": data, "precision": precision, "parameters (M)": params / 1e6, "s/step": seconds})
            rows[-1]["vs 32-true"] = seconds / reference

    for channels, batch in [((32, 64, 64), 2), ((16, 32, 32), 2)]:
        for classes in (0, args.classes):
            config = AutoencoderConfig(num_classes=classes, channels=channels, norm_num_groups=16 if min(channels) >= 16 else 8)
            network = f"autoencoder {channels}, {1 + classes} channels in/out"
            measure(network, f"{batch} x {grid}", lambda p, c=config, b=batch: autoencoder_step(c, grid, b, p))
    v4, patch = AutoencoderConfig(num_classes=args.classes, channels=(16, 32, 64, 64), latent_channels=8), (32, 48, 32)
    v4_name = "autoencoder v4 (16, 32, 64, 64), 8 latent channels"
    measure(v4_name, f"2 x {patch} (2 mm patches)", lambda p: autoencoder_step(v4, patch, 2, p))
    latent = tuple(n // 4 for n in grid)
    for channels, batch in [((64, 128), 8), ((32, 64), 8)]:  # two levels: a 4 mm latent (10 x 14 x 10) halves once
        config = DiffusionConfig(
            channels=channels,
            attention_levels=(False, True),
            num_head_channels=32 if channels[0] >= 64 else 16,
            norm_num_groups=32 if channels[0] >= 64 else 16,
        )
        measure(f"diffusion UNet {channels}", f"{batch} x 3 x {latent}", lambda p, c=config, b=batch: unet_step(c, latent, b, p))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    command = (
        f"python benchmarks/training_step.py --grid {args.grid} --classes {args.classes} --repeats {args.repeats} "
        f"--precisions {args.precisions}"
    )
    _io.write_json(args.out / "training-step.json", {"command": command, "threads": torch.get_num_threads(), "rows": rows})
    _io.write_text(
        args.out / "training-step.md",
        "\n".join(
            [
                "# Training step time on this machine",
                "",
                f"Command: `{command}` ({torch.get_num_threads()} threads, CPU). 32-true: float32 throughout; bf16-mixed: the "
                "forward pass under bfloat16 autocast (`synthbrain train ... --precision bf16-mixed`); vs 32-true: the ratio "
                "of the seconds per step to float32's in the same run (below 1: faster).",
                "",
                markdown_table(table),
                "",
            ]
        ),
    )


if __name__ == "__main__":
    main()
