"""Does synthetic augmentation help? Real-only versus augmented training of small 3D networks.

Protocol (issue 6). A prepared cohort is split once, stratified by sex and age, into three disjoint
parts (``synthbrain split``): the generator's (the model compared here must be trained on that
part only: ``benchmarks/train_split_generator.sh``), the downstream training pool and the test
set. Three tasks, each a small network trained from scratch for the same number of steps in every
arm: segmentation of the coarse classes (UNet; Dice per class), sex (CNN; AUC, accuracy), age
(CNN; MAE in years). For each real-data size n (subjects drawn from the pool, half of each sex,
seeded, the same subjects in every arm) and seed, the arms are:

- ``real``: real subjects only, with standard torchio augmentation (affine, bias field, gamma,
  noise; applied to every training volume in every arm);
- ``real + synthetic 50%`` / ``80%``: that share of every batch is synthetic;
- ``synthetic only``: no real subject (independent of n: run once per seed);
- ``pretrain synthetic, fine-tune real``: the first half of the steps on synthetic volumes, the rest on real
  (every arm trains for the same number of steps, so no arm wins by more optimisation);
- ``real + generator part (upper reference)``: half of every batch from the generator part's
  real subjects, data a user without that cohort could not have.

Synthetic volumes (images, their label maps as segmentation targets, the requested sex and age as
targets) are generated once, with covariates drawn from the model's training distribution.
Each cell: mean over seeds with a 95 % t-interval; each augmented arm against ``real`` by a paired
t-test over (n, seed) pairs of the same subjects. The test set is an argument, so the same
networks can be scored on any other prepared cohort.

    python benchmarks/downstream.py --model runs/downstream/dm/generator --split runs/downstream/split
    python benchmarks/downstream.py --quick ...   # minutes on CPU: tiny networks, few steps, 2 sizes, 3 seeds
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchio as tio  # noqa: E402
from _report import markdown_table  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from synthbrain import BrainGenerator, _io  # noqa: E402
from synthbrain.evaluation.evaluate import load_cohort_on_grid  # noqa: E402
from synthbrain.evaluation.networks import Encoder3d, UNet3d, dice_cross_entropy, predict, train_network  # noqa: E402
from synthbrain.evaluation.segmenter import dice_per_class  # noqa: E402

TASKS = ("segmentation", "sex", "age")
REAL, SYNTH_ONLY, PRETRAIN, UPPER = (
    "real",
    "synthetic only",
    "pretrain synthetic, fine-tune real",
    "real + generator part (upper reference)",
)
MIXED = {"real + synthetic 50%": 0.5, "real + synthetic 80%": 0.8}
ARMS = (REAL, *MIXED, SYNTH_ONLY, PRETRAIN, UPPER)
P = "p (paired t)"  # column of the paired tests
AGE_CENTRE, AGE_SCALE = 50.0, 20.0  # fixed target scaling for the age network (years)
# Mode settings, chosen for CPU cost: sex and age networks see the images averaged by classify_downsample
# (4 mm -> 8 mm); the segmentation network trains on random seg_patch crops (voxels) and predicts whole volumes.
# Steps and learning rates are per task, set so that each network learns on real data within the CPU budget
# (see docs/downstream.md).
FULL = dict(
    sizes="5,10,20,all",
    seeds=3,
    steps={"segmentation": 400, "sex": 200, "age": 600},
    lr={"segmentation": 1e-2, "sex": 1e-3, "age": 1e-3},
    synthetic=200,
    seg_channels="8,16,32",
    seg_patch="24,24,24",
    cnn_channels="8,16,32",
    classify_downsample=2,
)
QUICK = dict(
    sizes="4,all",
    seeds=3,
    steps={task: 4 for task in TASKS},
    lr={task: 1e-2 for task in TASKS},
    synthetic=8,
    seg_channels="4,8",
    seg_patch="16,16,16",
    cnn_channels="4,8",
    classify_downsample=2,
)
# The settings each task's runs depend on (besides its steps and lr, sizes, seeds, synthetic, model and cohorts).
TASK_SETTINGS = {
    "segmentation": ("seg_channels", "seg_patch"),
    "sex": ("cnn_channels", "classify_downsample"),
    "age": ("cnn_channels", "classify_downsample"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="generator trained on the split's generator part only")
    parser.add_argument("--split", type=Path, required=True, help="output of synthbrain split: SPLIT/{generator,pool,test}")
    parser.add_argument("--test", type=Path, default=None, help="prepared cohort to score on (default SPLIT/test)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, few steps (a check that everything runs, not a result)")
    parser.add_argument("--sizes", default=None, help="real training sizes, e.g. 5,10,20,all")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps per training run (batch 4), every task")
    parser.add_argument("--synthetic", type=int, default=None, help="synthetic volumes generated once for every arm")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/downstream"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs; train nothing")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    settings = {k: getattr(args, k, None) if getattr(args, k, None) is not None else v for k, v in mode.items()}
    if args.steps is not None:
        settings["steps"] = {task: args.steps for task in TASKS}
    tasks = args.tasks.split(",")
    if set(tasks) - set(TASKS):
        raise SystemExit(f"--tasks {args.tasks}: allowed {','.join(TASKS)}")
    if settings["seeds"] < 1 or min(settings["steps"].values()) < 2 or settings["synthetic"] < 4:
        raise SystemExit(
            f"--seeds {settings['seeds']}, --steps {args.steps}, --synthetic {settings['synthetic']}: allowed >= 1, >= 2, >= 4"
        )

    generator = BrainGenerator.from_pretrained(args.model)
    grid = generator.image_grid
    patch = _patch(settings)
    if len(patch) != 3 or any(not 4 <= p <= size for p, size in zip(patch, grid.shape)):
        raise SystemExit(f"seg_patch {settings['seg_patch']}: allowed 3 sizes, each 4 .. the grid's {grid.shape}")
    data = {
        name: _load(args.split / name if name != "test" else (args.test or args.split / "test"), grid)
        for name in ("generator", "pool", "test")
    }
    pool = data["pool"]
    sizes = sorted({len(pool["table"]) if s == "all" else int(s) for s in str(settings["sizes"]).split(",")})
    if sizes[0] < 2 or sizes[-1] > len(pool["table"]):
        raise SystemExit(f"--sizes {settings['sizes']}: allowed 2 .. {len(pool['table'])} (the pool) or 'all'")
    cells = [
        (t, n, s, arm)
        for t in tasks
        for s in range(settings["seeds"])
        for n in sizes
        for arm in ARMS
        if not (arm == SYNTH_ONLY and n != sizes[0])
    ]
    # Resumable: every finished run is in OUT.runs.tsv (rewritten atomically), tagged with its task's configuration;
    # a restart skips the runs whose configuration is unchanged (and generates nothing when none is left), the
    # report covers every task run so (tasks can be run one after another), and runs of a changed configuration are dropped.
    configs = {task: _config(task, settings, args) for task in TASKS}
    runs_file = args.out.with_name(args.out.name + ".runs.tsv")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if runs_file.is_file():
        previous = pd.read_csv(runs_file, sep="\t", na_values=["n/a"])
        rows = [r for r in previous.to_dict("records") if r["config"] == configs.get(r["task"])]
    done = {(r["task"], r["cell_n"], r["seed"], r["arm"]) for r in rows}
    todo = [c for c in cells if c not in done]
    print(f"{len(cells)} runs, {len(cells) - len(todo)} already done ({runs_file})")
    to_run = [] if args.report_only else todo
    if to_run:
        start = time.perf_counter()
        synthetic = generator.generate(n=settings["synthetic"], seed=10_000, progress=True)
        # Real prepared images are skull-stripped (zero outside the brain); the generator leaves a faint haze (about
        # 0.001-0.01) over half the background, which also made CPU training on it 3x slower. Synthetic images are
        # therefore masked with their own label map, as a user skull-strips them too.
        data["synthetic"] = {
            "images": synthetic.images.float() * (synthetic.labels > 0).unsqueeze(1),
            "labels": synthetic.labels.long(),
            "table": synthetic.covariates.reset_index(drop=True),
        }
        print(f"generated {settings['synthetic']} synthetic volumes in {time.perf_counter() - start:.0f} s")
    for task, n, seed, arm in tqdm(to_run, desc="downstream", unit="run"):
        chosen = _subset(pool["table"], n, seed)
        model = _train(task, arm, chosen, data, settings, seed, len(generator.label_classes))
        score = _score(task, model, data["test"], generator.label_classes, settings)
        rows.append(
            {"config": configs[task], "task": task, "cell_n": n, "n_real": 0 if arm == SYNTH_ONLY else n, "seed": seed, "arm": arm, **score}
        )
        _io.write_table(runs_file, pd.DataFrame(rows))
    if not rows:
        raise SystemExit(f"no finished runs of this configuration in {runs_file}")
    missing = len(todo) - len(to_run)
    results = pd.DataFrame(rows).drop(columns=["config", "cell_n"])
    tasks_done = [t for t in TASKS if t in set(results["task"])]
    _io.write_table(args.out.with_suffix(".tsv"), results)
    if "sex" in tasks_done:  # sex is scored by AUC and by accuracy at p = 0.5
        sex = results[results["task"] == "sex"]
        results = pd.concat([results, sex.assign(task="sex accuracy", metric="accuracy", value=sex["accuracy"])], ignore_index=True)
    summary, tests = _summarise(results), _paired_tests(results)
    per_class = _dice_per_class(results) if "segmentation" in tasks_done else None
    figure = _plot(args.out.with_name(args.out.name + ".png"), summary, sizes)
    command = "python benchmarks/downstream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    _io.write_json(
        args.out.with_suffix(".json"),
        {
            "command": command,
            "settings": settings,
            "sizes": sizes,
            "split_sizes": {k: len(data[k]["table"]) for k in ("generator", "pool", "test")},
            "summary": summary.to_dict("records"),
            "paired_tests": tests.to_dict("records"),
            "dice_per_class": None if per_class is None else per_class.to_dict("records"),
        },
    )
    report = "\n\n".join(
        [
            "# Downstream benchmark: real-only versus augmented training" + (" (quick mode: a check, not a result)" if args.quick else ""),
            *([f"**Incomplete: {missing} of the {len(cells)} runs of {', '.join(tasks)} are not done yet.**"] if missing else []),
            f"Command (last invocation; finished runs of the same configuration are resumed from `{runs_file.name}`): `{command}`. "
            + "Split sizes (subjects with sex and age): "
            + ", ".join(f"{k} {len(data[k]['table'])}" for k in ("generator", "pool", "test"))
            + f"; {settings['synthetic']} synthetic volumes, masked with their own label maps. "
            + "Adam steps of batch 4 per run, the same in every arm (pre-training takes the first half on synthetic volumes): "
            + ", ".join(f"{t} {settings['steps'][t]} (learning rate {settings['lr'][t]})" for t in tasks_done)
            + f"; {settings['seeds']} seeds.",
            "## Mean over seeds [95 % confidence interval]",
            *[
                f"### {task}\n\n" + markdown_table(_by_n(summary, task))
                for task in (*tasks_done, "sex accuracy")
                if task in set(summary["task"])
            ],
            "## Paired t-tests against real-only (same subjects and seed)",
            markdown_table(tests.assign(**{P: tests[P].map("{:.2g}".format)})) if len(tests) else "(fewer than 2 pairs)",
            *(
                [
                    "## Segmentation Dice per class\n\nMean over every run of an arm (every n and seed); in brackets the "
                    + "paired mean difference against real-only over the same (n, seed) pairs, and its p (paired t).",
                    markdown_table(per_class),
                ]
                if per_class is not None
                else []
            ),
            f"![metric versus n]({figure.name})",
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)


def _config(task: str, settings: dict, args: argparse.Namespace) -> str:
    """Hash of what a task's runs depend on."""
    per_task = ("steps", "lr", *{k for keys in TASK_SETTINGS.values() for k in keys})
    shared = {k: v for k, v in settings.items() if k not in per_task}
    own = {k: settings[k] for k in TASK_SETTINGS[task]} | {"steps": settings["steps"][task], "lr": settings["lr"][task]}
    key = [task, shared, own, str(args.model), str(args.split), str(args.test)]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _patch(settings: dict) -> tuple[int, ...]:
    """The segmentation training patch (voxels), from its "D,H,W" setting."""
    return tuple(int(p) for p in settings["seg_patch"].split(","))


def _load(path: Path, grid) -> dict:
    cohort, images, fractions = load_cohort_on_grid(path, grid)
    table = cohort.table.reset_index(drop=True)
    keep = np.flatnonzero(table[["sex", "age"]].notna().all(axis=1).to_numpy())
    index = torch.as_tensor(keep)
    return {"images": images[index], "labels": fractions[index].argmax(1), "table": table.iloc[keep].reset_index(drop=True)}


def _subset(table: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """n pool subjects, half of each sex (as near as the pool allows), seeded by (n, seed)."""
    rng = np.random.default_rng([n, seed])
    groups = [rng.permutation(np.flatnonzero(table["sex"].to_numpy() == s)).tolist() for s in ("F", "M")]
    picks = []
    for k in itertools.cycle((0, 1)):
        if len(picks) == n:
            return np.sort(picks)
        if groups[k]:
            picks.append(groups[k].pop())


def _inputs(task: str, part: dict, settings: dict) -> torch.Tensor:
    """Images as the task's network sees them: sex and age networks on blocks averaged by
    ``classify_downsample`` (8 mm from 4 mm by default: CPU cost), segmentation at full grid."""
    k = int(settings["classify_downsample"])
    return part["images"] if task == "segmentation" or k == 1 else F.avg_pool3d(part["images"], k, ceil_mode=True)


def _targets(task: str, part: dict) -> torch.Tensor:
    if task == "segmentation":
        return part["labels"]
    if task == "sex":
        return torch.tensor((part["table"]["sex"].to_numpy() == "M").astype(np.float32))[:, None]
    return torch.tensor(((part["table"]["age"].to_numpy(float) - AGE_CENTRE) / AGE_SCALE).astype(np.float32))[:, None]


def _network(task: str, settings: dict, num_classes: int) -> torch.nn.Module:
    if task == "segmentation":
        return UNet3d(num_classes, tuple(int(c) for c in settings["seg_channels"].split(",")))
    return Encoder3d(1, tuple(int(c) for c in settings["cnn_channels"].split(",")))


LOSSES = {"segmentation": dice_cross_entropy, "sex": F.binary_cross_entropy_with_logits, "age": F.smooth_l1_loss}


def _augment(task: str, patch: tuple[int, ...] | None = None):
    """Standard torchio augmentation; for segmentation the label map moves with the image, and
    with ``patch`` both are first cropped to a random patch of that size (voxels) inside the grid."""
    spatial = tio.RandomAffine(scales=0.05, degrees=5, translation=2)
    intensity = tio.Compose([tio.RandomBiasField(coefficients=0.2), tio.RandomGamma(log_gamma=0.15), tio.RandomNoise(std=(0, 0.02))])

    def augment(image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if patch is not None:  # offsets from torch's generator, which train_network seeds
            corner = [int(torch.randint(0, size - p + 1, ())) for size, p in zip(image.shape[1:], patch)]
            window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
            image, target = image[(slice(None), *window)], target[window]
        fields = {"image": tio.ScalarImage(tensor=image)}
        if task == "segmentation":
            fields["target"] = tio.LabelMap(tensor=target[None])  # nearest-neighbour resampling, untouched by intensity changes
        subject = spatial(tio.Subject(**fields))
        subject["image"] = intensity(subject["image"])
        out_image = subject["image"].data.clamp(0, 1)
        return out_image, subject["target"].data[0] if task == "segmentation" else target

    return augment


def _mixed_batches(num_real: int, num_other: int, fraction: float, seed: int, batch_size: int = 4):
    """Batches of indices into real (0..num_real-1) followed by others; round(fraction * batch)
    of each batch from the others; both visited in seeded shuffled passes."""
    rng = np.random.default_rng(seed)
    k = int(round(fraction * batch_size))
    real, other = [], []
    while True:
        if len(real) < batch_size - k:
            real += rng.permutation(num_real).tolist()
        if len(other) < k:
            other += (num_real + rng.permutation(num_other)).tolist()
        yield real[: batch_size - k] + other[:k]
        real, other = real[batch_size - k :], other[k:]


def _train(task: str, arm: str, chosen: np.ndarray, data: dict, settings: dict, seed: int, num_classes: int) -> torch.nn.Module:
    real = {
        "images": data["pool"]["images"][chosen],
        "table": data["pool"]["table"].iloc[chosen].reset_index(drop=True),
        "labels": data["pool"]["labels"][chosen],
    }
    model = _network(task, settings, num_classes)
    patch = _patch(settings) if task == "segmentation" else None
    steps = settings["steps"][task]
    common = {"seed": seed, "lr": settings["lr"][task], "batch_size": 4, "augment": _augment(task, patch)}
    loss = LOSSES[task]
    # Every arm gets the same number of steps; pre-training takes the first half of them.
    if arm in (SYNTH_ONLY, PRETRAIN):
        source = data["synthetic"]
        synthetic_steps = steps if arm == SYNTH_ONLY else steps // 2
        train_network(model, _inputs(task, source, settings), _targets(task, source), loss, steps=synthetic_steps, **common)
        if arm == SYNTH_ONLY:
            return model
    if arm in (REAL, PRETRAIN):
        real_steps = steps if arm == REAL else steps - steps // 2
        train_network(model, _inputs(task, real, settings), _targets(task, real), loss, steps=real_steps, reset=arm == REAL, **common)
        return model
    other, fraction = (data["generator"], 0.5) if arm == UPPER else (data["synthetic"], MIXED[arm])
    images = torch.cat([_inputs(task, real, settings), _inputs(task, other, settings)])
    targets = torch.cat([_targets(task, real), _targets(task, other)])
    batches = _mixed_batches(len(chosen), len(other["images"]), fraction, seed)
    train_network(model, images, targets, loss, steps=steps, batches=batches, **common)
    return model


def _score(task: str, model: torch.nn.Module, test: dict, classes, settings: dict) -> dict:
    out = predict(model, _inputs(task, test, settings))
    if task == "segmentation":
        truth = test["labels"].numpy()
        dice = np.nanmean([dice_per_class(t, p, len(classes)) for t, p in zip(truth, out.argmax(1).numpy())], axis=0)
        return {
            "metric": "mean Dice (foreground)",
            "value": float(np.nanmean(dice[1:])),
            **{f"dice_{c}": float(d) for c, d in zip(classes[1:], dice[1:])},
        }
    if task == "sex":
        male = test["table"]["sex"].to_numpy() == "M"
        p = torch.sigmoid(out[:, 0]).numpy()
        return {"metric": "AUC", "value": float(roc_auc_score(male, p)), "accuracy": float(((p > 0.5) == male).mean())}
    age = out[:, 0].numpy() * AGE_SCALE + AGE_CENTRE
    return {"metric": "MAE (years)", "value": float(np.abs(age - test["table"]["age"].to_numpy(float)).mean())}


def _summarise(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (task, metric, arm, n), part in results.groupby(["task", "metric", "arm", "n_real"], sort=False):
        values = part["value"].to_numpy()
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
        rows.append(
            {
                "task": task,
                "metric": metric,
                "arm": arm,
                "n_real": int(n),
                "seeds": len(values),
                "mean": float(values.mean()),
                "ci95_low": float(values.mean() - half),
                "ci95_high": float(values.mean() + half),
            }
        )
    return pd.DataFrame(rows)


def _by_n(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's summary as a table of real training size by arm, each cell "mean [low, high] (seeds)"."""
    part = summary[summary["task"] == task]
    metric = part["metric"].iat[0]
    cell = part.apply(lambda r: f"{r['mean']:.3f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}] ({r['seeds']})", axis=1)
    table = part.assign(cell=cell).pivot(index="n_real", columns="arm", values="cell")
    table = table[[a for a in ARMS if a in table.columns]].fillna("")
    table = table.rename(index=lambda n: "0 (synthetic only)" if n == 0 else str(n))
    return table.reset_index().rename(columns={"n_real": f"real n ({metric})"})


def _paired_tests(results: pd.DataFrame) -> pd.DataFrame:
    """Each arm against real-only over the (n, seed) pairs they share (the same real subjects)."""
    rows = []
    for task, part in results.groupby("task", sort=False):
        base = part[part["arm"] == REAL].set_index(["n_real", "seed"])["value"]
        for arm in [a for a in ARMS if a not in (REAL, SYNTH_ONLY)]:
            other = part[part["arm"] == arm].set_index(["n_real", "seed"])["value"]
            joined = pd.concat([base, other], axis=1, keys=["real", "arm"]).dropna()
            if len(joined) >= 2:
                diff = joined["arm"] - joined["real"]
                p = float(stats.ttest_rel(joined["arm"], joined["real"]).pvalue) if diff.std() > 0 else float("nan")
                rows.append(
                    {
                        "task": task,
                        "metric": part["metric"].iat[0],
                        "arm": arm,
                        "pairs": len(joined),
                        "mean difference (arm - real)": float(diff.mean()),
                        P: p,
                    }
                )
    return pd.DataFrame(rows)


def _dice_per_class(results: pd.DataFrame) -> pd.DataFrame:
    """Segmentation Dice of each class by arm: the mean over every run, and the paired difference against real-only."""
    seg = results[results["task"] == "segmentation"]
    classes = [c for c in seg.columns if c.startswith("dice_")]
    long = pd.concat([seg.assign(task=c.removeprefix("dice_"), value=seg[c]) for c in classes], ignore_index=True)
    tests = _paired_tests(long).set_index(["task", "arm"])
    rows = []
    for arm in [a for a in ARMS if a in set(seg["arm"])]:
        row = {"arm": arm, "runs": int((seg["arm"] == arm).sum())}
        for cls, part in long[long["arm"] == arm].groupby("task", sort=False):
            row[cls] = f"{part['value'].mean():.3f}"
            if (cls, arm) in tests.index:
                test = tests.loc[(cls, arm)]
                row[cls] += f" ({test['mean difference (arm - real)']:+.3f}, p {test[P]:.2g})"
        rows.append(row)
    return pd.DataFrame(rows)


def _plot(path: Path, summary: pd.DataFrame, sizes: list[int]) -> Path:
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = summary[summary["task"] == task]
        for arm in ARMS:
            rows = part[part["arm"] == arm].sort_values("n_real")
            if arm == SYNTH_ONLY and len(rows):
                ax.axhline(rows["mean"].iat[0], color="grey", ls=":", label=arm)
                continue
            ax.errorbar(
                rows["n_real"],
                rows["mean"],
                yerr=[rows["mean"] - rows["ci95_low"], rows["ci95_high"] - rows["mean"]],
                marker="o",
                capsize=3,
                label=arm,
            )
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("real training subjects (n)")
        ax.set_ylabel(part["metric"].iat[0])
        ax.set_title(task)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    _io.save_figure(path, fig)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
