"""Acceptance run of `synthbrain prepare` on a whole cohort: alignment, volumes and time per subject.

Prepares the cohort from scratch (the output folder must not exist), then reports the Dice of each
registered brain mask with the template's (and relative to the bound that head size allows), the
fraction of brain outside the grid, how well volumes survive resampling, and wall-clock time.
Writes Markdown + JSON and copies the QC figures next to them.

    python benchmarks/prepare_cohort.py --data ../shared/data/ixi-hh --out runs/ixi-2mm-rigid --spacing 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _report import markdown_table
from scipy import stats

from synthbrain import _io
from synthbrain.cohort import read_folder
from synthbrain.preprocessing.prepare import PrepareParams, prepare_cohort
from synthbrain.preprocessing.prepared import PreparedCohort
from synthbrain.preprocessing.template import template_brain_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ixi-hh"), help="folder with t1/, seg/, participants.csv")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the prepared cohort")
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--registration", default="rigid")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists; this benchmark times a run from scratch")

    start = time.perf_counter()
    cohort = read_folder(args.data / "t1", args.data / "participants.csv", labels=args.data / "seg", on_error="skip")
    read_seconds = time.perf_counter() - start
    params = PrepareParams(spacing=args.spacing, registration=args.registration)
    prepare_cohort(cohort, args.out, params, workers=args.workers)
    total_seconds = time.perf_counter() - start

    prepared = PreparedCohort.load(args.out)
    manifest, table = prepared.manifest(), prepared.table
    records = manifest["records"]
    ratio = table["dice_template"] / table["dice_template_size_bound"]
    volume_error = {
        name: np.array([abs(r["volumes_on_grid_ml"][name] - r["covariates"][name]) / r["covariates"][name] for r in records])
        for name in ("ventricular_volume", "brain_volume", "intracranial_volume")
    }
    workers = args.workers or len(os.sched_getaffinity(0))
    template_icv_l = float(np.asarray(template_brain_mask().dataobj).sum()) / 1e6  # 1 mm voxels
    icv_l = table["intracranial_volume"] / 1000
    vent, brain = volume_error["ventricular_volume"], volume_error["brain_volume"]
    summary = {
        "subjects prepared": int(len(table)),
        "subjects skipped": int(manifest["summary"]["skipped"]),
        "median Dice to template brain mask": float(table["dice_template"].median()),
        "worst Dice (subject)": f"{table['dice_template'].min():.3f} ({table.loc[table['dice_template'].idxmin(), 'subject_id']})",
        "5th percentile Dice": float(table["dice_template"].quantile(0.05)),
        "template intracranial volume, L": template_icv_l,
        "subjects' intracranial volume, L (min-max)": f"{icv_l.min():.2f}-{icv_l.max():.2f}",
        "Pearson r of Dice with intracranial volume": float(stats.pearsonr(table["dice_template"], table["intracranial_volume"]).statistic),
        "median Dice / head-size bound": float(ratio.median()),
        "worst Dice / head-size bound (subject)": f"{ratio.min():.3f} ({table.loc[ratio.idxmin(), 'subject_id']})",
        "largest fraction of a brain outside the grid": float(table["brain_outside_fraction"].max()),
        "ventricular volume on grid vs native, median / max relative error": f"{np.median(vent):.4f} / {vent.max():.4f}",
        "brain volume on grid vs native, median / max relative error": f"{np.median(brain):.4f} / {brain.max():.4f}",
        "reading and checking the cohort, s": read_seconds,
        f"wall time, {workers} workers, s": total_seconds,
        "wall time per subject, s": total_seconds / len(table),
        "median time per subject in one worker, s": float(table["seconds"].median()),
    }
    for key, value in summary.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")

    args.docs.mkdir(parents=True, exist_ok=True)
    name = f"prepare-{args.data.name}-{args.spacing:g}mm-{args.registration}"
    command = (
        f"python benchmarks/prepare_cohort.py --data {args.data} --out {args.out} --spacing {args.spacing:g} "
        f"--registration {args.registration}" + (f" --workers {args.workers}" if args.workers else "")
    )
    _io.write_json(
        args.docs / f"{name}.json",
        {
            "command": command,
            "params": manifest["params"] | {"label_scheme": manifest["params"]["label_scheme"]["name"]},
            "summary": summary,
        },
    )
    for png in ("montage.png", "covariates.png"):
        shutil.copyfile(args.out / "qc" / png, args.docs / f"{name}-{png}")
    rows = pd.DataFrame([{"measure": k, "value": v} for k, v in summary.items()])
    _io.write_text(
        args.docs / f"{name}.md",
        "\n".join(
            [
                f"# `synthbrain prepare` on {args.data.name}: {args.spacing:g} mm, {args.registration}",
                "",
                f"Command: `{command}`",
                "",
                "Dice compares each subject's registered brain mask (its labels > 0) with the MNI template's. "
                "Rigid registration keeps head size, so where a subject's intracranial volume differs from the template's "
                "(both in the table) Dice is capped by 2 min(V1, V2) / (V1 + V2); Dice / that bound isolates misalignment.",
                "",
                markdown_table(rows),
                "",
                "Worst-aligned subjects (relative to the bound) first, template brain outline in yellow:",
                "",
                f"![montage]({name}-montage.png)",
                "",
                f"![covariates]({name}-covariates.png)",
                "",
            ]
        ),
    )


if __name__ == "__main__":
    main()
