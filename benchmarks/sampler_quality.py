"""Quality at fewer steps, measured rather than assumed: for each sampler and number of steps, the same
n volumes (same seeds, so the same starting noise, and the same covariates) against a high-step
reference made from that noise.

    python benchmarks/sampler_quality.py --model default              # writes docs/benchmarks/sampler-quality.{md,json,png}
    python benchmarks/sampler_quality.py --tiny --out /tmp/sampler-quality   # a seconds-long check that the script runs

Metrics, each as a function of steps, per sampler:

- RMSE of the decoded image (intensities in [0, 1]) against the reference's, per volume, averaged;
- Dice of the label map against the reference's, averaged over the foreground classes present in
  either, per volume, averaged;
- Pearson r between the requested ventricular volume and the volume measured on the generated label
  map (voxels of class ``ventricles`` x the voxel volume), with the mean absolute error in mL when the
  model's covariate is in mL; the paper reports r = 0.972 for its model (measured with SynthSeg).

The reference is DDIM (eta 0) at ``--reference-steps`` (default 500; 1000 is every timestep); the
reference row compares it with itself (RMSE 0, Dice 1 by construction). DDIM and DPM-Solver++ 2M are
deterministic from the noise, so their distance to the reference should shrink with steps; DDPM is
stochastic (fresh noise at every step), so it converges to the model's distribution but not to the
reference volume: compare it on the Pearson r only. Covariates are drawn from the model's training
distribution from each volume's seed (as ``generate`` draws them).

Cost: with the defaults (n 16, steps 5-100 for three samplers, reference 500 steps) about 1,050 UNet
evaluations per volume; on the embedded 4 mm model that is roughly 7 minutes on 2 CPU cores (from the
per-step times in docs/benchmarks/generation-speed.md). ``--tiny`` uses the tiny randomly initialised
generator of the tests: its numbers say nothing about a real model, and it must be given ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _report import markdown_table  # noqa: E402
from scipy import stats  # noqa: E402

from synthbrain import BrainGenerator, _io  # noqa: E402
from synthbrain.device import resolve_device  # noqa: E402
from synthbrain.evaluation import dice_per_class  # noqa: E402
from synthbrain.generator.draws import volume_seeds  # noqa: E402
from synthbrain.samplers import SAMPLERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "sampler-quality"
DETERMINISTIC = ("ddim", "dpm++2m")  # the samplers a reference can be made with
VENTRICLES = "ventricles"
METRICS = ("RMSE vs reference", "Dice vs reference", "Pearson r (ventricular volume)")


def parse_list(kind):
    def parse(value: str) -> list:
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            items = [kind(v) for v in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r}: expected comma-separated {kind.__name__} values") from None
        if not items or len(set(items)) != len(items):
            raise argparse.ArgumentTypeError(f"{value!r}: expected distinct comma-separated values")
        return items

    return parse


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', a model folder or a Hub id")
    parser.add_argument("--tiny", action="store_true", help="the tiny test generator (tests/helpers.py) instead of --model (needs --out)")
    parser.add_argument("--n", type=int, default=16, help="volumes per setting")
    parser.add_argument(
        "--samplers", type=parse_list(str), default=["ddim", "dpm++2m", "ddpm"], help=f"comma-separated, from {list(SAMPLERS)}"
    )
    parser.add_argument("--steps", type=parse_list(int), default=[5, 10, 20, 50, 100], help="comma-separated step counts")
    parser.add_argument("--reference-sampler", default="ddim", help=f"deterministic sampler of the reference, one of {list(DETERMINISTIC)}")
    parser.add_argument("--reference-steps", type=int, default=500, help="steps of the reference (1000: every timestep)")
    parser.add_argument("--seed", type=int, default=0, help="volume i uses volume_seed(seed, i)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help=f"write OUT.md, .json, .png (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out: docs/benchmarks/ holds the results of real runs only")
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size)):
        if value < 1:
            parser.error(f"{flag} {value}: allowed: an integer >= 1")
    if args.n < 3:
        parser.error(f"--n {args.n}: allowed: >= 3 (a Pearson r needs at least 3 volumes)")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: allowed: an integer >= 0")
    unknown = [s for s in args.samplers if s not in SAMPLERS]
    if unknown:
        parser.error(f"--samplers {','.join(args.samplers)}: unknown {unknown}; allowed: {list(SAMPLERS)}")
    if args.reference_sampler not in DETERMINISTIC:
        parser.error(f"--reference-sampler {args.reference_sampler!r}: allowed: {list(DETERMINISTIC)} (a reference must be deterministic)")
    try:
        args.device = resolve_device(args.device, "--device")
    except ValueError as err:
        parser.error(str(err))
    return parser, args


def load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[BrainGenerator, str]:
    """The generator, with the options that depend on it checked."""
    if args.tiny:
        sys.path.insert(0, str(ROOT))
        from tests.helpers import tiny_generator

        generator, name = tiny_generator(distribution=True), "tiny test generator"
    else:
        generator, name = BrainGenerator.from_pretrained(args.model), args.model
    total = generator.schedule.num_train_timesteps
    for flag, values in (("--steps", args.steps), ("--reference-steps", [args.reference_steps])):
        bad = [s for s in values if not 1 <= s <= total]
        if bad:
            parser.error(f"{flag}: {bad} outside [1, {total}], the model's number of training timesteps")
    if generator.distribution is None:
        parser.error(f"--model {args.model}: has no covariate distribution to draw the covariates from")
    return generator.to(args.device), name


def volume_metrics(images: torch.Tensor, labels: torch.Tensor | None, ref_images: torch.Tensor, ref_labels: torch.Tensor | None, classes):
    """Per volume: RMSE of the image and mean foreground Dice of the label map against the reference."""
    diff = (images.float() - ref_images.float()).flatten(1)
    rmse = diff.pow(2).mean(1).sqrt().numpy()
    if labels is None:
        return rmse, np.full(len(images), np.nan)
    foreground = [i for i, c in enumerate(classes) if c != "background"]
    dice = []
    for a, b in zip(labels, ref_labels):
        per_class = dice_per_class(a.numpy(), b.numpy(), len(classes))[foreground]
        dice.append(np.nanmean(per_class) if np.isfinite(per_class).any() else 1.0)  # no foreground in either: identical
    return rmse, np.asarray(dice)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r (scipy.stats.pearsonr); NaN for fewer than 3 pairs or when either side does not vary."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser, args = parse_args(argv)
    out = args.out if args.out is not None else DEFAULT_OUT
    generator, model_name = load(args, parser)
    classes = generator.label_classes
    has_ventricles = classes is not None and VENTRICLES in classes and "ventricular_volume" in generator.schema.names
    unit = generator.schema["ventricular_volume"].unit if "ventricular_volume" in generator.schema.names else None
    voxel_ml = generator.image_grid.voxel_volume_mm3 / 1000.0
    seeds = volume_seeds(args.seed, args.n)

    def run(sampler: str, steps: int, covariates):
        start = time.perf_counter()
        n = args.n if covariates is None else None  # None: covariates drawn from the seeds
        result = generator.generate(covariates, n=n, seed=seeds, steps=steps, sampler=sampler, batch_size=args.batch_size)
        return result, (time.perf_counter() - start) / args.n

    reference, reference_seconds = run(args.reference_sampler, args.reference_steps, None)
    covariates = reference.covariates[list(generator.schema.names)]  # drawn once from the seeds; every setting gets exactly these
    requested = covariates["ventricular_volume"].to_numpy(float) if has_ventricles else None

    def row(name: str, sampler: str, steps: int, result, seconds: float) -> dict[str, Any]:
        rmse, dice = volume_metrics(result.images, result.labels, reference.images, reference.labels, classes)
        record = {
            "setting": name,
            "sampler": sampler,
            "steps": steps,
            "UNet evaluations per volume": steps * (1 if generator.defaults["guidance_scale"] == 1.0 else 2),
            "RMSE vs reference": float(rmse.mean()),
            "Dice vs reference": float(dice.mean()) if classes else float("nan"),
            "Pearson r (ventricular volume)": float("nan"),
            "ventricular volume MAE (mL)": float("nan"),
            "seconds per volume": seconds,
        }
        if has_ventricles:
            measured = (result.labels == classes.index(VENTRICLES)).flatten(1).sum(1).numpy() * voxel_ml
            record["Pearson r (ventricular volume)"] = pearson(requested, measured)
            if unit == "mL":
                record["ventricular volume MAE (mL)"] = float(np.abs(measured - requested).mean())
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}, flush=True)
        return record

    reference_name = f"reference: {args.reference_sampler}-{args.reference_steps}"
    rows = [row(reference_name, args.reference_sampler, args.reference_steps, reference, reference_seconds)]
    for sampler in args.samplers:
        for steps in sorted(args.steps):
            result, seconds = run(sampler, steps, covariates)
            rows.append(row(f"{sampler}-{steps}", sampler, steps, result, seconds))
    table = pd.DataFrame(rows)

    figure = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(figure, table, reference_name)
    command = "python benchmarks/sampler_quality.py " + " ".join(
        (["--tiny"] if args.tiny else [f"--model {args.model}"])
        + [f"--n {args.n}", f"--samplers {','.join(args.samplers)}", f"--steps {','.join(map(str, args.steps))}"]
        + [f"--reference-sampler {args.reference_sampler}", f"--reference-steps {args.reference_steps}"]
        + [f"--seed {args.seed}", f"--batch-size {args.batch_size}", f"--device {args.device}"]
        + ([f"--out {args.out}"] if args.out is not None else [])
    )
    summary = {
        "command": command,
        "model": model_name,
        "machine": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
        "image_grid": generator.image_grid.to_dict(),
        "guidance_scale": generator.defaults["guidance_scale"],
        "reference": {"sampler": args.reference_sampler, "steps": args.reference_steps},
        "covariates": covariates.assign(seed=seeds).to_dict("records"),
        "ventricular_volume_unit": unit,
        "figure": figure.name,
        "rows": table.astype(object).where(table.notna(), None).to_dict("records"),  # JSON null where a metric does not apply
    }
    _io.write_json(out.with_suffix(".json"), summary)
    notes = []
    if args.tiny:
        notes.append("**Tiny run:** a randomly initialised test generator; these numbers say nothing about a real model.")
    if not has_ventricles:
        notes.append("This model has no label maps with a `ventricles` class, or no ventricular-volume covariate: no Dice or r.")
    report = "\n\n".join(
        [
            f"# Sampler quality at fewer steps: `{model_name}`",
            *notes,
            f"Command: `{command}`. Machine: {summary['machine']}. {args.n} volumes per setting, seeds {seeds[0]}..{seeds[-1]}, "
            f"covariates drawn from the model's training distribution (listed in the JSON), guidance scale "
            f"{summary['guidance_scale']}. Every setting starts from the same noise; RMSE (image in [0, 1]) and Dice "
            f"(mean over foreground classes) are against the reference from that noise, {reference_name}. Pearson r: "
            f"requested ventricular volume ({unit}) vs the volume of class `{VENTRICLES}` on the generated label map. DDPM is "
            "stochastic, so its RMSE and Dice measure a different sample, not an error: read its r. Seconds per volume: "
            "one call per setting, no warm-up (indicative only; `benchmarks/generation_speed.py` times sampling).",
            markdown_table(table),
            f"![metrics versus steps]({figure.name})",
        ]
    )
    _io.write_text(out.with_suffix(".md"), report + "\n")
    print(report)
    return summary


def plot(path: Path, table: pd.DataFrame, reference_name: str) -> None:
    """Each metric against steps (log scale), one line per sampler; the reference's r as a dashed line."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    reference = table.iloc[0]
    samplers = table.iloc[1:]
    for ax, metric in zip(axes, METRICS):
        for sampler, part in samplers.groupby("sampler", sort=False):
            ax.plot(part["steps"], part[metric], marker="o", label=sampler)
        if metric == METRICS[2] and np.isfinite(reference[metric]):
            ax.axhline(reference[metric], color="grey", linestyle="--", label=reference_name)
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(samplers["steps"])))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("steps (UNet evaluations)")
        ax.set_title(metric)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
