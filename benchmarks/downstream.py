"""Does synthetic augmentation help? Real-only versus augmented training, with a validity gate.

Protocol (issue 17; docs/downstream.md). A prepared cohort is split once, stratified by sex and
age, into four disjoint parts (``synthbrain split --parts generator=0.35,pool=0.3,val=0.1,test=0.25``):
the generator's (the generator compared here is trained on that part only), the downstream
training pool, a validation part (model selection, never the test part) and the test part. Other
prepared cohorts can be tested on too (``--test``, repeatable; evaluated on, never trained on).

Tasks. ``segmentation`` of the coarse classes: MONAI ``UNet`` (channels 16-32-64-128, strides 2,
one residual unit) on whole 4 mm volumes, Dice + cross-entropy (MONAI ``DiceCELoss``), Adam with a
one-cycle schedule peaking at 2e-3, batch 4, the checkpoint with the best validation Dice of four;
scored by Dice per class and the error of the ventricular volume it measures (mL). ``age`` (MAE,
years) and ``sex`` (AUC) from a small CNN on 8 mm blocks, selected on the validation part too.
Every training volume gets the same standard torchio augmentation (left-right flip, gamma, noise).

Arms, each with the same number of optimisation steps (but ``generated-first``). For each real
training size n (pool subjects, half of each sex, seeded; the same subjects in every arm) and seed:

- ``real``: real subjects only;
- ``+ generated, share 0.5``: half of every batch from the split generator's images (exactly, over the run);
- ``+ randomized generated anatomy``: half from its label maps with randomised appearance (SynthSeg-style);
- ``+ randomized real anatomy``: half from the n real label maps with randomised appearance (the control);
- ``+ generated & randomized``: half synthetic, of which half generated and half randomised;
- ``+ generated, covariates spread``: half from generated subjects whose age and ventricular
  volume are drawn uniformly over the model's range (over-sampling the tails);
- ``pretrain generated, fine-tune real``: the first half of the steps on generated subjects;
- ``generated only``: no real subject (n = 0, once per seed);
- ``+ more real (upper reference)``: half of every batch from the generator part's real subjects;
- ``+ pretrained model``: half from ``--pretrained`` (e.g. the embedded default model), reported
  only on ``--test`` cohorts that model never saw;
- share and schedule arms of the split generator's images (issue 31): ``generated-0.1``,
  ``generated-0.25`` (and ``generated``, 0.5) of every batch; ``generated-S`` for any other share S
  in [0, 1]; ``generated-linear``: 0.5 at the first step falling linearly to 0 at the last;
  ``generated-first``: half the task's steps on generated subjects only, then as many real-only
  steps as real-only trains (1.5 times the steps; one one-cycle learning-rate schedule over all);
  ``real-long``, its control: real subjects only for the same steps and schedule, so that the
  report can tell generated-first's gain from that of 1.5 times the steps.

Real-only and, for segmentation, the share and schedule arms and ``real-long`` run at every n; the
other arms at the smallest and largest n. Batches are mixed by the product's ``MixedDataset`` and
``MixedBatchSampler`` (a schedule of the step: ``constant_share``, ``linear_decay``,
``synthetic_then_real``), exactly as a user mixes them; every arm of a (task, n, seed) starts from
the same weights with the same draws (one seed per task, n and seed), so a share of 0 is
real-only bit for bit. The report's guidance table gives, per task and n, the best share or
schedule against real-only, or "no setting helps".

Each test cohort is also scored under fixed appearance shifts (:mod:`synthbrain.evaluation.shifts`).
Statistics: means over seeds and test subjects with two-level bootstrap intervals (seeds x subjects,
:mod:`synthbrain.evaluation.statistics`), and paired differences against real-only. The validity
gate: real-only at the largest n must beat the smallest n with an interval excluding zero; a task
that fails it gets no verdict. Resumable: finished runs are kept in OUT.subjects.tsv.gz, keyed by
a configuration hash; runs of other configurations (earlier versions) stay in the file untouched.

    python benchmarks/downstream.py --model runs/downstream/dm/generator --split runs/downstream/split \\
        --pretrained default --test OTHER_PREPARED_COHORT --out docs/benchmarks/downstream
    python benchmarks/downstream.py --model runs/downstream/dm/generator --split runs/downstream/split \\
        --arms real,generated-0.1,generated-0.25,generated,generated-linear,generated-first \\
        --out docs/benchmarks/downstream-shares   # the share and schedule arms (issue 31; about 3.5 h on 2 cores)
    python benchmarks/downstream.py --quick ...   # minutes: tiny networks, few steps (a check, not a result)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchio as tio
from _report import markdown_table
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from synthbrain import BrainGenerator, Uniform, _io, seeding
from synthbrain.datasets.appearance import AppearanceRandomizer
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset, constant_share, linear_decay, synthetic_then_real
from synthbrain.datasets.synthetic import SyntheticBrainDataset
from synthbrain.device import resolve_device
from synthbrain.evaluation.evaluate import load_cohort_on_grid
from synthbrain.evaluation.networks import Encoder3d, predict
from synthbrain.evaluation.shifts import SHIFTS, shifted_set
from synthbrain.evaluation.statistics import bootstrap_auc, bootstrap_difference, bootstrap_mean
from synthbrain.generator import draws
from synthbrain.overlap import dice_per_class
from synthbrain.preprocessing.prepared import PreparedCohort

TASKS = ("segmentation", "age", "sex")
REAL, GENERATED, RANDOMIZED, REAL_RANDOMIZED, BOTH, SPREAD, PRETRAIN, SYNTH_ONLY, UPPER, PRETRAINED = (
    "real",
    "generated",
    "randomized",
    "real-randomized",
    "both",
    "spread",
    "pretrain",
    "synthetic-only",
    "upper",
    "pretrained",
)
SHARE_PREFIX = "generated-"  # generated-S: a share S in [0, 1] of every batch from the split generator's images
SHARE_10, SHARE_25, LINEAR, FIRST = "generated-0.1", "generated-0.25", "generated-linear", "generated-first"
REAL_LONG = "real-long"  # generated-first's control: its steps and learning-rate schedule, real subjects only
FRACTION = 0.5  # the share of every batch from the arm's extra subjects (the mixing arms)
# arm -> (its name in the report, where its extra subjects come from, how they are used, the share):
# "mix" a constant share of every batch, "linear" that share at the first step falling linearly to 0
# at the last, "pretrain" the first half of the steps extra only (then real only), "first" as many
# extra-only steps first (half the task's steps), then the task's steps real only, "long" real only for
# as many steps as "first" (its control), "only" extra only
ARMS = {
    REAL: ("real only", None, "mix", 0.0),
    GENERATED: ("+ generated, share 0.5", "generated", "mix", FRACTION),
    RANDOMIZED: ("+ randomized generated anatomy", "randomized", "mix", FRACTION),
    REAL_RANDOMIZED: ("+ randomized real anatomy (control)", "real randomized", "mix", FRACTION),
    BOTH: ("+ generated & randomized", "both", "mix", FRACTION),
    SPREAD: ("+ generated with covariates spread", "spread", "mix", FRACTION),
    PRETRAIN: ("pretrain on generated then fine-tune", "generated", "pretrain", 1.0),
    SYNTH_ONLY: ("generated only", "generated", "only", 1.0),
    UPPER: ("+ more real (upper reference)", "generator part", "mix", FRACTION),
    PRETRAINED: ("+ pretrained model", "pretrained", "mix", FRACTION),
    SHARE_10: ("+ generated, share 0.1", "generated", "mix", 0.1),
    SHARE_25: ("+ generated, share 0.25", "generated", "mix", 0.25),
    LINEAR: ("+ generated, share 0.5 falling linearly to 0", "generated", "linear", FRACTION),
    FIRST: ("generated first, then as many real steps as real only", "generated", "first", 1.0),
    REAL_LONG: ("real only, as many steps as generated first (control)", None, "long", 0.0),
}
# the share and schedule arms: at every n for segmentation, as real-long (the smallest and largest for age and sex),
# and the candidates of the report's guidance table (with any generated-S arm given to --arms)
SCHEDULE_ARMS = (SHARE_10, SHARE_25, GENERATED, LINEAR, FIRST)
# One colour per arm in every panel of the figure (matplotlib's tab20, real-only in black), so that
# one legend below the panels names them all.
ARM_COLOURS = dict(
    zip(
        ARMS,
        "#000000 #1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #17becf #aec7e8 #ffbb78 #98df8a #ff9896 #c5b0d5".split(),
        strict=True,
    )
)
TASK_ARMS = {
    "segmentation": tuple(ARMS),
    "age": (REAL, GENERATED, SPREAD, PRETRAIN, SYNTH_ONLY, UPPER, PRETRAINED, SHARE_10, SHARE_25, LINEAR, FIRST, REAL_LONG),
    "sex": (REAL, GENERATED, SPREAD, PRETRAIN, SYNTH_ONLY, UPPER, PRETRAINED, SHARE_10, SHARE_25, LINEAR, FIRST, REAL_LONG),
}
BATCH = 4
MIXING = "MixedBatchSampler, schedule of the step; one seed per (task, n, seed) for every arm"  # in the configuration hash
METRIC = {"segmentation": "mean Dice (foreground)", "age": "MAE (years)", "sex": "AUC"}
HIGHER_IS_BETTER = {"segmentation": True, "age": False, "sex": True}
AGE_CENTRE, AGE_SCALE = 50.0, 20.0
SPLIT_TEST = "split test"
FULL = dict(
    sizes="4,10,40",
    seeds=5,
    steps={"segmentation": 400, "age": 600, "sex": 200},
    lr={"segmentation": 2e-3, "age": 1e-3, "sex": 1e-3},
    synthetic=200,
    seg_channels="16,32,64,128",
    cnn_channels="8,16,32",
)
QUICK = dict(
    sizes="2,4",
    seeds=2,
    steps={"segmentation": 4, "age": 4, "sex": 4},
    lr={"segmentation": 2e-3, "age": 1e-3, "sex": 1e-3},
    synthetic=4,
    seg_channels="4,8",
    cnn_channels="4,8",
)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    mode = QUICK if args.quick else FULL
    settings = {k: v for k, v in mode.items()}
    for key in ("sizes", "seeds", "synthetic"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    tasks = _choice(args.tasks, TASKS, "--tasks")
    arms = _arm_names(args.arms)
    if settings["seeds"] < 2 or settings["synthetic"] < 2:
        raise SystemExit(f"--seeds {settings['seeds']}, --synthetic {settings['synthetic']}: allowed >= 2 each")
    started = time.perf_counter()
    device = _device(args.device)
    sizes = sorted({int(s) for s in str(settings["sizes"]).split(",")})
    if PRETRAINED in arms and not args.pretrained:
        arms = tuple(a for a in arms if a != PRETRAINED)
    # --report-only reads the finished runs only: --model and --split name the configuration (its hash), and
    # are not opened, so the committed report can be written again without the split generator.
    if not args.report_only:
        generator, parts, cohorts, classes = _inputs_of_training(args, sizes, settings, arms, device)

    cells = [
        (task, arm, 0 if ARMS[arm][2] == "only" else n, seed)
        for task in tasks
        for seed in range(settings["seeds"])
        for arm in TASK_ARMS[task]
        if arm in arms
        for n in (
            sizes
            if arm == REAL or (task == "segmentation" and (_is_schedule(arm) or arm == REAL_LONG))
            else dict.fromkeys([sizes[0], sizes[-1]])
        )
        if not (ARMS[arm][2] == "only" and n != sizes[0])
    ]
    configs = {task: _config(task, settings, args, device) for task in TASKS}
    table_file = args.out.with_name(args.out.name + ".subjects.tsv.gz")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, others = pd.DataFrame(), pd.DataFrame()
    if table_file.is_file():  # runs of other configurations (earlier versions) are kept in the file, untouched
        table = pd.read_csv(table_file, sep="\t", keep_default_na=False, na_values=["n/a"])
        ours = table["config"] == table["task"].map(configs)
        rows, others = table[ours], table[~ours]
    done = set(map(tuple, rows[["task", "arm", "n", "seed"]].drop_duplicates().to_numpy().tolist())) if len(rows) else set()
    todo = [c for c in cells if c not in done]
    print(f"{len(cells)} runs, {len(cells) - len(todo)} already done ({table_file})")
    if todo and not args.report_only:
        grid = generator.image_grid
        pools = _synthetic_pools(generator, args, settings, classes, arms)
        shifted = {(name, shift): shifted_set(shift, c["images"], grid.affine, seed=7) for name, c in cohorts.items() for shift in SHIFTS}
        for task, arm, n, seed in tqdm(todo, desc="downstream", unit="run"):
            chosen = _subset(parts["pool"]["table"], max(n, sizes[0]), seed)
            network = _train(task, arm, chosen, parts, pools, settings, seed, len(classes), device)
            scored = _score(task, arm, network, cohorts, shifted, classes, grid, device)
            scored.insert(0, "config", configs[task])
            scored[["task", "arm", "n", "seed"]] = [task, arm, n, seed]
            rows = pd.concat([rows, scored], ignore_index=True)
            with _io.atomic_path(table_file) as tmp:
                pd.concat([others, rows], ignore_index=True).to_csv(tmp, sep="\t", index=False, na_rep="n/a", compression="gzip")
    if not len(rows):
        raise SystemExit(f"no finished runs of this configuration in {table_file}")
    # The foreground classes: the model's, or without it (--report-only) those the runs recorded, in their order.
    foreground = [m.removeprefix("dice ") for m in dict.fromkeys(rows["metric"]) if m.startswith("dice ")]
    if not args.report_only and foreground and foreground != classes[1:]:
        raise SystemExit(f"{table_file}: runs scored classes {foreground}; the model has {classes[1:]}")
    missing = len([c for c in cells if c not in set(map(tuple, rows[["task", "arm", "n", "seed"]].drop_duplicates().to_numpy().tolist()))])
    report = _report(rows, tasks, sizes, foreground, settings, args, argv, missing, len(cells), time.perf_counter() - started, device)
    return report


def _inputs_of_training(args, sizes: list[int], settings: dict, arms: tuple[str, ...], device):
    """The split generator, the split's parts and the test cohorts on its grid, and its label classes;
    bad input is refused here, before any training."""
    generator = BrainGenerator.from_pretrained(args.model).to(device)
    grid, classes = generator.image_grid, list(generator.label_classes or [])
    if not classes:
        raise SystemExit(f"--model {args.model}: a generator without label maps; the segmentation task needs them")
    parts = {}
    for name in ("generator", "pool", "val", "test"):
        folder = args.split / name
        if not PreparedCohort.is_prepared(folder):
            raise SystemExit(
                f"--split {args.split}: no part {name!r}; make the split with "
                "synthbrain split --parts generator=0.35,pool=0.3,val=0.1,test=0.25"
            )
        parts[name] = _load(folder, grid, classes)
    cohorts = {SPLIT_TEST: parts["test"]}
    for path in args.test or []:
        name = path.name
        if name in cohorts:
            raise SystemExit(f"--test {path}: a second test cohort named {name!r}; give folders of different names")
        cohorts[name] = _load(path, grid, classes)
    complete = parts["pool"]["table"][["sex", "age"]].notna().all(axis=1)
    if sizes[0] < 2 or sizes[-1] > int(complete.sum()):
        raise SystemExit(f"--sizes {settings['sizes']}: allowed 2 .. {int(complete.sum())} (the pool's subjects with sex and age)")
    if PRETRAINED in arms and len(cohorts) == 1:
        raise SystemExit("--pretrained: its arm is reported only on --test cohorts the model never saw; give --test, or drop the arm")
    return generator, parts, cohorts, classes


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="generator trained on the split's generator part only")
    parser.add_argument("--split", type=Path, required=True, help="output of synthbrain split: SPLIT/{generator,pool,val,test}")
    parser.add_argument("--test", type=Path, action="append", help="another prepared cohort to test on (repeatable)")
    parser.add_argument("--pretrained", default=None, help="a pretrained model (e.g. 'default') for its arm, scored on --test only")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {','.join(TASKS)}")
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated, from {','.join(ARMS)}, or {SHARE_PREFIX}S for another share S in [0, 1] (default: all named)",
    )
    parser.add_argument("--sizes", default=None, help="real training sizes, e.g. 4,10,40 (augmented arms use the smallest and largest)")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per cell (default 5)")
    parser.add_argument("--synthetic", type=int, default=None, help="synthetic volumes per pool (default 200)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, few steps: a check that everything runs, not a result")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/downstream"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs; train nothing")
    parser.add_argument("--device", default=None, help="where networks train and generate: cpu, cuda, cuda:1 (default: cuda if available)")
    return parser.parse_args(argv)


def _choice(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag} {text!r}: unknown {unknown}; allowed: {', '.join(allowed)}")
    return chosen


def _arm_names(text: str) -> tuple[str, ...]:
    """The arms of ``--arms``: named ones, and ``generated-S`` for a share S in [0, 1] of every batch
    (added to the arms of every task; a share a named arm has, as 0.5, is that arm); anything else is
    an error naming it, before any training."""
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    for i, name in enumerate(chosen):
        if name in ARMS or not name.startswith(SHARE_PREFIX):
            continue
        try:
            share = float(name.removeprefix(SHARE_PREFIX))
        except ValueError:
            continue  # unknown: named below
        if not 0 <= share <= 1:
            raise SystemExit(f"--arms {name}: a share of {share:g}; allowed: {SHARE_PREFIX}S with S in [0, 1]")
        named = [a for a, (_, source, use, s) in ARMS.items() if (source, use, s) == ("generated", "mix", share)]
        if named:
            chosen[i] = named[0]
            continue
        ARMS[name] = (f"+ generated, share {share:g}", "generated", "mix", share)
        for task in TASKS:
            TASK_ARMS[task] += (name,)
    return _choice(",".join(chosen), tuple(ARMS), "--arms")


def _is_schedule(arm: str) -> bool:
    """A share or schedule arm of the split generator's images (the guidance table's candidates)."""
    return arm in SCHEDULE_ARMS or (arm.startswith(SHARE_PREFIX) and arm in ARMS)


def _device(name: str | None) -> torch.device:
    """``--device`` (:func:`synthbrain.device.resolve_device`; by default CUDA where there is a GPU); a
    device this machine lacks is an error naming the flag, before any training."""
    try:
        return resolve_device(name, "--device")
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _config(task: str, settings: dict, args: argparse.Namespace, device: torch.device) -> str:
    """Hash of what a task's runs depend on (resumed runs must match it). Runs on a GPU differ from
    CPU runs in the last digits, so a GPU's runs are kept apart. ``MIXING`` names how batches are
    mixed: the runs of version 3 (the benchmark's own mixing loop, a seed per arm) have other
    hashes and stay in the table beside these, read by nothing but the report that used them."""
    own = {k: v[task] if isinstance(v, dict) else v for k, v in settings.items()}
    key = [task, own, str(args.model), str(args.split), sorted(map(str, args.test or [])), str(args.pretrained), FRACTION, MIXING]
    if device.type != "cpu":
        key.append(device.type)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _load(path: Path, grid, classes: list[str]) -> dict:
    """A prepared cohort on the model's grid: images (N, 1, ...), labels (N, ...) class indices,
    true ventricular volume (mL, from the class fractions) and its table. Another label scheme or a
    grid that cannot be brought to the model's is an error before any training."""
    try:
        cohort, images, fractions = load_cohort_on_grid(path, grid)
    except ValueError as err:
        raise SystemExit(f"{path}: {err}") from None
    if list(cohort.label_scheme.class_names) != classes:
        raise SystemExit(f"{path}: label classes {list(cohort.label_scheme.class_names)}; allowed: the model's {classes}")
    ventricles = classes.index("ventricles") if "ventricles" in classes else None
    volume = fractions[:, ventricles].flatten(1).sum(1) * grid.voxel_volume_mm3 / 1000 if ventricles is not None else None
    return {"images": images, "labels": fractions.argmax(1), "table": cohort.table.reset_index(drop=True), "ventricles_ml": volume}


def _subset(table: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """n pool subjects with sex and age, half of each sex (as near as the pool allows), seeded by (n, seed)."""
    rng = seeding.keyed_rng(n, seed)
    complete = table[["sex", "age"]].notna().all(axis=1).to_numpy()
    groups = [rng.permutation(np.flatnonzero(complete & (table["sex"].to_numpy() == s))).tolist() for s in ("F", "M")]
    if n > len(groups[0]) + len(groups[1]):
        raise ValueError(f"n={n} real subjects asked for; the pool has {len(groups[0]) + len(groups[1])} with sex F or M and an age")
    picks, k = [], 0
    while len(picks) < n:
        if groups[k]:
            picks.append(groups[k].pop())
        k = 1 - k
    return np.sort(picks)


def _synthetic_pools(generator: BrainGenerator, args, settings: dict, classes: list[str], arms: tuple[str, ...]) -> dict:
    """Every synthetic pool the chosen arms draw from, generated once (seeded)."""
    needed = {ARMS[a][1] for a in arms}
    count, pools = settings["synthetic"], {}
    randomizer = AppearanceRandomizer()

    def as_pool(out) -> dict:
        return {"images": out.images.float(), "labels": out.labels.long(), "table": out.covariates.reset_index(drop=True)}

    if needed & {"generated", "randomized", "both"}:
        pools["generated"] = as_pool(generator.generate(n=count, seed=10_000, batch_size=8, progress=True))
    if needed & {"randomized", "both"}:
        base = pools["generated"]
        images = [randomizer(lab, len(classes), generator.image_grid.affine, seed=20_000 + i)[0] for i, lab in enumerate(base["labels"])]
        pools["randomized"] = {**base, "images": torch.stack(images)}
    if "both" in needed:  # alternate, as the sampler draws synthetic subjects in index order
        odd = (torch.arange(count) % 2 == 1).view(-1, *[1] * (pools["generated"]["images"].ndim - 1))
        pools["both"] = {
            "images": torch.where(odd, pools["randomized"]["images"], pools["generated"]["images"]),
            "labels": pools["generated"]["labels"],
            "table": pools["generated"]["table"],
        }
    if "spread" in needed:
        schema = generator.schema
        ranges = {name: (schema[name].low, schema[name].high) for name in ("age", "ventricular_volume") if name in schema.names}
        sampler = Uniform(**ranges, **({"sex": list(schema["sex"].categories)} if "sex" in schema.names else {}))
        pools["spread"] = as_pool(generator.generate(cond_sampler=sampler, n=count, seed=30_000, batch_size=8, progress=True))
    if "pretrained" in needed:
        other = BrainGenerator.from_pretrained(args.pretrained).to(generator.device)
        if other.image_grid.shape != generator.image_grid.shape or list(other.label_classes or []) != classes:
            raise SystemExit(f"--pretrained {args.pretrained}: another grid or label scheme than --model's")
        pools["pretrained"] = as_pool(other.generate(n=count, seed=40_000, batch_size=8, progress=True))
    pools["randomizer"], pools["affine"], pools["generator"] = randomizer, generator.image_grid.affine, generator
    return pools


def _real_randomized(real: dict, count: int, randomizer, num_classes: int, seed: int, affine) -> dict:
    """``count`` renders of the chosen real label maps (in turn) with randomised appearance."""
    images = [
        randomizer(real["labels"][i % len(real["labels"])], num_classes, affine, seed=draws.volume_seed(seed, i))[0] for i in range(count)
    ]
    index = [i % len(real["labels"]) for i in range(count)]
    return {"images": torch.stack(images), "labels": real["labels"][index], "table": real["table"].iloc[index].reset_index(drop=True)}


def _inputs(task: str, part: dict) -> torch.Tensor:
    """Images as the task's network sees them: age and sex networks on 8 mm blocks (CPU cost)."""
    return part["images"] if task == "segmentation" else F.avg_pool3d(part["images"], 2, ceil_mode=True)


def _targets(task: str, part: dict) -> torch.Tensor:
    if task == "segmentation":
        return part["labels"]
    if task == "sex":
        return torch.tensor((part["table"]["sex"].to_numpy() == "M").astype(np.float32))[:, None]
    return torch.tensor(((part["table"]["age"].to_numpy(float) - AGE_CENTRE) / AGE_SCALE).astype(np.float32))[:, None]


def _network(task: str, settings: dict, num_classes: int) -> torch.nn.Module:
    if task == "segmentation":
        from monai.networks.nets import UNet

        channels = tuple(int(c) for c in settings["seg_channels"].split(","))
        return UNet(3, 1, num_classes, channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=1)
    return Encoder3d(1, tuple(int(c) for c in settings["cnn_channels"].split(",")))


def _loss(task: str, num_classes: int):
    if task == "segmentation":
        from monai.losses import DiceCELoss

        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
        return lambda logits, target: dice_ce(logits, target[:, None])
    return F.binary_cross_entropy_with_logits if task == "sex" else F.smooth_l1_loss


FLIP = tio.RandomFlip(axes=(0,), flip_probability=0.5)
INTENSITY = tio.Compose([tio.RandomGamma(log_gamma=0.1), tio.RandomNoise(std=(0, 0.01))])


def _augment(image: torch.Tensor, target: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard torchio augmentation of one training volume (the same for every arm): left-right
    flip (the label map with it), gamma and noise; draws from torch's generator, seeded per run."""
    fields = {"image": tio.ScalarImage(tensor=image)}
    if task == "segmentation":
        fields["target"] = tio.LabelMap(tensor=target[None])
    subject = FLIP(tio.Subject(**fields))
    out = INTENSITY(subject["image"]).data.clamp(0, 1)
    return out, (subject["target"].data[0] if task == "segmentation" else target)


def _colour(arm: str):
    """The arm's colour in every panel: its own in :data:`ARM_COLOURS`, or for another share arm
    ``generated-S`` the colour of S on matplotlib's viridis scale."""
    if arm in ARM_COLOURS:
        return ARM_COLOURS[arm]
    return colormaps["viridis"](float(arm.removeprefix(SHARE_PREFIX)))


def _plan(arm: str, steps: int) -> tuple:
    """An arm's share of extra subjects as a function of the step (a ``MixedBatchSampler``
    schedule) and its number of steps: ``steps`` for every arm but ``generated-first``, whose
    ``steps // 2`` extra-only steps come before the ``steps`` real-only ones (so its real part gets
    as many steps as real-only; one one-cycle learning-rate schedule spans all of them), and
    ``real-long``, which trains as many steps on real subjects only."""
    use, share = ARMS[arm][2], ARMS[arm][3]
    if use == "linear":
        return linear_decay(share, steps), steps
    if use == "pretrain":
        return synthetic_then_real(steps // 2), steps
    if use == "first":
        return synthetic_then_real(steps // 2), steps // 2 + steps
    if use == "long":
        return constant_share(0.0), steps // 2 + steps
    return constant_share(share), steps  # "mix", and "only" (a share of 1)


def _train(task: str, arm: str, chosen: np.ndarray, parts: dict, pools: dict, settings: dict, seed: int, num_classes: int, device):
    """One network trained as the arm says, the checkpoint with the best validation score of four
    evaluations returned (model selection on the val part). Batches are mixed as a user mixes them:
    a ``MixedDataset`` of the n real subjects (checked as any user's) and a synthetic index space as
    long as the arm's pool, with a ``MixedBatchSampler`` and the arm's schedule of the step
    (:func:`_plan`). Index ``num_real + i`` is item i of the pool, generated once and kept in memory
    (the index space, a ``SyntheticBrainDataset``, is never read, so nothing is generated again).
    The run's seed depends on the task, n and seed, not the arm: every arm starts from the same
    weights with the same real order and augmentation draws, so a share of 0 is the real-only run,
    bit for bit."""
    _, source, _, _ = ARMS[arm]
    pool = parts["pool"]
    real = {"images": pool["images"][chosen], "labels": pool["labels"][chosen], "table": pool["table"].iloc[chosen].reset_index(drop=True)}
    if source == "real randomized":
        extra = _real_randomized(real, settings["synthetic"], pools["randomizer"], num_classes, seed, pools["affine"])
    elif source == "generator part":
        extra = parts["generator"]
        keep = extra["table"][["sex", "age"]].notna().all(axis=1).to_numpy() if task != "segmentation" else slice(None)
        extra = {"images": extra["images"][keep], "labels": extra["labels"][keep], "table": extra["table"][keep].reset_index(drop=True)}
    else:
        extra = pools.get(source) if source else None
    lr = settings["lr"][task]
    schedule, steps = _plan(arm, settings["steps"][task])
    run_seed = seeding.child_seed(seed, TASKS.index(task), len(chosen))
    generator = pools["generator"]
    index_space = SyntheticBrainDataset(1 if extra is None else len(extra["images"]), generator=generator, device=generator.device)
    mixed = MixedDataset((real["images"], real["labels"]), index_space)  # checks the real tensors as for any user
    sampler = MixedBatchSampler(mixed, BATCH, schedule, num_batches=steps, seed=run_seed, schedule_unit="step", num_epochs=1)
    x_real, y_real = _inputs(task, real), _targets(task, real)
    x_extra, y_extra = (_inputs(task, extra), _targets(task, extra)) if extra is not None else (None, None)
    val = parts["val"]
    x_val = _inputs(task, val)
    loss_fn = _loss(task, num_classes)
    # The loop is the benchmark's own, not the package's, on purpose (issue 33): synthbrain.training.run is
    # resumable stage training (a DistributedSampler's order, checkpoint files, no learning-rate schedule,
    # no validation), and synthbrain.evaluation.networks.train_network (which version 1 used) trains with
    # AdamW at a fixed rate and re-seeds torch after building the network. Either would change the batches,
    # the initial weights or the augmentation draws of every run, and neither picks the best of four
    # validation checkpoints; what this loop shares with them (device, seeds, Dice) comes from the package.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_seed)
        model = _network(task, settings, num_classes).to(device)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr / 25)
        one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
        best, best_state = -np.inf, None
        for step, batch in enumerate(sampler):
            picks = [(x_real, y_real, i) if i < mixed.num_real else (x_extra, y_extra, i - mixed.num_real) for i in batch]
            pairs = [_augment(x[i], y[i], task) for x, y, i in picks]
            model.train()
            inputs, targets = torch.stack([p[0] for p in pairs]).to(device), torch.stack([p[1] for p in pairs]).to(device)
            loss = loss_fn(model(inputs), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            one_cycle.step()
            if (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
                score = _validation_score(task, model, x_val, val, num_classes, device)
                if score > best:
                    best, best_state = score, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
    return model.eval()


def _validation_score(task: str, model, x_val: torch.Tensor, val: dict, num_classes: int, device) -> float:
    """Higher is better: mean foreground Dice, AUC, or minus the MAE on the validation part."""
    out = predict(model, x_val, device=device)
    if task == "segmentation":
        dice = [dice_per_class(t, p, num_classes)[1:] for t, p in zip(val["labels"].numpy(), out.argmax(1).numpy())]
        return float(np.nanmean(dice))
    known = val["table"][["sex", "age"]].notna().all(axis=1).to_numpy()
    if task == "sex":
        male = val["table"]["sex"].to_numpy()[known] == "M"
        return float(roc_auc_score(male, out[:, 0].numpy()[known])) if 0 < male.sum() < len(male) else 0.0
    age = out[:, 0].numpy()[known] * AGE_SCALE + AGE_CENTRE
    return -float(np.abs(age - val["table"]["age"].to_numpy(float)[known]).mean())


def _score(task: str, arm: str, model, cohorts: dict, shifted: dict, classes: list[str], grid, device) -> pd.DataFrame:
    """Per test subject scores of one network on every test cohort (the pretrained-model arm on the
    --test cohorts only), and for segmentation under every shift too."""
    rows = []
    for name, cohort in cohorts.items():
        if arm == PRETRAINED and name == SPLIT_TEST:
            continue
        if task == "segmentation":
            labels = predict(model, cohort["images"], device=device).argmax(1)
            dice = np.array([dice_per_class(t, p, len(classes)) for t, p in zip(cohort["labels"].numpy(), labels.numpy())])
            measures = {"dice": np.nanmean(dice[:, 1:], 1), **{f"dice {c}": dice[:, k] for k, c in enumerate(classes) if k}}
            if cohort["ventricles_ml"] is not None:
                found = (labels == classes.index("ventricles")).flatten(1).sum(1).numpy() * grid.voxel_volume_mm3 / 1000
                measures["ventricular volume error (mL)"] = np.abs(found - cohort["ventricles_ml"].numpy())
            for shift in SHIFTS:
                out = predict(model, shifted[(name, shift)], device=device).argmax(1).numpy()
                per = np.array([dice_per_class(t, p, len(classes)) for t, p in zip(cohort["labels"].numpy(), out)])
                measures[f"dice, {shift}"] = np.nanmean(per[:, 1:], 1)
        else:
            known = cohort["table"][["sex", "age"]].notna().all(axis=1).to_numpy()
            out = predict(model, _inputs(task, cohort), device=device)[:, 0].numpy()
            if task == "sex":
                male = (cohort["table"]["sex"].to_numpy() == "M").astype(float)
                measures = {"p(male)": np.where(known, 1 / (1 + np.exp(-out)), np.nan), "male": np.where(known, male, np.nan)}
            else:
                error = np.abs(out * AGE_SCALE + AGE_CENTRE - cohort["table"]["age"].to_numpy(float))
                measures = {"absolute error (years)": np.where(known, error, np.nan)}
        for metric, values in measures.items():
            rows += [{"cohort": name, "subject": i, "metric": metric, "value": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- report

HEADLINE = {"segmentation": "dice", "age": "absolute error (years)", "sex": "p(male)"}


def _matrix(rows: pd.DataFrame, task: str, arm: str, n: int, cohort: str, metric: str) -> pd.DataFrame:
    part = rows[(rows["task"] == task) & (rows["arm"] == arm) & (rows["n"] == n) & (rows["cohort"] == cohort) & (rows["metric"] == metric)]
    return part.pivot_table(index="seed", columns="subject", values="value", aggfunc="first")


def _truth(rows: pd.DataFrame, cohort: str) -> pd.Series:
    part = rows[(rows["task"] == "sex") & (rows["cohort"] == cohort) & (rows["metric"] == "male")]
    return part.groupby("subject")["value"].first()


def _estimate(rows, task, arm, n, cohort, metric, reference=None):
    """Mean [interval] of a cell, or with ``reference`` (arm, n) the paired difference against it."""
    a = _matrix(rows, task, arm, n, cohort, metric)
    if not len(a):
        return None
    if reference is not None:
        b = _matrix(rows, task, *reference, cohort, metric)
        seeds, subjects = a.index.intersection(b.index), a.columns.intersection(b.columns)
        if len(seeds) < 1 or not len(b):
            return None
        a, b = a.loc[seeds, subjects], b.loc[seeds, subjects]
    if task == "sex" and metric == "p(male)":
        truth = _truth(rows, cohort).reindex(a.columns)
        known = truth.notna().to_numpy()
        other = None if reference is None else b.to_numpy()[:, known]
        return bootstrap_auc(a.to_numpy()[:, known], truth.to_numpy()[known], reference=other)
    if reference is not None:
        return bootstrap_difference(a.to_numpy(), b.to_numpy())
    return bootstrap_mean(a.to_numpy())


def _cell(estimate, digits: int = 3, signed: bool = False) -> str:
    if estimate is None or not np.isfinite(estimate.value):
        return "-"
    sign = "+" if signed else ""
    return f"{estimate.value:{sign}.{digits}f} [{estimate.low:{sign}.{digits}f}, {estimate.high:{sign}.{digits}f}]"


def _gate(rows: pd.DataFrame, task: str, sizes: list[int]) -> dict:
    """Real-only at the largest n against the smallest n on the split's test part."""
    metric = HEADLINE[task]
    difference = _estimate(rows, task, REAL, sizes[-1], SPLIT_TEST, metric, reference=(REAL, sizes[0]))
    if difference is None:
        return {"passed": False, "text": "not run (real-only runs missing)"}
    better = difference.low > 0 if HIGHER_IS_BETTER[task] else difference.high < 0
    return {
        "passed": bool(better),
        "difference": difference.__dict__,
        "text": f"n={sizes[-1]} minus n={sizes[0]}: {_cell(difference, signed=True)} ({'passes' if better else 'fails'})",
    }


def _verdict(task: str, difference) -> str:
    if difference is None:
        return "-"
    good = difference.low > 0 if HIGHER_IS_BETTER[task] else difference.high < 0
    bad = difference.high < 0 if HIGHER_IS_BETTER[task] else difference.low > 0
    return "helps" if good else "hurts" if bad else "no clear difference"


def _report(rows, tasks, sizes, foreground, settings, args, argv, missing, total, seconds, device) -> dict:
    cohorts = list(dict.fromkeys(rows["cohort"]))
    tasks = [t for t in tasks if t in set(rows["task"])]
    command = "python benchmarks/downstream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sections, record = [], {"command": command, "settings": settings, "sizes": sizes, "tasks": {}}
    gates = {task: _gate(rows, task, sizes) for task in tasks}
    lines = [f"- **{task}** ({METRIC[task]}): {gates[task]['text']}" for task in tasks]
    title = "# Downstream benchmark: real-only versus augmented training" + (" (quick mode: a check, not a result)" if args.quick else "")
    head = [title]
    if missing:
        head.append(f"**Incomplete: {missing} of the {total} runs are not done yet.**")
    head.append(
        "**Validity gate** (real-only training must improve with real data, on the split's test part; "
        "a task that fails gets no verdict):\n\n" + "\n".join(lines)
    )
    verdicts = []
    present = {task: set(rows[rows["task"] == task]["arm"]) for task in tasks}  # the arms with finished runs
    for task in tasks:
        metric = HEADLINE[task]
        table, per_task = [], []
        arms = [a for a in TASK_ARMS[task] if a in present[task]]
        for cohort in cohorts:
            for arm in arms:
                for n in sorted(set(rows[(rows["task"] == task) & (rows["arm"] == arm)]["n"])):
                    value = _estimate(rows, task, arm, n, cohort, metric)
                    if value is None:
                        continue
                    base_n = sizes[0] if n == 0 else n
                    diff = None if arm == REAL else _estimate(rows, task, arm, n, cohort, metric, reference=(REAL, base_n))
                    call = _verdict(task, diff) if arm != REAL else ""
                    row = {"cohort": cohort, "arm": ARMS[arm][0], "real n": n, METRIC[task]: _cell(value)}
                    row["vs real-only (same n)"] = _cell(diff, signed=True)
                    row["verdict"] = call if gates[task]["passed"] else ("no verdict (gate failed)" if arm != REAL else "")
                    table.append(row)
                    per_task.append(
                        {"cohort": cohort, "arm": arm, "n": int(n), "estimate": value.__dict__, "difference": diff and diff.__dict__}
                    )
                    if arm != REAL and gates[task]["passed"] and call in ("helps", "hurts"):
                        verdicts.append(f"{task}, {cohort}, n={n}: {ARMS[arm][0]} {call} ({_cell(diff, signed=True)})")
        record["tasks"][task] = {"gate": gates[task], "cells": per_task}
        heading = f"## {task}: {METRIC[task]}, mean [95 % bootstrap interval over seeds and test subjects]"
        sections.append(heading + "\n\n" + markdown_table(pd.DataFrame(table)))
        if task == "segmentation":
            sections += _segmentation_details(rows, arms, sizes, foreground, cohorts, record)
    head.append("**Verdict** (every difference whose interval excludes zero):\n\n" + ("\n".join(f"- {v}" for v in verdicts) or "- none"))
    guidance, record["guidance"] = _guidance(rows, tasks, gates)
    if guidance:
        headlines = [f"### {task}: {METRIC[task]}\n\n" + markdown_table(pd.DataFrame(table)) for task, table in _headline(rows, tasks)]
        sections.insert(
            0,
            "## Guidance: which share or schedule of generated images, for n real subjects\n\n"
            f"From the runs on the {SPLIT_TEST} part: per task and n, the share or schedule arm with the best paired difference "
            "against real-only at the same n and seed (among those whose interval excludes zero, where any does), its difference "
            '[95 % interval], and where none is significantly better, "no setting helps". Generated first trains 1.5 times the '
            "steps, so it is recommended only where it also beats real only trained as long (`real-long`, its control).\n\n"
            + markdown_table(pd.DataFrame(guidance))
            + "\n\nEvery share and schedule per n: real-only's value, then each setting's paired difference against it "
            "[95 % interval].\n\n" + "\n\n".join(headlines),
        )
    not_run = [f"task {t}" for t in TASKS if t not in tasks] + [
        f"{t}: {ARMS[a][0]}" for t in tasks for a in TASK_ARMS[t] if a not in present[t]
    ]
    if not_run:
        head.append("**Not in this report** (not run, or not chosen with `--tasks` / `--arms`): " + "; ".join(not_run) + ".")
    figure = _plot(args.out.with_name(args.out.name + ".png"), rows, tasks, sizes, cohorts)
    tail = [
        f"![learning curves and arms]({figure.name})",
        "## Settings\n\n"
        + f"Command (finished runs of the same configuration are resumed from `{args.out.name}.subjects.tsv.gz`): `{command}`.\n\n"
        + f"Steps per run (batch 4, the same in every arm): {settings['steps']}; peak learning rates {settings['lr']}; "
        + f"{settings['seeds']} seeds; {settings['synthetic']} volumes per synthetic pool; sizes {sizes} "
        + "(the share and schedule arms and real-long at every size for segmentation, "
        + "the other augmented arms at the smallest and largest). "
        + (
            "Written with `--report-only` from the finished runs (nothing trained by this invocation)."
            if args.report_only
            else f"Wall time of this invocation: {seconds / 60:.1f} min on {device}."
        ),
    ]
    report = "\n\n".join(head + sections + tail) + "\n"
    _io.write_text(args.out.with_suffix(".md"), report)
    _io.write_json(args.out.with_suffix(".json"), record)
    print(report)
    return record


def _schedule_arms(ran: pd.DataFrame, *extra: str) -> list[str]:
    """The share and schedule arms (and ``extra`` arms) found in ``ran``, in :data:`SCHEDULE_ARMS` order,
    then ``extra``, then any other ``generated-S`` arm given to ``--arms``."""
    present = set(ran["arm"])
    return [a for a in dict.fromkeys([*SCHEDULE_ARMS, *extra, *ran["arm"]]) if (_is_schedule(a) or a in extra) and a in present]


def _guidance(rows: pd.DataFrame, tasks: list[str], gates: dict) -> tuple[list[dict], list[dict]]:
    """The guidance table, from the runs: per task and n where share or schedule arms ran, the best
    of them by the paired difference against real-only at the same n on the split's test part
    (the best of those that help, where any does), with its interval and what to do. Returns the
    table's rows and their record (the differences as numbers) for the report's JSON.

    ``generated-first`` trains 1.5 times the steps, so it counts as helping only where it also beats
    its control ``real-long`` (real only, trained as long) at that n; where it beats real-only but not
    the control ("the longer training"), or the control did not run at that n ("not checked"), the
    advice says so and it is not recommended. Its difference against the control is given wherever
    both ran."""
    table, record = [], []
    for task in tasks:
        metric, sign = HEADLINE[task], 1 if HIGHER_IS_BETTER[task] else -1
        ran = rows[rows["task"] == task]
        candidates = _schedule_arms(ran)
        for n in sorted(set(ran[ran["arm"].isin(candidates)]["n"])):
            differences = {a: _estimate(rows, task, a, n, SPLIT_TEST, metric, reference=(REAL, n)) for a in candidates}
            differences = {a: d for a, d in differences.items() if d is not None and np.isfinite(d.value)}
            if not differences:
                continue
            calls = {a: _verdict(task, d) for a, d in differences.items()}
            helping = [a for a in differences if calls[a] == "helps"]
            control = _estimate(rows, task, FIRST, n, SPLIT_TEST, metric, reference=(REAL_LONG, n)) if FIRST in differences else None
            first_set_aside = None  # why generated-first, better than real-only, is not recommended
            if FIRST in helping and control is None:
                first_set_aside = "not checked"
            elif FIRST in helping and _verdict(task, control) != "helps":
                first_set_aside = "the longer training"
            if first_set_aside:
                helping.remove(FIRST)
            best = max(helping or differences, key=lambda a: sign * differences[a].value)
            hurting = [ARMS[a][0] for a in differences if calls[a] == "hurts"]
            if not gates[task]["passed"]:
                advice = "no verdict (gate failed)"
            elif helping:
                advice = f"helps ({len(helping)} of {len(differences)} settings help)"
            else:
                advice = "no setting helps: train on real subjects only"
            if gates[task]["passed"] and first_set_aside == "the longer training":
                advice += "; generated first beats real only, but not real only trained as long: its gain is the longer training's"
            elif gates[task]["passed"] and first_set_aside == "not checked":
                advice += "; generated first beats real only, but real only trained as long did not run at this n (not checked)"
            if gates[task]["passed"] and hurting:
                advice += "; hurts: " + ", ".join(f'"{name}"' for name in hurting)
            why_not = first_set_aside if best == FIRST and first_set_aside else "not significant"
            table.append(
                {
                    "task": task,
                    "real n": int(n),
                    "settings tried": len(differences),
                    "best setting": ARMS[best][0] if helping else f"({ARMS[best][0]}: {why_not})",
                    "metric": METRIC[task],
                    "vs real-only (same n)": _cell(differences[best], signed=True),
                    "generated first vs real-only trained as long": _cell(control, signed=True),
                    "guidance": advice,
                }
            )
            record.append(
                {
                    "task": task,
                    "n": int(n),
                    "best": best,
                    "significant": bool(helping),
                    "difference": differences[best].__dict__,
                    "against_real_long": control.__dict__ if control is not None else None,
                    "generated_first_set_aside": first_set_aside,
                    "calls": calls,
                    "guidance": advice,
                }
            )
    return table, record


def _headline(rows: pd.DataFrame, tasks: list[str]) -> list[tuple[str, list[dict]]]:
    """Per task, the guidance's candidates (and ``real-long``, generated-first's control) by n, on the
    split's test part: real-only's value in the first row, then each arm's paired difference against
    real-only at the same n and seed; "-" where an arm did not run at that n."""
    tables = []
    for task in tasks:
        metric, ran = HEADLINE[task], rows[rows["task"] == task]
        arms = _schedule_arms(ran, REAL_LONG)
        sizes = sorted(set(ran[ran["arm"].isin(arms)]["n"]))
        if not sizes:
            continue
        values = {f"n = {n}": _cell(_estimate(rows, task, REAL, n, SPLIT_TEST, metric)) for n in sizes}
        table = [{"setting": f"{ARMS[REAL][0]} (its value)", **values}]
        for arm in arms:
            cells = {f"n = {n}": _cell(_estimate(rows, task, arm, n, SPLIT_TEST, metric, reference=(REAL, n)), signed=True) for n in sizes}
            table.append({"setting": ARMS[arm][0], **cells})
        tables.append((task, table))
    return tables


def _segmentation_details(rows, arms, sizes, foreground, cohorts, record) -> list[str]:
    sections = []
    for cohort in cohorts:
        per_class, shifts = [], []
        for arm in arms:
            for n in sorted(set(rows[(rows["task"] == "segmentation") & (rows["arm"] == arm)]["n"])):
                base = (REAL, sizes[0] if n == 0 else n)
                row = {"arm": ARMS[arm][0], "real n": n}
                metrics = [f"dice {c}" for c in foreground] + ["ventricular volume error (mL)"]
                for metric in metrics:
                    value = _estimate(rows, "segmentation", arm, n, cohort, metric)
                    if value is None:
                        continue
                    diff = None if arm == REAL else _estimate(rows, "segmentation", arm, n, cohort, metric, reference=base)
                    row[metric.removeprefix("dice ")] = f"{value.value:.3f}" + ("" if diff is None else f" ({diff.value:+.3f})")
                per_class.append(row)
                shift_row = {"arm": ARMS[arm][0], "real n": n}
                for shift in SHIFTS:
                    value = _estimate(rows, "segmentation", arm, n, cohort, f"dice, {shift}")
                    if value is None:
                        continue
                    diff = None if arm == REAL else _estimate(rows, "segmentation", arm, n, cohort, f"dice, {shift}", reference=base)
                    shift_row[shift] = _cell(value) + ("" if diff is None else f"; {_cell(diff, signed=True)}")
                shifts.append(shift_row)
        sections.append(
            f"### Segmentation per class, {cohort}\n\nMean Dice per class and the error of the measured ventricular volume (mL); "
            "in brackets the paired difference against real-only at the same n.\n\n" + markdown_table(pd.DataFrame(per_class))
        )
        sections.append(
            f"### Shifted-domain test, {cohort}\n\nMean foreground Dice under each fixed appearance shift "
            "(`synthbrain.evaluation.shifts`) [interval]; after the semicolon the paired difference against real-only.\n\n"
            + markdown_table(pd.DataFrame(shifts))
        )
    return sections


def _figure(rows: pd.DataFrame, tasks: list[str], sizes: list[int], cohorts: list[str]) -> Figure:
    """One panel per task (its headline metric against the number of real subjects, on the split's
    test part; the pretrained arm on the last test cohort), every arm in its :data:`ARM_COLOURS`
    colour in every panel, and one legend below the panels naming each arm drawn."""
    fig = Figure(figsize=(5.2 * len(tasks), 5.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    drawn = []
    for ax, task in zip(axes, tasks):
        metric = HEADLINE[task]
        for k, arm in enumerate(a for a in TASK_ARMS[task] if a in set(rows[rows["task"] == task]["arm"])):
            points = []
            for n in sorted(set(rows[(rows["task"] == task) & (rows["arm"] == arm)]["n"])):
                value = _estimate(rows, task, arm, n, SPLIT_TEST if arm != PRETRAINED else cohorts[-1], metric)
                if value is not None and np.isfinite(value.value):
                    points.append((max(n, 1) * (1 + 0.04 * k), value))  # a small shift per arm, so that intervals do not hide each other
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1].value for p in points]
            err = [[p[1].value - p[1].low for p in points], [p[1].high - p[1].value for p in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=_colour(arm), label=ARMS[arm][0], lw=2 if arm == REAL else 1)
            drawn.append(arm)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([1, *sizes], ["0", *map(str, sizes)])
        ax.set_xlabel("real training subjects (n; 0 = generated only)", fontsize=10)
        ax.set_ylabel(METRIC[task], fontsize=10)
        ax.set_title(task, fontsize=11)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    arms = [a for a in ARMS if a in drawn]
    handles = [Line2D([], [], color=_colour(a), marker="o", lw=2 if a == REAL else 1) for a in arms]
    columns = min(len(arms), 3 if len(tasks) > 1 else 1)  # one panel is too narrow for the arms' names side by side
    fig.legend(handles, [ARMS[a][0] for a in arms], loc="outside lower center", ncol=columns, fontsize=10, frameon=False)
    return fig


def _plot(path: Path, rows: pd.DataFrame, tasks: list[str], sizes: list[int], cohorts: list[str]) -> Path:
    _io.save_figure(path, _figure(rows, tasks, sizes, cohorts))
    return path


if __name__ == "__main__":
    main()
