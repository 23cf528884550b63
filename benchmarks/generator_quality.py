"""Quality of a trained generator, each number beside its real-data baseline.

- Conditioning: Pearson r and mean absolute error between requested and measured ventricular and
  brain volume, measured (a) on the generator's own label map and (b) by an independent segmenter
  trained on real labels only (``synthbrain.evaluation.VoxelSegmenter``). Baseline: the same
  measurements on held-out real subjects against their table volumes (measured at 1 mm).
- Label faithfulness: per-class Dice between the generated label map and the independent
  segmenter's reading of the generated image; baseline: Dice between real label maps and the
  segmenter's reading of the real image, on held-out real subjects.
- Figures: samples next to the real subjects whose covariates they were given, a sweep of
  ventricular volume and of brain volume with everything else fixed (the paper's Figure 2), and
  requested-versus-measured scatter plots.

    python benchmarks/generator_quality.py --model default --real runs/ixi-2mm-rigid --downsample 2 --n 64

Covariates of the n samples are drawn from the model's training distribution (seeded).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _report import markdown_table  # noqa: E402
from scipy import stats  # noqa: E402

from synthbrain import BrainGenerator, _io  # noqa: E402
from synthbrain.evaluation import VoxelSegmenter, dice_per_class, pairwise_ms_ssim  # noqa: E402
from synthbrain.preprocessing.prepared import PreparedCohort  # noqa: E402
from synthbrain.preprocessing.qc import montage  # noqa: E402

VOLUMES = ("ventricular_volume", "brain_volume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--real", type=Path, required=True, help="the prepared cohort the model was trained on")
    parser.add_argument("--downsample", type=int, default=2, help="block averaging that brings the cohort to the model's grid")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=50, help="real subjects kept out of the segmenter's training")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N real subjects (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument(
        "--compare-guidance",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[],
        help="also measure conditioning at these guidance scales, e.g. 1,2,4",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/generator-quality"))
    args = parser.parse_args()

    generator = BrainGenerator.from_pretrained(args.model)
    sampling = {"steps": args.steps, "sampler": args.sampler, "guidance_scale": args.guidance_scale}
    classes = list(generator.label_classes)
    cohort = PreparedCohort.load(args.real, args.downsample)
    if cohort.output_grid.shape != generator.image_grid.shape:
        raise SystemExit(f"--downsample {args.downsample} gives {cohort.output_grid.shape}; the model makes {generator.image_grid.shape}")
    voxel_mm3 = generator.image_grid.voxel_volume_mm3
    scheme = cohort.label_scheme

    # Real subjects at the model's resolution: image, and the majority class of each block.
    real = [cohort[i] for i in range(min(len(cohort), args.limit or len(cohort)))]
    real_images = [item["image"][0].numpy() for item in real]
    real_labels = [item["labels"].argmax(0).numpy().astype(np.uint8) for item in real]
    table = cohort.table.reset_index(drop=True).iloc[: len(real)]
    order = np.random.default_rng(args.seed).permutation(len(real))
    held, train = order[: args.held_out], order[args.held_out :]

    start = time.perf_counter()
    segmenter = VoxelSegmenter(len(classes), seed=args.seed).fit([real_images[i] for i in train], [real_labels[i] for i in train])
    print(f"segmenter trained on {len(train)} real subjects in {time.perf_counter() - start:.0f} s")

    rows = _rows(
        "real (held out)",
        [real_images[i] for i in held],
        [real_labels[i] for i in held],
        table.loc[held],
        segmenter,
        scheme,
        voxel_mm3,
        classes,
    )
    # The autoencoder's ceiling: held-out subjects (held out from the segmenter; every subject trained the generator) encoded and decoded.
    recon_images, recon_labels = _reconstruct(generator, cohort, held)
    rows += _rows("autoencoder reconstruction", recon_images, recon_labels, table.loc[held], segmenter, scheme, voxel_mm3, classes)
    reconstruction_dice = pd.DataFrame(
        [dice_per_class(real_labels[i], lab, len(classes)) for i, lab in zip(held, recon_labels)], columns=classes
    ).median()

    start = time.perf_counter()
    out = generator.generate(n=args.n, seed=args.seed, progress=True, **sampling)
    seconds = (time.perf_counter() - start) / args.n
    rows += _rows("synthetic", out.images[:, 0].numpy(), out.labels.numpy(), out.covariates, segmenter, scheme, voxel_mm3, classes)
    results = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_table(args.out.with_suffix(".tsv"), results)

    conditioning = _conditioning(results)
    # Diversity: mean MS-SSIM over the same number of random pairs within each set (lower = more varied).
    count = min(len(held), args.n)
    diversity = pd.DataFrame(
        [
            {
                "set": "real (held out)",
                "volumes": count,
                "mean pairwise MS-SSIM": pairwise_ms_ssim(
                    np.stack([real_images[i] for i in held[:count]])[:, None], pairs=200, seed=args.seed
                ),
            },
            {
                "set": "synthetic",
                "volumes": count,
                "mean pairwise MS-SSIM": pairwise_ms_ssim(out.images[:count], pairs=200, seed=args.seed),
            },
        ]
    )
    guidance = []
    for scale in args.compare_guidance:
        other = generator.generate(n=args.n, seed=args.seed, **{**sampling, "guidance_scale": scale})
        part = pd.DataFrame(
            _rows("synthetic", other.images[:, 0].numpy(), other.labels.numpy(), other.covariates, segmenter, scheme, voxel_mm3, classes)
        )
        for record in _conditioning(part).to_dict("records"):
            guidance.append({"guidance scale": scale, **{k: v for k, v in record.items() if k != "source"}})
    guidance = pd.DataFrame(guidance)
    faithfulness = results.groupby("source", sort=False)[[f"dice_{c}" for c in classes[1:]]].median().T
    faithfulness.index = [i.removeprefix("dice_") for i in faithfulness.index]
    faithfulness = faithfulness.reset_index(names="class")

    figures = {
        "scatter": _scatter(args.out.with_name(args.out.name + "-conditioning.png"), results),
        "montage": _montage(args.out.with_name(args.out.name + "-montage.png"), generator, table, real_images, real_labels, held, sampling),
        "sweep": _sweep(args.out.with_name(args.out.name + "-sweep.png"), generator, table, scheme, voxel_mm3, sampling),
    }
    provenance = out.provenance
    model = provenance["model"]  # BrainGenerator.source: path (None when built in memory) and sha256
    summary = {
        "command": "python benchmarks/generator_quality.py " + " ".join(_argv(args)),
        "model": {**model, "path": model["path"] and _io.shown_path(model["path"])},  # no machine paths in reports
        "sampler": provenance["sampler"],
        "steps": provenance["steps"],
        "guidance_scale": provenance["guidance_scale"],
        "seconds_per_volume_with_progress": seconds,
        "conditioning": conditioning.to_dict("records"),
        "label_faithfulness_median_dice": faithfulness.to_dict("records"),
        "diversity": diversity.to_dict("records"),
        "reconstruction_median_dice_vs_real_labels": reconstruction_dice.to_dict(),
        "guidance_comparison": guidance.to_dict("records"),
        "figures": {k: v.name for k, v in figures.items()},
    }
    _io.write_json(args.out.with_suffix(".json"), summary)
    report = "\n\n".join(
        [
            f"# Generator quality: `{args.model}`",
            f"Command: `{summary['command']}`. Sampler {provenance['sampler']}, {provenance['steps']} steps, "
            f"guidance scale {provenance['guidance_scale']}; {args.n} synthetic volumes with covariates drawn from the model's "
            f"training distribution (seed {args.seed}); {len(held)} held-out real subjects as the baseline, the independent "
            f"segmenter trained on the other {len(train)}.",
            "## Conditioning: requested vs measured volume",
            markdown_table(conditioning),
            "Real rows compare the table volume (measured at 1 mm) with the same measurement at the model's resolution, "
            "so they show the ceiling that resolution allows; reconstruction rows encode and decode the same subjects with the "
            "model's autoencoder (they were in its training set), the ceiling that the autoencoder allows.",
            "## Label faithfulness: median Dice, own label map vs independent segmenter",
            markdown_table(faithfulness),
            "Median Dice of the reconstructed label map against the real one: "
            + ", ".join(f"{c} {d:.3f}" for c, d in reconstruction_dice.items() if c != classes[0])
            + ".",
            f"![conditioning]({figures['scatter'].name})",
            "## Diversity: mean MS-SSIM between random pairs of one set (3D, 3 scales; lower is more varied)",
            markdown_table(diversity),
            *(["## Conditioning at other guidance scales (same seeds)", markdown_table(guidance)] if len(guidance) else []),
            "## Samples next to the real subjects whose covariates they were given",
            f"![montage]({figures['montage'].name})",
            "## Sweeps: ventricular volume, then brain volume, everything else fixed, same noise",
            f"![sweep]({figures['sweep'].name})",
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)


def _rows(source, images, labels, requested, segmenter, scheme, voxel_mm3, classes) -> list[dict]:
    """One row per volume: requested volumes, volumes on its own label map and on the independent
    segmentation of its image, and the per-class Dice between the two."""
    rows = []
    for image, own, (_, wanted) in zip(images, labels, requested.iterrows()):
        seg = segmenter.predict(image)
        rows.append(
            {
                "source": source,
                **{f"requested_{k}": wanted[k] for k in VOLUMES},
                **{f"labels_{k}": v for k, v in scheme.measure_coarse_volumes(own, voxel_mm3).items() if k in VOLUMES},
                **{f"segmenter_{k}": v for k, v in scheme.measure_coarse_volumes(seg, voxel_mm3).items() if k in VOLUMES},
                **{f"dice_{c}": d for c, d in zip(classes, dice_per_class(own, seg, len(classes)))},
            }
        )
    return rows


@torch.no_grad()
def _reconstruct(generator, cohort, indices) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = [], []
    for i in indices:
        item = cohort[int(i)]
        mu, _ = generator.autoencoder.encode(item["image"][None], item["labels"][None])
        image, logits = generator.autoencoder.decode(mu)
        images.append(image[0, 0].clamp(0, 1).numpy())
        labels.append(logits[0].argmax(0).numpy().astype(np.uint8))
    return images, labels


def _conditioning(results: pd.DataFrame) -> pd.DataFrame:
    conditioning = []
    for source, part in results.groupby("source", sort=False):
        for volume in VOLUMES:
            for by in ("labels", "segmenter"):
                requested, measured = part[f"requested_{volume}"].to_numpy(float), part[f"{by}_{volume}"].to_numpy(float)
                conditioning.append(
                    {
                        "source": source,
                        "volume": volume,
                        "measured by": "own label map" if by == "labels" else "independent segmenter",
                        "n": len(part),
                        "Pearson r": float(stats.pearsonr(requested, measured)[0]),
                        "MAE (mL)": float(np.abs(requested - measured).mean()),
                        "mean measured / requested": float((measured / requested).mean()),
                    }
                )
    return pd.DataFrame(conditioning)


def _argv(args) -> list[str]:
    parts = [f"--model {args.model}", f"--real {args.real}", f"--downsample {args.downsample}", f"--n {args.n}", f"--seed {args.seed}"]
    if args.compare_guidance:
        parts.append("--compare-guidance " + ",".join(f"{g:g}" for g in args.compare_guidance))
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in (("steps", args.steps), ("sampler", args.sampler)) if v is not None]
    return parts + ([f"--guidance-scale {args.guidance_scale}"] if args.guidance_scale is not None else [])


def _scatter(path: Path, results: pd.DataFrame) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), dpi=100)
    for ax, volume in zip(axes, VOLUMES):
        for (source, by), marker in zip([("synthetic", "labels"), ("synthetic", "segmenter"), ("real (held out)", "labels")], "o^s"):
            part = results[results["source"] == source]
            name = {"labels": "own label map", "segmenter": "independent segmenter"}[by]
            ax.scatter(part[f"requested_{volume}"], part[f"{by}_{volume}"], s=14, marker=marker, alpha=0.7, label=f"{source}, {name}")
        low, high = results[[f"requested_{volume}", f"labels_{volume}"]].min().min(), results[[f"requested_{volume}"]].max().max()
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_xlabel(f"requested {volume} (mL)")
        ax.set_ylabel("measured (mL)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path


def _montage(path, generator, table, real_images, real_labels, held, sampling, rows: int = 4) -> Path:
    """Each held-out real subject, then a sample generated with that subject's covariates."""
    picks = [i for i in held if table.loc[i, generator.schema.names].notna().all()][:rows]
    covariates = table.loc[picks, generator.schema.names].reset_index(drop=True)
    out = generator.generate(covariates, seed=list(range(rows)), **sampling)
    images, labels, titles = [], [], []
    for j, i in enumerate(picks):
        desc = f"{table.loc[i, 'sex']}, {table.loc[i, 'age']:.0f} y, vent {table.loc[i, 'ventricular_volume']:.0f} mL"
        images += [real_images[i], out.images[j, 0].numpy()]
        labels += [real_labels[i], out.labels[j].numpy()]
        titles += [f"real {table.loc[i, 'subject_id']} ({desc})", f"synthetic ({desc})"]
    montage(path, images, labels, titles, num_classes=len(generator.label_classes))
    return path


def _sweep(path, generator, table, scheme, voxel_mm3, sampling, points: int = 5) -> Path:
    """Rows: ventricular volume from its 5th to 95th percentile, then brain volume; the other
    covariates at the cohort's median (sex F); one noise seed for every panel."""
    base = {"sex": "F", "age": float(table["age"].median())}
    medians = {k: float(table[k].median()) for k in VOLUMES}
    fig, axes = plt.subplots(2 * len(VOLUMES), points, figsize=(2.2 * points, 4.6 * len(VOLUMES)), dpi=100)
    for r, volume in enumerate(VOLUMES):
        values = np.percentile(table[volume].dropna(), np.linspace(5, 95, points))
        rows = pd.DataFrame([{**base, **medians, volume: v} for v in values])[generator.schema.names]
        out = generator.generate(rows, seed=[0] * points, **sampling)
        for c in range(points):
            image, labels = out.images[c, 0].numpy(), out.labels[c].numpy()
            measured = scheme.measure_coarse_volumes(labels, voxel_mm3)[volume]
            axial, coronal = image[:, :, image.shape[2] // 2 + 2].T, image[:, image.shape[1] // 2, :].T
            for k, view in enumerate((axial, coronal)):
                ax = axes[2 * r + k, c]
                ax.imshow(view, cmap="gray", origin="lower", vmin=0, vmax=1)
                ax.set_axis_off()
            axes[2 * r, c].set_title(f"{volume.split('_')[0]} {values[c]:.0f} mL\n(label map {measured:.0f})", fontsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path


if __name__ == "__main__":
    main()
