"""Which diffusion recipe and sampling setting to ship? Generators (e.g. one per training recipe)
and sampling settings compared on the same seeds against the real cohort they were trained on.

For each generator and setting, ``--n`` volumes with covariates drawn from the training density:

- broken share: subjects failing quality control (:mod:`synthbrain.generator.qc`, measured with
  ``qc="measure"``: nothing is redrawn here);
- conditioning on the generator's own label map: Pearson r of requested against measured
  ventricular and brain volume, and the measured / requested ratio of ventricular volume;
- realism on deepbet features against the real cohort at the model's grid: Fréchet distance and
  k-NN precision / recall (k = 3), beside the same numbers for half the real cohort against the
  other half (at equal sample sizes);
- seconds per volume on this machine.

    python benchmarks/generator_recipes.py --real runs/ixi-2mm-rigid --model eps=runs/v3/dm-eps/generator \\
        --model v=runs/v3/dm-v/generator --setting ddim:10:2:trailing --setting ddim:50:1:trailing --n 64 \\
        --out docs/benchmarks/generator-recipes
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
from _report import markdown_table  # noqa: E402
from scipy import stats  # noqa: E402

from synthbrain import BrainGenerator, _io  # noqa: E402
from synthbrain.evaluation.evaluate import load_cohort_on_grid  # noqa: E402
from synthbrain.evaluation.features import FeatureExtractor  # noqa: E402
from synthbrain.evaluation.metrics import frechet_distance, knn_precision_recall  # noqa: E402


def parse_setting(text: str) -> dict:
    parts = text.split(":")
    if len(parts) != 4:
        raise SystemExit(f"--setting {text!r}: expected SAMPLER:STEPS:GUIDANCE:SPACING, e.g. ddim:10:2:trailing")
    return {"sampler": parts[0], "steps": int(parts[1]), "guidance_scale": float(parts[2]), "timestep_spacing": parts[3]}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="the prepared cohort the generators were trained on")
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a generator (repeatable)")
    parser.add_argument("--setting", action="append", default=None, help="SAMPLER:STEPS:GUIDANCE:SPACING (default: each model's own)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    models = {}
    for item in args.model:
        name, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--model {item!r}: expected NAME=FOLDER")
        models[name] = BrainGenerator.from_pretrained(folder)
    settings = [parse_setting(s) for s in args.setting] if args.setting else [None]
    extractor = FeatureExtractor()
    first = next(iter(models.values()))
    cohort, images, _ = load_cohort_on_grid(args.real, first.image_grid)
    real = extractor(images, first.image_grid.spacing)
    half = np.random.default_rng(args.seed).permutation(len(real))
    a, b = real[half[: len(real) // 2]], real[half[len(real) // 2 :]]
    size = min(len(b), args.n)
    baseline = knn_precision_recall(a, b[:size], k=3)
    rows = [
        {
            "model": "real (half vs half)",
            "setting": "-",
            "FD": frechet_distance(a, b[:size]),
            "precision": baseline.precision,
            "recall": baseline.recall,
        }
    ]
    shown = {}
    for name, model in models.items():
        for setting in settings:
            chosen = setting or {k: model.defaults[k] for k in ("sampler", "steps", "guidance_scale", "timestep_spacing")}
            label = f"{chosen['sampler']} {chosen['steps']}, guidance {chosen['guidance_scale']:g}, {chosen['timestep_spacing']}"
            start = time.perf_counter()
            out = model.generate(n=args.n, seed=args.seed, batch_size=8, qc="measure", progress=True, **chosen)
            seconds = (time.perf_counter() - start) / args.n
            table = out.covariates
            voxel_ml = model.image_grid.voxel_volume_mm3 / 1000
            classes = list(model.label_classes)
            vent = (out.labels == classes.index("ventricles")).flatten(1).sum(1).numpy() * voxel_ml
            brain = (out.labels > 0).flatten(1).sum(1).numpy() * voxel_ml
            csf = (out.labels == classes.index("csf")).flatten(1).sum(1).numpy() * voxel_ml if "csf" in classes else 0
            features = extractor(out.images, model.image_grid.spacing)
            pr = knn_precision_recall(a, features[:size], k=3)
            rows.append(
                {
                    "model": name,
                    "setting": label,
                    "broken share": float(1 - table["qc_pass"].mean()),
                    "ventricular r (own labels)": float(stats.pearsonr(table["ventricular_volume"], vent).statistic),
                    "ventricular measured / requested": float(vent.mean() / table["ventricular_volume"].mean()),
                    "brain r (own labels)": float(stats.pearsonr(table["brain_volume"], brain - vent - csf).statistic),
                    "FD": frechet_distance(a, features[:size]),
                    "precision": pr.precision,
                    "recall": pr.recall,
                    "seconds per volume": seconds,
                }
            )
            shown[f"{name}: {label}"] = out.images[:4, 0].numpy()
            print(rows[-1], flush=True)
    result = pd.DataFrame(rows)
    _io.write_table(args.out.with_suffix(".tsv"), result)
    figure = args.out.with_suffix(".png")
    fig, axes = plt.subplots(len(shown), 4, figsize=(8, 2.3 * len(shown)), squeeze=False)
    for row, (title, volumes) in enumerate(shown.items()):
        for column in range(4):
            volume = volumes[column]
            axes[row, column].imshow(volume[:, :, volume.shape[2] // 2].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axes[row, column].set_axis_off()
        axes[row, 0].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    _io.save_figure(figure, fig)
    command = "python benchmarks/generator_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    _io.write_json(args.out.with_suffix(".json"), {"command": command, "n": args.n, "rows": result.to_dict("records")})
    report = "\n\n".join(
        [
            "# Generator recipes and sampling settings",
            f"Command: `{command}`. {args.n} volumes per row (covariates drawn from the training density, seed {args.seed}); real "
            f"cohort `{args.real}` ({len(real)} subjects) on the model grid; FD and k-NN precision/recall (k = 3) on deepbet features "
            f"against one half of the real cohort, with {size} volumes per comparison.",
            markdown_table(result),
            f"![axial mid-slices of the first four volumes of each row]({figure.name})",
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)
    return result


if __name__ == "__main__":
    main()
