"""Does SyntheticBrainDataset keep a training loop fed? Samples per second delivered by the dataset
alone, and by a small 3D segmentation UNet training loop fed by it, against that loop's own rate
on tensors already in memory (the reference, measured in the same run).

    python benchmarks/dataset_throughput.py --model default --n 32            # writes docs/benchmarks/dataset-throughput.{md,json}
    python benchmarks/dataset_throughput.py --model default --device cuda     # the same on a GPU
    python benchmarks/dataset_throughput.py --tiny --out /tmp/throughput      # a seconds-long check that the script runs

Settings: on the fly without cache (each DataLoader batch generated in one call); on the fly with
the chunk cache and the prefetch thread (optionally also with DataLoader workers, ``--workers``);
pre-generated memory-mapped shards (written once, timed as reads); and the writing of the shards.
``--tiny`` uses the tiny randomly initialised generator of the tests: its numbers say nothing about
the real model, and it must be given ``--out`` so that it never replaces the real results.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _report import markdown_table
from monai.networks.nets import UNet

from synthbrain import BrainGenerator, _io
from synthbrain.datasets import SyntheticBrainDataset

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', a model folder or a Hub id")
    parser.add_argument("--tiny", action="store_true", help="the tiny test generator (tests/helpers.py) instead of --model: a quick check")
    parser.add_argument("--n", type=int, default=32, help="samples per measurement")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size")
    parser.add_argument("--chunk-size", type=int, default=8, help="generation batch size")
    parser.add_argument("--workers", type=int, default=0, help="also measure the cached setting with this many DataLoader workers (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="result files OUT.md and OUT.json (default docs/benchmarks/dataset-throughput)"
    )
    args = parser.parse_args(argv)
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out: docs/benchmarks/ holds the results of real runs only")
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--chunk-size", args.chunk_size)):
        if value < 1:
            parser.error(f"{flag} {value}: must be >= 1")
    if args.workers < 0:
        parser.error(f"--workers {args.workers}: must be >= 0")
    out = args.out if args.out is not None else ROOT / "docs" / "benchmarks" / "dataset-throughput"
    device = torch.device(args.device)

    if args.tiny:
        sys.path.insert(0, str(ROOT))
        from tests.helpers import tiny_generator

        generator, model_name = tiny_generator(distribution=True, steps=2), "tiny test generator"
    else:
        generator, model_name = BrainGenerator.from_pretrained(args.model), args.model
    classes = len(generator.label_classes)
    torch.manual_seed(0)
    net = UNet(3, 1, classes, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step(batch):
        logits = net(batch["image"].to(device))
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"].to(device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def make(**kwargs):
        common = {"seed": 0, "device": device, "chunk_size": args.chunk_size}
        return SyntheticBrainDataset(args.n, None, generator, **common, **kwargs)

    def loader(dataset, workers=0):
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)

    def rate(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.n / (time.perf_counter() - start)

    # Reference: the training loop on batches already in memory.
    in_memory = list(loader(make(cache_mb=0, prefetch=False)))
    train_step(in_memory[0])  # warm-up
    consumer = rate(lambda: [train_step(b) for b in in_memory])

    rows = [{"setting": "training loop on tensors in memory (reference)", "samples/s": consumer}]
    with tempfile.TemporaryDirectory() as tmp:
        shards = make(cache_mb=0, prefetch=False, shards=Path(tmp) / "shards")
        write = rate(lambda: shards.pregenerate(progress=False))
        settings = {
            "on the fly, no cache (each batch generated in one call)": (lambda: make(cache_mb=0, prefetch=False), 0),
            "on the fly, chunk cache + prefetch thread": (lambda: make(), 0),
            "pre-generated shards (memory-mapped reads)": (lambda: make(cache_mb=0, prefetch=False, shards=Path(tmp) / "shards"), 0),
        }
        if args.workers and device.type == "cpu":
            settings[f"on the fly, chunk cache + prefetch, {args.workers} DataLoader workers"] = (lambda: make(), args.workers)
        for name, (build, workers) in settings.items():
            alone = rate(lambda: list(loader(build(), workers)))
            fed = rate(lambda: [train_step(b) for b in loader(build(), workers)])
            rows.append({"setting": name, "dataset alone, samples/s": alone, "samples/s": fed})
        rows.append({"setting": "writing the shards (pregenerate)", "dataset alone, samples/s": write})
    table = pd.DataFrame(rows)
    table["training loop rate vs reference"] = table["samples/s"] / consumer
    command = "python benchmarks/dataset_throughput.py " + ("--tiny" if args.tiny else f"--model {args.model}")
    command += (
        f" --n {args.n} --batch-size {args.batch_size} --chunk-size {args.chunk_size} --workers {args.workers} --device {args.device}"
    )
    summary = {
        "command": command,
        "machine": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "model": model_name,
        "generator": {k: generator.defaults[k] for k in ("sampler", "steps", "guidance_scale")},
        "image_grid": generator.image_grid.to_dict(),
        "rows": table.astype(object).where(table.notna(), None).to_dict("records"),  # JSON null, not NaN, where a setting has no value
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(out.with_suffix(".json"), summary)
    report = "\n\n".join(
        [
            f"# SyntheticBrainDataset throughput: `{model_name}` on {args.device}",
            f"Command: `{summary['command']}`. Machine: {summary['machine']}. Consumer: MONAI 3D UNet (8, 16, 32), "
            f"batch {args.batch_size}, cross-entropy on the label maps, {args.n} samples per measurement; generation: "
            f"{summary['generator']['sampler']}, {summary['generator']['steps']} steps, chunks of {args.chunk_size}.",
            markdown_table(table.astype(object).fillna("")),
        ]
    )
    _io.write_text(out.with_suffix(".md"), report + "\n")
    print(report)
    return summary


if __name__ == "__main__":
    main()
