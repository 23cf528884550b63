"""Which autoencoder loss weights give sharp, faithful reconstructions? Arms fine-tuned from one start.

The prepared cohort is split once (seeded, stratified by sex and age) into a training part and a
held-out part. Every arm starts from the same autoencoder (``--init``, e.g. the default model's,
trained with L1 + cross-entropy + KL) and is trained for the same number of steps on the training
part with its own loss weights; the reconstructions (posterior mean, decoded) of the held-out
subjects are then scored against the real images:

- ``L1``, ``PSNR`` (dB) on the whole volume;
- ``sharpness``: mean gradient magnitude inside the brain, reconstruction / real (1 = as sharp);
- ``high-frequency``: spectral power above half the Nyquist frequency, reconstruction / real;
- ``FD``: Fréchet distance of deepbet features (as ``synthbrain evaluate``), reconstructions vs the
  held-out real images; ``FD real-vs-real`` is the training part against the held-out part;
- ``label Dice``: mean over foreground classes, decoded label map vs the real one.

The start (``--init``) may have seen the held-out subjects (the default model was trained on all
of IXI-HH): the arms are compared with each other, not with a never-seen baseline.

    python benchmarks/autoencoder_losses.py --prepared runs/ixi-2mm-rigid --init synthbrain/models/default/autoencoder \
        --steps 300 --arm "L1 (as v2)=" --arm "perceptual 0.1=perceptual:0.1" --out docs/benchmarks/autoencoder-losses
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _report import markdown_table  # noqa: E402

from synthbrain import _io  # noqa: E402
from synthbrain.autoencoder.losses import AutoencoderLossWeights  # noqa: E402
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder  # noqa: E402
from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder  # noqa: E402
from synthbrain.components import load_component  # noqa: E402
from synthbrain.evaluation.features import FeatureExtractor  # noqa: E402
from synthbrain.evaluation.metrics import frechet_distance  # noqa: E402
from synthbrain.overlap import dice_per_class  # noqa: E402
from synthbrain.preprocessing.prepared import PreparedCohort  # noqa: E402
from synthbrain.preprocessing.split import split_prepared  # noqa: E402


def parse_arm(text: str) -> tuple[str, dict[str, float]]:
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--arm {text!r}: expected NAME=TERM:WEIGHT,... (e.g. 'perceptual 0.1=perceptual:0.1'; 'L1=' for the defaults)")
    weights = {}
    for item in filter(None, spec.split(",")):
        term, _, value = item.partition(":")
        weights[term] = float(value)
    AutoencoderLossWeights(**weights)  # validates names and values
    return name, weights


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|grad| by central differences, (N, 1, D-2, H-2, W-2)."""
    gx = x[:, :, 2:, 1:-1, 1:-1] - x[:, :, :-2, 1:-1, 1:-1]
    gy = x[:, :, 1:-1, 2:, 1:-1] - x[:, :, 1:-1, :-2, 1:-1]
    gz = x[:, :, 1:-1, 1:-1, 2:] - x[:, :, 1:-1, 1:-1, :-2]
    return (gx.pow(2) + gy.pow(2) + gz.pow(2)).sqrt() / 2


def high_frequency_power(x: torch.Tensor) -> torch.Tensor:
    """Per volume: spectral power at frequencies above half the Nyquist frequency in every axis' norm."""
    spectrum = torch.fft.fftn(x[:, 0], dim=(1, 2, 3)).abs().pow(2)
    grids = torch.meshgrid(*[torch.fft.fftfreq(n) for n in x.shape[2:]], indexing="ij")
    radius = torch.sqrt(sum(g.pow(2) for g in grids))
    return spectrum[:, radius > 0.25].sum(1)


@torch.no_grad()
def reconstruct(folder: Path, images: torch.Tensor, fractions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model = load_component(BrainAutoencoder, AutoencoderConfig, folder).eval()
    recon, labels = [], []
    for i in range(0, len(images), 4):
        mu, _ = model.encode(images[i : i + 4], fractions[i : i + 4])
        image, logits = model.decode(mu)
        recon.append(image.clamp(0, 1))
        labels.append(logits.argmax(1))
    return torch.cat(recon), torch.cat(labels)


def score(recon, labels, real, real_labels, mask, extractor, real_features, spacing, classes) -> dict[str, float]:
    l1 = (recon - real).abs().mean().item()
    mse = (recon - real).pow(2).flatten(1).mean(1)
    inner = mask[:, :, 1:-1, 1:-1, 1:-1]
    sharp = (gradient_magnitude(recon)[inner].mean() / gradient_magnitude(real)[inner].mean()).item()
    high = (high_frequency_power(recon) / high_frequency_power(real)).mean().item()
    dice = np.nanmean([dice_per_class(a.numpy(), b.numpy(), classes)[1:] for a, b in zip(labels, real_labels)])
    fd = frechet_distance(extractor(recon, spacing), real_features)
    psnr = (10 * torch.log10(1 / mse)).mean().item()
    return {"L1": l1, "PSNR": psnr, "sharpness": sharp, "high-frequency": high, "FD": fd, "label Dice": dice}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True, help="autoencoder component folder every arm starts from")
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--held-out", type=float, default=0.2, help="fraction of subjects held out for scoring")
    parser.add_argument("--arm", action="append", required=True, help="NAME=TERM:WEIGHT,... (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/autoencoder-losses"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/autoencoder-losses"))
    args = parser.parse_args(argv)
    arms = [parse_arm(a) for a in args.arm]
    parts = split_prepared(args.prepared, args.runs / "split", {"train": 1 - args.held_out, "held_out": args.held_out}, seed=args.seed)
    config = load_component(BrainAutoencoder, AutoencoderConfig, args.init).config
    test = PreparedCohort.load(parts["held_out"], args.downsample)
    train = PreparedCohort.load(parts["train"], args.downsample)
    items = [test[i] for i in range(len(test))]
    real = torch.stack([it["image"] for it in items])
    fractions = torch.stack([it["labels"] for it in items])
    real_labels, mask = fractions.argmax(1), fractions[:, :1] < 0.5
    spacing = test.output_grid.spacing
    extractor = FeatureExtractor()
    real_features = extractor(real, spacing)
    train_images = torch.stack([train[i]["image"] for i in range(len(train))])
    rows = [{"arm": "real (training part vs held-out)", "FD": frechet_distance(extractor(train_images, spacing), real_features)}]
    shown = {"real": real}
    for name, weights in arms:
        start = time.perf_counter()
        settings = AutoencoderTraining(
            steps=args.steps,
            batch_size=2,
            learning_rate=args.lr,
            checkpoint_every=50,
            log_every=10,
            seed=args.seed,
            init=str(args.init),
            weights=AutoencoderLossWeights(**weights),
        )
        slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
        folder = train_autoencoder(parts["train"], args.runs / slug, config, settings, downsample=args.downsample, device="cpu")
        seconds = time.perf_counter() - start
        recon, labels = reconstruct(folder, real, fractions)
        shown[name] = recon
        rows.append(
            {"arm": name, "weights": ", ".join(f"{k} {v:g}" for k, v in weights.items()) or "defaults", "seconds": seconds}
            | score(recon, labels, real, real_labels, mask, extractor, real_features, spacing, config.num_classes)
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    _io.write_table(args.out.with_suffix(".tsv"), table)
    figure = args.out.with_suffix(".png")
    fig, axes = plt.subplots(3, len(shown), figsize=(2.2 * len(shown), 6.6), squeeze=False)
    for column, (name, volumes) in enumerate(shown.items()):
        for row in range(3):
            v = volumes[row, 0].numpy()
            axes[row, column].imshow(v[:, :, v.shape[2] // 2].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axes[row, column].axis("off")
        axes[0, column].set_title(name, fontsize=8)
    fig.tight_layout()
    _io.save_figure(figure, fig)
    shown_argv = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/autoencoder_losses.py " + " ".join(f"'{a}'" if " " in a else a for a in shown_argv)
    _io.write_json(args.out.with_suffix(".json"), {"command": command, "steps": args.steps, "rows": table.to_dict("records")})
    report = "\n\n".join(
        [
            "# Autoencoder loss weights: reconstructions of held-out subjects",
            f"Every arm fine-tuned from `{args.init}` for {args.steps} steps (batch 2, lr {args.lr}) on "
            f"{len(train)} subjects; scored on {len(test)} held-out subjects. Sharpness and high-frequency power are "
            "reconstruction / real (1 = as sharp as real); FD on deepbet features against the held-out real images.",
            markdown_table(table),
            f"![held-out subjects, axial mid-slices: real, then each arm]({figure.name})",
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)


if __name__ == "__main__":
    main()
