"""Seconds per training step of the generator's networks on this machine, to plan training budgets.

Autoencoder: the joint image + label model (1 + C channels in and out) against the image-only
reference (1 channel, the reference model's layout) in the same run, on random data of the grid's
shape. Diffusion UNet: on latents of the matching shape. Medians of --repeats steps after one warm-up.

    python benchmarks/training_step.py --grid 40,56,40 --classes 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from _report import markdown_table

from synthbrain import _io
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


def autoencoder_step(config: AutoencoderConfig, grid, batch: int):
    torch.manual_seed(0)
    model = BrainAutoencoder(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.rand(batch, 1, *grid)
    labels = torch.randint(0, config.num_classes, (batch, *grid)) if config.num_classes else None

    def step():
        loss = autoencoder_loss(model(image, labels), image, labels)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step, sum(p.numel() for p in model.parameters())


def unet_step(config: DiffusionConfig, latent, batch: int):
    torch.manual_seed(0)
    model = ConditionalUNet(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, c, t = torch.randn(batch, config.latent_channels, *latent), torch.rand(batch, config.condition_dim), torch.randint(0, 1000, (batch,))

    def step():
        loss = model(x, t, c).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="40,56,40", help="image grid (4 mm: 40,56,40)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    grid = tuple(int(x) for x in args.grid.split(","))
    rows = []
    for channels, batch in [((32, 64, 64), 2), ((16, 32, 32), 2)]:
        reference = None
        for classes in (0, args.classes):
            config = AutoencoderConfig(num_classes=classes, channels=channels, norm_num_groups=16 if min(channels) >= 16 else 8)
            step, params = autoencoder_step(config, grid, batch)
            seconds = time_steps(step, args.repeats)
            reference = reference or seconds
            rows.append(
                {
                    "network": f"autoencoder {channels}, {1 + classes} channels in/out",
                    "input": f"{batch} x {grid}",
                    "parameters (M)": params / 1e6,
                    "s/step": seconds,
                    "vs image-only": seconds / reference,
                }
            )
    latent = tuple(n // 4 for n in grid)
    for channels, batch in [((64, 128), 8), ((32, 64), 8)]:  # two levels: a 4 mm latent (10 x 14 x 10) halves once
        config = DiffusionConfig(
            channels=channels,
            attention_levels=(False, True),
            num_head_channels=32 if channels[0] >= 64 else 16,
            norm_num_groups=32 if channels[0] >= 64 else 16,
        )
        step, params = unet_step(config, latent, batch)
        seconds = time_steps(step, args.repeats)
        rows.append(
            {
                "network": f"diffusion UNet {channels}",
                "input": f"{batch} x 3 x {latent}",
                "parameters (M)": params / 1e6,
                "s/step": seconds,
                "vs image-only": float("nan"),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/training_step.py --grid {args.grid} --classes {args.classes} --repeats {args.repeats}"
    _io.write_json(args.out / "training-step.json", {"command": command, "threads": torch.get_num_threads(), "rows": rows})
    _io.write_text(
        args.out / "training-step.md",
        "\n".join(
            [
                "# Training step time on this machine",
                "",
                f"Command: `{command}` ({torch.get_num_threads()} threads, float32, CPU).",
                "",
                markdown_table(table),
                "",
            ]
        ),
    )


if __name__ == "__main__":
    main()
