"""Seconds per generated volume (image + label map, decoding included) for each sampler setting,
as a ratio against the reference sampling of the same model in the same run: DDPM with all 1000
steps.

    python benchmarks/generation_speed.py --model default --n 8

Each setting generates the same n volumes (same seeds, covariates drawn from the model's
training distribution) after one warm-up call; the reported time is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from _report import markdown_table

from synthbrain import BrainGenerator, _io

REFERENCE = {"sampler": "ddpm", "steps": 1000, "guidance_scale": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/generation-speed"))
    args = parser.parse_args()

    generator = BrainGenerator.from_pretrained(args.model).to(args.device)
    default = {k: generator.defaults[k] for k in ("sampler", "steps", "guidance_scale")}
    settings = [("default", default), ("reference: DDPM 1000", REFERENCE)]
    for sampler, steps in (("ddim", 50), ("dpm++2m", 20), ("dpm++2m", 10)):
        for scale in (1.0, 3.0):
            setting = {"sampler": sampler, "steps": steps, "guidance_scale": scale}
            if setting != default:
                settings.append((f"{sampler} {steps}", setting))

    rows = []
    for name, setting in settings:
        repeats = 1 if setting == REFERENCE else args.repeats

        def run(setting=setting):
            generator.generate(n=args.n, seed=0, batch_size=args.batch_size, **setting)
            if generator.device.type == "cuda":
                torch.cuda.synchronize()

        run()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows.append({"setting": name, **setting, "runs": repeats, "seconds per volume": statistics.median(times) / args.n})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    reference = table.loc[table["setting"] == "reference: DDPM 1000", "seconds per volume"].item()
    table["time vs reference"] = table["seconds per volume"] / reference
    table["UNet evaluations"] = table["steps"] * table["guidance_scale"].map(lambda s: 1 if s == 1.0 else 2)

    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if generator.device.type == "cuda":
        machine = torch.cuda.get_device_name(generator.device)
    summary = {
        "command": f"python benchmarks/generation_speed.py --model {args.model} --n {args.n} --batch-size {args.batch_size} "
        f"--repeats {args.repeats} --device {args.device}",
        "machine": machine,
        "image_grid": generator.image_grid.to_dict(),
        "latent_shape": list(generator.latent_shape),
        "rows": table.to_dict("records"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(args.out.with_suffix(".json"), summary)
    report = "\n\n".join(
        [
            f"# Generation speed: `{args.model}` on {args.device}",
            f"Command: `{summary['command']}`. Machine: {machine}. Image grid {generator.image_grid.shape} at "
            f"{generator.image_grid.spacing} mm, latent {tuple(generator.latent_shape)}; {args.n} volumes per run, batches of "
            f"{args.batch_size}, label maps included; median of {args.repeats} runs after a warm-up (the reference: one run).",
            markdown_table(table),
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)


if __name__ == "__main__":
    main()
