"""How much fine detail and variety does an autoencoder keep? Its reconstructions of held-out subjects.

The autoencoder sets the detail floor of a latent diffusion model: whatever it loses, no sample can
have (issue 30). For every subject of a prepared cohort the autoencoder never saw, the posterior mean
is decoded as generation decodes it (:meth:`BrainAutoencoder.reconstruct`) and compared with the real
image, inside each one's own brain (label map > 0), on the measures of ``synthbrain evaluate``
(:mod:`synthbrain.evaluation.metrics`):

- share of spectral power above 0.25 cycles/voxel, share of variance a 1-voxel Gaussian blur removes
  (high-pass share) and mean gradient magnitude (detail),
- median pairwise L2 distance between subjects (variety),
- on whole volumes with a label scheme that has ``cortical_gm`` and ``csf``: the share of cortical grey
  matter more than 2 voxels from CSF and background (:func:`~synthbrain.evaluation.metrics.buried_share`;
  grey-matter blobs inside white matter where a real cortex is a folded ribbon along the surface),
- L1 and PSNR against the real image, Dice of the decoded label map (fidelity).

Ratios are reconstruction / real (1 = as detailed or varied as real brains). ``--crop D,H,W`` measures
crops of that size instead (per axis two starts, a quarter of the crop either side of the centred
one and kept inside the grid, so up to eight per subject, each reconstructed on its own): the way to
compare autoencoders trained on patches of that size before their whole-volume steps, whose group
normalisation is not yet matched to whole volumes. Pairwise L2 then compares crops at the same place;
the spectral share counts the brain's cut at the crop's faces as high frequencies (the transform is
periodic), so on crops the local high-pass share is the measure to read, and crop numbers are never
compared with whole-volume ones. ``--window D,H,W`` (with ``--overlap``) reconstructs each volume in
overlapping windows of that size instead (:meth:`BrainAutoencoder.reconstruct`): an autoencoder trained on
patches of that size then sees the group-normalisation statistics it was trained with, which separates
an intensity shift on whole volumes from lost detail. Samples are always decoded whole, as generation does.

``--model GENERATOR -n N`` measures a whole latent diffusion model instead: its own autoencoder's
reconstructions as above, and N samples drawn with the model's sampling defaults (covariates from its
training distribution, volume seeds from ``--seed``), each inside its own generated brain. The
reconstruction and sample columns side by side pin a shortfall on the stage that causes it. For
samples it also reports how the ventricular and brain volume measured on the generated label map
follow the requested ones (Pearson r), and seconds per sample volume. ``--dtype bfloat16`` samples in
that precision (reconstructions stay in the model's stored precision). Writes OUT.md, OUT.json
(strict JSON) and OUT.png (raw axial and coronal mid-slices, real above reconstruction, and a row of
samples, which are not of those subjects, where there are; one intensity window, no overlay).

    python benchmarks/autoencoder_detail.py --autoencoder runs/v4/ae/autoencoder --real runs/v4/split/test \\
        --out docs/benchmarks/autoencoder-detail
    python benchmarks/autoencoder_detail.py --model runs/v4/dm/generator --real runs/v4/split/test -n 64 \\
        --out docs/benchmarks/generator-detail
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _report import markdown_table
from matplotlib.figure import Figure
from scipy import stats
from tqdm.auto import tqdm

from synthbrain import BrainGenerator, _io, training
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.cli import _ints
from synthbrain.components import load_component
from synthbrain.evaluation.metrics import (
    buried_share,
    high_frequency_share,
    high_pass_share,
    mean_gradient_magnitude,
    pairwise_distances,
)
from synthbrain.overlap import dice_per_class
from synthbrain.preprocessing.prepared import PreparedCohort

# Cortical grey matter farther than this many voxels from CSF and background (buried in white matter
# rather than lining the surface), measured on the label maps: real, decoded, generated.
BURIED_MARGIN = 2
BURIED = f"buried cortical grey matter share (> {BURIED_MARGIN} voxels from CSF or background)"


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    autoencoder, step = _load(args)
    cohort = PreparedCohort.load(args.real, args.downsample)
    if len(cohort) < 2:
        raise SystemExit(f"--real {args.real}: {len(cohort)} subject; allowed: >= 2 (variety needs pairs)")
    classes = autoencoder.config.num_classes
    if classes and (cohort.label_scheme is None or cohort.label_scheme.num_classes != classes):
        raise SystemExit(f"--real {args.real}: its label classes do not match the autoencoder's {classes}")
    grid = cohort.output_grid.shape
    regions = _regions(grid, args.crop, autoencoder.config.downsample)
    real, recon, real_labels, recon_labels, seconds = [], [], [], [], []
    for index in tqdm(range(len(cohort)), desc="reconstruct", unit="subject"):
        item = cohort[index]
        truth = item["labels"].argmax(0) if item["labels"].is_floating_point() else item["labels"]
        for region in regions:  # the whole volume, or one crop after another
            image = item["image"][(slice(None), *region)][None]
            labels = item["labels"][(..., *region)][None] if autoencoder.config.num_classes else None
            started = time.perf_counter()
            decoded, decoded_classes = autoencoder.reconstruct(image, labels, args.window, args.overlap)
            seconds.append(time.perf_counter() - started)
            real.append(image)
            recon.append(decoded)
            real_labels.append(truth[region][None])
            recon_labels.append(decoded_classes if decoded_classes is not None else (decoded[:, 0] > 0).long())
    real, recon = torch.cat(real), torch.cat(recon)
    real_labels, recon_labels = torch.cat(real_labels), torch.cat(recon_labels)
    real_brain, recon_brain = (real_labels > 0)[:, None], (recon_labels > 0)[:, None]

    per_set = {
        "real": _measures(real, real_brain, len(regions)),
        "reconstructions": _measures(recon, recon_brain, len(regions)),
    }
    samples = _samples(args, cohort) if args.model is not None else None
    if samples is not None:
        per_set["samples"] = _measures(samples["images"], samples["brain"], 1)
    names = list(cohort.label_scheme.class_names) if cohort.label_scheme is not None else []
    if args.crop is None and {"cortical_gm", "csf"} <= set(names) and classes:  # whole brains with their surface
        label_sets = {"real": real_labels, "reconstructions": recon_labels} | ({} if samples is None else {"samples": samples["labels"]})
        for name, labels in label_sets.items():
            shares = buried_share(labels, names.index("cortical_gm"), [0, names.index("csf")], margin=BURIED_MARGIN)
            per_set[name][BURIED] = float(np.nanmean(shares)) if np.isfinite(shares).any() else None  # None: no grey matter
    error = (recon - real).abs().flatten(1).mean(1).numpy()
    mse = (recon - real).pow(2).flatten(1).mean(1).numpy()
    pairs = zip(real_labels.numpy(), recon_labels.numpy())
    dice = np.array([np.nanmean(dice_per_class(t, p, max(classes, 2))[1:]) for t, p in pairs])
    result = {
        "autoencoder": str(args.autoencoder or (args.model / "autoencoder" if args.model else args.run / training.CHECKPOINT)),
        "training_step": step,
        "config": autoencoder.config.to_dict(),
        "real": str(args.real),
        "subjects": len(cohort),
        "grid": list(grid),
        "crop": None if args.crop is None else list(args.crop),
        "regions_per_subject": len(regions),
        "window": None if args.window is None else {"size": list(args.window), "overlap": args.overlap},
        "spacing_mm": cohort.output_grid.spacing,
        "measures": {
            name: {
                "real": per_set["real"][name],
                "reconstructions": per_set["reconstructions"][name],
                "ratio": _ratio(per_set["reconstructions"][name], per_set["real"][name]),
            }
            | (
                {}
                if samples is None
                else {"samples": per_set["samples"][name], "samples_ratio": _ratio(per_set["samples"][name], per_set["real"][name])}
            )
            for name in per_set["real"]
        },
        "samples": None if samples is None else samples["summary"],
        "l1": float(error.mean()),
        "psnr_db": float((10 * np.log10(1.0 / mse)).mean()),
        "label_dice": float(np.nanmean(dice)),
        "seconds_per_reconstruction": float(np.median(seconds)),
        "command": "python benchmarks/autoencoder_detail.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(out.with_suffix(".json"), result)
    _io.write_text(out.with_suffix(".md"), _markdown(result, out))
    rows = (real[:: len(regions)], recon[:: len(regions)])  # one region per subject
    _figure(rows if samples is None else (*rows, samples["images"]), out.with_suffix(".png"))
    print(_markdown(result, out))
    return result


def _ratio(value: float | None, real: float | None) -> float | None:
    """value / real; None where either is missing or real is 0 (undefined)."""
    return None if value is None or not real else value / real


def _load(args: argparse.Namespace) -> tuple[BrainAutoencoder, int | None]:
    """The autoencoder a finished run exported (``--autoencoder``), the one in a run's latest
    checkpoint (``--run``, to follow a long training; also its step), or a generator's (``--model``)."""
    if sum(x is not None for x in (args.autoencoder, args.run, args.model)) != 1:
        raise SystemExit("give one of --autoencoder FOLDER, --run RUN_DIR or --model GENERATOR")
    if args.model is not None:
        if args.crop is not None:
            raise SystemExit("--crop measures an autoencoder alone; leave it out with --model")
        stored = BrainGenerator.from_pretrained(args.model)  # reconstructions in the stored precision
        args.generator = stored if args.dtype is None else BrainGenerator.from_pretrained(args.model, torch_dtype=args.dtype)
        return stored.autoencoder, None
    if args.autoencoder is not None:
        return load_component(BrainAutoencoder, AutoencoderConfig, args.autoencoder).eval(), None
    try:
        config = AutoencoderConfig.from_dict(_io.read_json(args.run / "run.json", "a training run's record")["model"])
        saved = training.load_checkpoint(args.run / training.CHECKPOINT)
    except ValueError as err:
        raise SystemExit(f"--run {args.run}: {err}") from None
    model = BrainAutoencoder(config)
    model.load_state_dict(saved["state"]["model"])
    return model.eval(), int(saved["step"])


def _samples(args: argparse.Namespace, cohort: PreparedCohort) -> dict:
    """``args.n`` samples of ``args.generator`` with its sampling defaults (covariates drawn from its
    training distribution, seed ``args.seed``): images (N, 1, D, H, W), brain masks from their label
    maps, and a summary (sampling, seconds per volume, requested-versus-own-label volume r)."""
    generator = args.generator
    if tuple(generator.image_grid.shape) != tuple(cohort.output_grid.shape):
        raise SystemExit(f"--model {args.model}: grid {tuple(generator.image_grid.shape)}; --real is on {cohort.output_grid.shape}")
    if cohort.label_scheme is None or generator.label_classes != tuple(cohort.label_scheme.class_names):
        raise SystemExit(f"--model {args.model}: its label classes differ from --real's; allowed: the model's own label scheme")
    started = time.perf_counter()
    brains = generator.generate(n=args.n, seed=args.seed, batch_size=4, progress=True)
    seconds = (time.perf_counter() - started) / args.n
    measured = pd.DataFrame(
        [cohort.label_scheme.measure_coarse_volumes(label.numpy(), generator.image_grid.voxel_volume_mm3) for label in brains.labels]
    )
    follow = {}
    for name in measured.columns.intersection(brains.covariates.columns):
        requested = brains.covariates[name].to_numpy(float)
        follow[name] = {
            "pearson_r": float(stats.pearsonr(requested, measured[name])[0]),
            "mean_absolute_error": float(np.mean(np.abs(requested - measured[name]))),
        }
    summary = {
        "n": args.n,
        "seed": args.seed,
        "sampling": {k: brains.provenance[k] for k in ("sampler", "steps", "guidance_scale", "timestep_spacing", "dtype")},
        "seconds_per_volume": seconds,
        "requested_vs_own_label_volume": follow,
        "qc_pass": int(brains.covariates["qc_pass"].sum()) if "qc_pass" in brains.covariates else None,
    }
    return {"images": brains.images.float(), "labels": brains.labels, "brain": (brains.labels > 0)[:, None], "summary": summary}


def _regions(grid: tuple[int, ...], crop: tuple[int, ...] | None, factor: int) -> list[tuple[slice, ...]]:
    """The whole grid, or up to eight crops of size ``crop``: per axis two starts, a quarter of the crop
    either side of the centred crop, kept inside the grid (one where they coincide)."""
    if crop is None:
        return [tuple(slice(None) for _ in grid)]
    if len(crop) != 3 or any(c < 1 or c > n or c % factor for c, n in zip(crop, grid)):
        raise SystemExit(f"--crop {crop}: allowed: three sizes, each at most the grid {tuple(grid)} and a multiple of {factor}")
    starts = [sorted({max(0, min(n - c, (n - c) // 2 + d)) for d in (-(c // 4), c // 4)}) for c, n in zip(crop, grid)]
    return [(slice(d, d + crop[0]), slice(h, h + crop[1]), slice(w, w + crop[2])) for d in starts[0] for h in starts[1] for w in starts[2]]


def _measures(volumes: torch.Tensor, brain: torch.Tensor, places: int) -> dict[str, float]:
    """The detail and variety measures of ``volumes`` (subject-major, ``places`` regions per subject):
    pairwise distances only between the same region of different subjects."""
    pairs = np.concatenate([pairwise_distances(volumes[k::places], brain[k::places]) for k in range(places)])
    return {
        "high-frequency share": float(np.mean(high_frequency_share(volumes, brain))),
        "high-pass share": float(np.mean(high_pass_share(volumes, brain))),
        "mean gradient magnitude": float(np.mean(mean_gradient_magnitude(volumes, brain))),
        "median pairwise L2": float(np.median(pairs)),
    }


_TITLE = "# Autoencoder detail: reconstructions of held-out subjects\n\n"
_TITLE_WITH_SAMPLES = "# Detail and variety: reconstructions and samples against held-out subjects\n\n"


def _markdown(result: dict, out: Path) -> str:
    samples = result.get("samples")
    rows = pd.DataFrame(
        [
            [name, _number(m["real"], ".4g"), _number(m["reconstructions"], ".4g"), _number(m["ratio"], ".2f")]
            + ([] if samples is None else [_number(m["samples"], ".4g"), _number(m["samples_ratio"], ".2f")])
            for name, m in result["measures"].items()
        ],
        columns=["measure", "real", "reconstructions", "ratio"] + ([] if samples is None else ["samples", "samples / real"]),
    )
    return (
        (_TITLE if samples is None else _TITLE_WITH_SAMPLES) + f"Written by `{result['command']}`.\n\n"
        f"Autoencoder `{result['autoencoder']}`"
        + ("" if result["training_step"] is None else f" at training step {result['training_step']}")
        + f" (channels {result['config']['channels']}, {result['config']['latent_channels']} "
        f"latent channels), {result['subjects']} subjects of `{result['real']}` (given as held out), grid {result['grid']} at "
        f"{result['spacing_mm']} mm"
        + (
            ""
            if result["crop"] is None
            else f", measured on {result['regions_per_subject']} crops of {result['crop']} voxels per subject, each reconstructed alone"
        )
        + (
            ""
            if result["window"] is None
            else f", reconstructed in windows of {result['window']['size']} voxels (overlap {result['window']['overlap']}, "
            "Gaussian blending)"
        )
        + ", each inside its own brain (label map > 0). Ratio = reconstruction / real.\n\n"
        + markdown_table(rows)
        + f"\n\nL1 {result['l1']:.4f}, PSNR {result['psnr_db']:.2f} dB, label Dice (foreground mean) {result['label_dice']:.3f}, "
        f"{result['seconds_per_reconstruction']:.2f} s per {'volume' if result['crop'] is None else 'crop'} "
        "(encode + decode, median, this machine).\n\n"
        + ("" if samples is None else _samples_markdown(samples))
        + "![axial and coronal mid-slices: real (top) and reconstruction (below it)"
        + ("" if samples is None else ", samples of other covariates (bottom)")
        + f"]({out.with_suffix('.png').name})\n"
    )


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _samples_markdown(samples: dict) -> str:
    sampling = samples["sampling"]
    follow = "; ".join(
        f"{name} r {v['pearson_r']:.2f} (MAE {v['mean_absolute_error']:.1f} mL)"
        for name, v in samples["requested_vs_own_label_volume"].items()
    )
    return (
        f"Samples: {samples['n']} volumes (seed {samples['seed']}, covariates drawn from the model's training distribution; "
        f"{sampling['sampler']}, {sampling['steps']} steps, guidance {sampling['guidance_scale']:g}, {sampling['timestep_spacing']} "
        f"timesteps, {sampling['dtype']}), each inside its own generated brain; "
        f"{samples['seconds_per_volume']:.2f} s per volume with its label map "
        f"(this machine). Requested versus measured on the generated label map: {follow}"
        + ("" if samples["qc_pass"] is None else f"; {samples['qc_pass']} of {samples['n']} pass quality control")
        + ".\n\n"
    )


def _figure(sets: tuple[torch.Tensor, ...], path: Path, count: int = 4) -> None:
    """Raw mid-slices (no overlay, one grey window [0, 1]): per subject an axial and a coronal view,
    real in the top row, its reconstruction below, then samples where given, at equal mm per pixel."""
    count = min([count, *map(len, sets)])
    fig = Figure(figsize=(2.2 * 2 * count, 2.5 * len(sets)), dpi=110)
    axes = fig.subplots(len(sets), 2 * count)
    for i in range(count):
        for row, volume in enumerate(volumes[i, 0] for volumes in sets):
            _, h, w = volume.shape  # MNI axes: x (left-right), y (back-front), z (down-up)
            views = (volume[:, :, w // 2].T, volume[:, h // 2, :].T)  # axial (z fixed), coronal (y fixed)
            for k, view in enumerate(views):
                ax = axes[row, 2 * i + k]
                ax.imshow(view.numpy(), cmap="gray", vmin=0, vmax=1, origin="lower", aspect="equal", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"subject {i + 1} {'axial' if k == 0 else 'coronal'}", fontsize=9)
        axes[0, 0].set_ylabel("real", fontsize=10)
        axes[1, 0].set_ylabel("reconstruction", fontsize=10)
        if len(sets) > 2:
            axes[2, 0].set_ylabel("sample", fontsize=10)
    fig.tight_layout()
    _io.save_figure(path, fig)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoencoder", type=Path, default=None, help="an autoencoder component folder (RUN/autoencoder)")
    parser.add_argument("--run", type=Path, default=None, help="instead: a training run folder, measured at its latest checkpoint")
    parser.add_argument("--model", type=Path, default=None, help="instead: a generator folder; also measures -n of its samples")
    parser.add_argument("-n", type=int, default=32, help="samples of --model (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="volume seeds of the samples (volume_seed(SEED, i))")
    parser.add_argument("--dtype", default=None, help="precision --model samples in: float32, bfloat16, ... (default: the model's)")
    parser.add_argument("--real", type=Path, required=True, help="a prepared cohort the autoencoder never saw (e.g. a split's test part)")
    parser.add_argument("--downsample", type=int, default=1, help="the training's --downsample (average over k^3 blocks)")
    parser.add_argument("--crop", type=_ints, default=None, help="measure up to eight crops D,H,W (or one edge N) per subject")
    parser.add_argument(
        "--window",
        type=_ints,
        default=None,
        help="reconstruct in overlapping windows D,H,W (or one edge N), e.g. the training's --patch-size (default: whole)",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="the --window overlap per axis, in [0, 1)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/autoencoder-detail"))
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"-n {args.n}: allowed: >= 2 (variety needs pairs)")
    if args.crop is not None and len(args.crop) == 1:
        args.crop = args.crop * 3  # one edge for all three axes, as --patch-size takes it
    if args.window is not None and len(args.window) == 1:
        args.window = args.window * 3
    return args


if __name__ == "__main__":
    main()
