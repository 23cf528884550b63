"""Registration to MNI: speed and alignment of the choices `synthbrain prepare` could make.

Compares, on a random sample of real subjects (a seeded draw, so any cohort works):

* ``rigid, whole template`` (the reference): mutual information sampled over the whole template.
* ``rigid, brain region`` (the default): sampled only on the template brain dilated by 6 mm.
* ``affine, brain region``: a further affine stage, which also normalises head size.
* ``rigid, brain region, head not stripped``: what a subject without a label map gets (the
  whole head, skull included, registered to the skull-stripped template).

For each: seconds per subject (one thread, same process, so the ratio to the reference is what
counts), Dice between the registered brain mask and the template's, and how much of the subject's
brain volume the resampled image keeps (1.0 = sizes preserved, as conditioning on volume needs).
Writes a Markdown table, JSON and a PNG figure.

    python benchmarks/registration.py --data ../shared/data/ixi-hh --n 12
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from _report import markdown_table  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from synthbrain import _io  # noqa: E402
from synthbrain.cohort import read_folder  # noqa: E402
from synthbrain.overlap import dice  # noqa: E402
from synthbrain.preprocessing.qc import size_bound_dice  # noqa: E402
from synthbrain.preprocessing.registration import register, resample_to_grid  # noqa: E402
from synthbrain.preprocessing.template import make_grid, registration_template, template_mask_on_grid  # noqa: E402

# (name, kind, metric sampled on the brain region only, moving image skull-stripped by its label map)
CONFIGS = [
    ("rigid, whole template", "rigid", False, True),
    ("rigid, brain region", "rigid", True, True),
    ("affine, brain region", "affine", True, True),
    ("rigid, brain region, head not stripped", "rigid", True, False),
]
REFERENCE = CONFIGS[0][0]


def measure(cohort, n: int, seed: int, spacing: float) -> pd.DataFrame:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rng = np.random.default_rng(seed)
    subjects = [cohort.subjects[i] for i in sorted(rng.choice(len(cohort.subjects), size=min(n, len(cohort.subjects)), replace=False))]
    fixed, fixed_affine, fixed_mask = registration_template(2.0)
    grid = make_grid(spacing)
    template_mask = template_mask_on_grid(grid)
    rows = []
    for subject in tqdm(subjects, desc="registration benchmark", unit="subject"):
        img = nib.as_closest_canonical(nib.load(subject.image))
        lab = nib.as_closest_canonical(nib.load(subject.labels))
        mask = np.asarray(lab.dataobj) > 0
        head = np.asarray(img.dataobj, dtype=np.float32)
        native_ml = mask.sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000
        for name, kind, masked, stripped in CONFIGS:
            moving = head * mask if stripped else head
            start = time.perf_counter()
            result = register(moving, img.affine, fixed, fixed_affine, kind, 0, fixed_mask if masked else None)
            seconds = time.perf_counter() - start
            on_grid = resample_to_grid(mask.astype(np.uint8), img.affine, grid, result.transform, labels=True) > 0
            overlap = dice(on_grid, template_mask)
            rows.append(
                {
                    "subject_id": subject.subject_id,
                    "config": name,
                    "seconds": seconds,
                    "dice": overlap,
                    "dice_over_size_bound": overlap / size_bound_dice(on_grid.sum(), template_mask.sum()),
                    "brain_kept": on_grid.sum() * grid.voxel_volume_mm3 / 1000 / native_ml,
                }
            )
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    ref = rows[rows.config == REFERENCE].set_index("subject_id")["seconds"]
    out = []
    for name, *_ in CONFIGS:
        part = rows[rows.config == name].set_index("subject_id")
        out.append(
            {
                "config": name,
                "subjects": len(part),
                "median s/subject": part["seconds"].median(),
                "time vs reference": float((part["seconds"] / ref).median()),
                "median Dice": part["dice"].median(),
                "worst Dice": part["dice"].min(),
                "median Dice / size bound": part["dice_over_size_bound"].median(),
                "worst Dice / size bound": part["dice_over_size_bound"].min(),
                "brain volume kept, median": part["brain_kept"].median(),
                "brain volume kept, range": f"{part['brain_kept'].min():.3f}-{part['brain_kept'].max():.3f}",
            }
        )
    return pd.DataFrame(out)


def figure(path: Path, rows: pd.DataFrame) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    names = [c[0] for c in CONFIGS]
    for ax, column, title in [(axes[0], "dice", "Dice to template brain mask"), (axes[1], "brain_kept", "brain volume in image / native")]:
        ax.boxplot([rows[rows.config == n][column] for n in names], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), [n.replace(", ", "\n") for n in names], fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _io.save_figure(path, fig)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ixi-hh"), help="folder with t1/, seg/, participants.csv")
    parser.add_argument("--n", type=int, default=12, help="subjects to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()

    cohort = read_folder(args.data / "t1", args.data / "participants.csv", labels=args.data / "seg", on_error="skip")
    rows = measure(cohort, args.n, args.seed, args.spacing)
    table = summarise(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))

    args.out.mkdir(parents=True, exist_ok=True)
    _io.write_json(
        args.out / "registration.json",
        {
            "command": "python benchmarks/registration.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
            "per_subject": rows.to_dict("records"),
            "summary": table.to_dict("records"),
        },
    )
    figure(args.out / "registration.png", rows)
    lines = [
        "# Registration to MNI: measured",
        "",
        f"Sample: {table['subjects'][0]} subjects drawn with seed {args.seed} from `{args.data}`; grid {args.spacing:g} mm; "
        "one thread; times as the median per-subject ratio to the reference measured in the same run.",
        "",
        markdown_table(table),
        "",
    ]
    lines += ["![registration](registration.png)", ""]
    _io.write_text(args.out / "registration.md", "\n".join(lines))


if __name__ == "__main__":
    main()
