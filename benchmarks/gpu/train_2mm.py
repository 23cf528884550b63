"""Step 4 of the GPU run: the default model's recipe trained at 2 mm (80 x 112 x 80, no ``--downsample``)
on the prepared IXI-HH cohort for a fixed number of steps, then ``synthbrain evaluate`` on its samples.

    python benchmarks/gpu/train_2mm.py --packed .devdata/ixi-2mm-rigid.npz.xz --work /tmp/train-2mm \\
        --device cuda --out docs/benchmarks/training-2mm-gpu
    python benchmarks/gpu/train_2mm.py --tiny --work /tmp/t --out /tmp/t/training   # the rehearsal: CPU, seconds

Stages, each timed: unpack the cohort (``benchmarks/gpu/pack_cohort.py``), ``synthbrain train autoencoder``,
``synthbrain train diffusion`` (the recipe of ``examples/train_default_model.sh`` at 2 mm, with ``--steps`` of
this script's own), ``synthbrain evaluate`` with fewer samples and shorter evaluator training than its defaults
(the evaluators and the spot-the-fake classifier train on the CPU). The numbers after so few steps say how
fast training runs there and that the chain works end to end, not how good a fully trained model is.
OUT.md and OUT.json are written after every stage, so a run stopped by its time limit keeps what it finished.

``--tiny``: a 16^3 cohort made on the fly (``tests/helpers.py``), packed and unpacked, and a small recipe; it
must be given ``--out`` outside ``docs/benchmarks/``, like every tiny run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from pack_cohort import pack, unpack  # noqa: E402

from synthbrain import _io  # noqa: E402
from synthbrain.cli import main as synthbrain  # noqa: E402

# The embedded default model's recipe (examples/train_default_model.sh) without --downsample 2: trained at 2 mm.
AUTOENCODER = ["--channels", "16,32,32", "--latent-channels", "3", "--batch-size", "2", "--lr", "3e-4", "--checkpoint-every", "100"]
AUTOENCODER += ["--seed", "0", "--mirror-latents"]
DIFFUSION = ["--channels", "32,64", "--attention", "0,1", "--head-channels", "32", "--embed-condition", "--batch-size", "8"]
DIFFUSION += ["--lr", "3e-4", "--checkpoint-every", "500", "--seed", "0", "--default-sampler", "ddim", "--default-steps", "10"]
DIFFUSION += ["--default-guidance-scale", "2"]
TINY_AUTOENCODER = ["--channels", "8,16", "--groups", "8", "--batch-size", "2", "--seed", "0"]
TINY_DIFFUSION = ["--channels", "16,32", "--attention", "0,1", "--head-channels", "16", "--groups", "8", "--batch-size", "2"]
TINY_DIFFUSION += ["--seed", "0", "--default-steps", "3"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", type=Path, default=ROOT / ".devdata" / "ixi-2mm-rigid.npz.xz", help="the packed cohort")
    parser.add_argument("--tiny", action="store_true", help="a tiny cohort made on the fly and a small recipe (needs --out)")
    parser.add_argument("--work", type=Path, required=True, help="a new or empty folder for the cohort, the runs and the evaluation")
    parser.add_argument("--out", type=Path, required=True, help="OUT.md and OUT.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps (default 300; --tiny 2)")
    parser.add_argument("--dm-steps", type=int, default=None, help="diffusion steps (default 1000; --tiny 2)")
    parser.add_argument("--n", type=int, default=None, help="synthetic volumes evaluated (default 32; --tiny 8)")
    parser.add_argument("--segmenter-steps", type=int, default=None, help="evaluator segmenter steps (default 100; --tiny 2)")
    parser.add_argument("--c2st-epochs", type=int, default=None, help="spot-the-fake classifier epochs (default 3; --tiny 1)")
    args = parser.parse_args(argv)
    defaults = {"ae_steps": (300, 2), "dm_steps": (1000, 2), "n": (32, 8), "segmenter_steps": (100, 2), "c2st_epochs": (3, 1)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: allowed: an integer >= 1")
    if args.tiny and (ROOT / "docs" / "benchmarks") in [args.out.resolve().parent, *args.out.resolve().parents]:
        parser.error("--tiny: give --out outside docs/benchmarks/, which holds the results of real runs only")
    if args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work}: exists and is not empty; give a new folder")
    if not args.tiny and not args.packed.is_file():
        parser.error(f"--packed {args.packed}: no such file (make it with benchmarks/gpu/pack_cohort.py pack, docs/benchmarks/gpu.md)")
    return args


def last_losses(run: Path) -> dict[str, float] | None:
    """The last entry of a training run's loss history (history.json), or None."""
    try:
        history = json.loads((run / "history.json").read_text())
    except (OSError, ValueError):
        return None
    return history[-1] if history else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work, device = args.work, torch.device(args.device)
    cohort, ae_run, dm_run, evaluation = work / "cohort", work / "ae", work / "dm", work / "evaluation"
    stages: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "command": "python benchmarks/gpu/train_2mm.py " + ("--tiny " if args.tiny else f"--packed {_shown(args.packed)} ") + "--work WORK "
        f"--device {args.device} --ae-steps {args.ae_steps} --dm-steps {args.dm_steps} --n {args.n} "
        f"--segmenter-steps {args.segmenter_steps} --c2st-epochs {args.c2st_epochs} --out {_shown(args.out)}",
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "versions": {"torch": torch.__version__},
        "cohort": None,
        "stages": stages,
        "evaluation": None,
    }

    def stage(name: str, steps: int | None, fn, shown: str) -> bool:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        row: dict[str, Any] = {"stage": name, "command": shown, "status": "running"}
        try:
            code = fn()
            row["status"] = "ok" if code in (None, 0) else f"failed (exit {code})"
        except Exception as err:  # recorded, then the chain stops: later stages need this one's output
            row["status"] = f"failed ({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''})"
        row["seconds"] = time.perf_counter() - start
        if steps:
            row["steps"] = steps
            row["seconds per step (setup included)"] = row["seconds"] / steps
        if device.type == "cuda":
            row["peak GPU memory (GB)"] = torch.cuda.max_memory_allocated(device) / 1e9
        stages.append(row)
        print(f"{name}: {row['status']} in {row['seconds']:.1f} s", flush=True)
        write(args.out, summary)
        return row["status"] == "ok"

    def get_cohort() -> None:
        packed = args.packed
        if args.tiny:
            sys.path.insert(0, str(ROOT))
            from tests.helpers import make_prepared

            packed = work / "tiny-cohort.npz.xz"
            pack(make_prepared(work / "tiny-source", n=12), packed)
        summary["cohort"] = unpack(packed, cohort)
        summary["cohort"]["packed_bytes"] = packed.stat().st_size

    recipe_ae, recipe_dm = (TINY_AUTOENCODER, TINY_DIFFUSION) if args.tiny else (AUTOENCODER, DIFFUSION)
    ae = ["train", "autoencoder", "--prepared", str(cohort), "--run", str(ae_run), *recipe_ae]
    ae += ["--steps", str(args.ae_steps), "--device", args.device]
    dm = ["train", "diffusion", "--latents", str(ae_run / "latents"), "--run", str(dm_run), *recipe_dm]
    dm += ["--steps", str(args.dm_steps), "--device", args.device]
    ev = ["evaluate", "--model", str(dm_run / "generator"), "--real", str(cohort), "-n", str(args.n)]
    ev += ["--segmenter-steps", str(args.segmenter_steps), "--c2st-epochs", str(args.c2st_epochs), "--device", args.device]
    ev += ["--out", str(evaluation)]
    ok = stage("unpack the cohort", None, get_cohort, "pack_cohort.unpack(PACKED, WORK/cohort)")
    ok = ok and stage("train autoencoder", args.ae_steps, lambda: synthbrain(ae), _command(ae, work))
    if ok:
        stages[-1]["last losses"] = last_losses(ae_run)
    ok = ok and stage("train diffusion", args.dm_steps, lambda: synthbrain(dm), _command(dm, work))
    if ok:
        stages[-1]["last losses"] = last_losses(dm_run)
    ok = ok and stage("evaluate", None, lambda: synthbrain(ev), _command(ev, work))
    if ok and (evaluation / "report.json").is_file():
        summary["evaluation"] = _io.read_json(evaluation / "report.json", "evaluate did not finish")
    summary["complete"] = ok
    write(args.out, summary, evaluation / "report.md" if ok else None, work)
    if not ok:
        raise SystemExit(1)
    return summary


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(ROOT))
    return str(path)


def _command(argv: list[str], work: Path) -> str:
    return "synthbrain " + " ".join(argv).replace(str(work), "WORK")


def write(out: Path, summary: dict[str, Any], report: Path | None = None, work: Path | None = None) -> None:
    """OUT.json (the summary, the evaluation's report.json inside) and OUT.md (the stages; the evaluation's report.md
    after them, its figures not included)."""
    _io.write_json(out.with_suffix(".json"), summary)
    lines = io.StringIO()
    lines.write(f"# The default recipe trained at 2 mm on {summary['machine']}\n\n")
    lines.write(f"Command: `{summary['command']}` (WORK: a scratch folder). torch {summary['versions']['torch']}.")
    if summary.get("cohort"):
        c = summary["cohort"]
        lines.write(
            f" Cohort: `{c['source']}`, {c['subjects']} subjects on {tuple(c['shape'])}, brought as {c['packed_bytes'] / 1e6:.1f} MB "
            f"({c['image_quantisation']}; largest change {c['max_abs_quantisation_error']:.4f})."
        )
    lines.write(
        " Training steps this few say how fast training runs here and that the chain works end to end, not how good the "
        "fully trained model is. Seconds per step include each stage's setup (and, for the autoencoder, the latent cache).\n\n"
    )
    lines.write("| stage | status | seconds | steps | seconds per step | peak GPU memory (GB) | last losses |\n")
    lines.write("|" + " --- |" * 7 + "\n")
    for row in summary["stages"]:
        losses = row.get("last losses")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "step") if losses else "-"
        per_step = row.get("seconds per step (setup included)")
        memory = row.get("peak GPU memory (GB)")
        lines.write(
            f"| {row['stage']} | {row['status']} | {row['seconds']:.1f} | {row.get('steps', '-')} | "
            f"{'-' if per_step is None else f'{per_step:.4f}'} | {'-' if memory is None else f'{memory:.2f}'} | {shown} |\n"
        )
    lines.write("\nCommands:\n\n" + "".join(f"- `{row['command']}`\n" for row in summary["stages"]))
    if summary.get("complete") is False or (summary.get("complete") is None and len(summary["stages"]) < 4):
        lines.write("\n**Incomplete:** the stages after the last one listed did not run (or have not run yet).\n")
    if report is not None and report.is_file():
        text = report.read_text().replace(str(work), "WORK") if work is not None else report.read_text()
        lines.write("\n## Evaluation (`synthbrain evaluate`; figures not brought back)\n\n")
        lines.write(text.replace("\n#", "\n##").removeprefix("# "))
    _io.write_text(out.with_suffix(".md"), lines.getvalue())


if __name__ == "__main__":
    main()
