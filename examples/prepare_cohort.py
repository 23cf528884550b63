"""Prepare a real cohort for synthbrain, from Python, and look at what came out.

    python examples/prepare_cohort.py ../shared/data/ixi-hh prepared/example --limit 6

The folder must hold t1/ (images), seg/ (label maps) and participants.csv, like IXI-HH; edit the
read_folder call for other layouts (or use read_bids).
"""

import argparse
from pathlib import Path

import pandas as pd

from synthbrain.cohort import CovariateSchema, read_folder
from synthbrain.preprocessing.prepare import PrepareParams, prepare_cohort

parser = argparse.ArgumentParser()
parser.add_argument("data", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--limit", type=int, default=6, help="subjects to prepare")
parser.add_argument("--spacing", type=float, default=4.0)
args = parser.parse_args()

# 1. Read and check the cohort; bad subjects are skipped and listed instead of stopping.
cohort = read_folder(args.data / "t1", args.data / "participants.csv", labels=args.data / "seg", on_error="skip")
print(f"{len(cohort)} subjects read, {len(cohort.skipped)} skipped, {len(cohort.warnings)} warnings")
cohort.subjects = cohort.subjects[: args.limit]

# 2. Register to MNI, resample, normalise, write (resumes if run again).
prepare_cohort(cohort, args.out, PrepareParams(spacing=args.spacing))

# 3. The prepared table and the fitted covariate schema.
table = pd.read_csv(args.out / "participants.tsv", sep="\t")
print(table[["subject_id", "age", "sex", "ventricular_volume", "brain_volume", "dice_template"]].to_string(index=False))
schema = CovariateSchema.load(args.out / "covariates.json")
complete = table.dropna(subset=schema.names)
print("conditioning vectors (sex, age, ventricles, brain) in [0, 1]:")
print(schema.normalize(complete[schema.names]).round(3))
print(f"QC figures: {args.out / 'qc'}")
