"""Does SyntheticBrainDataset keep a training loop fed, in the access patterns training loops use?

Seconds per sample delivered by the dataset through a ``DataLoader`` with shuffled and sequential
access, 0 and ``--workers`` workers, for the default settings (each batch generated exactly as
asked) and for the chunk cache with prefetch; against the per-sample time of generating exactly
the requested indices in one ``generate`` call (the reference of issue 23), and against a small 3D
segmentation UNet training loop's own rate on tensors in memory. Also ``appearance="randomized"``
against ``"generated"`` (the cost of label-to-image synthesis), memory-mapped shard reads, and the
volumes each setting generated per volume it returned (wasted work). Ratios are within one run.

    python benchmarks/dataset_throughput.py --model default --n 32          # docs/benchmarks/dataset-throughput.{md,json}
    python benchmarks/dataset_throughput.py --model default --device cuda   # the same on a GPU
    python benchmarks/dataset_throughput.py --tiny --out /tmp/throughput    # a seconds-long check that the script runs

``--no-randomized`` leaves out the ``appearance="randomized"`` rows: they need torchio, which needs SimpleITK
(about 260 MB installed), absent where only the generated appearance can be measured (the GPU run of
``benchmarks/gpu/run.py``).

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
from synthbrain.generator import draws

ROOT = Path(__file__).resolve().parents[1]


class Counting(BrainGenerator):
    """The generator, counting the volumes it generates (in this process)."""

    generated = 0

    def generate(self, *args, **kwargs):
        out = super().generate(*args, **kwargs)
        Counting.generated += len(out)
        return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', a model folder or a Hub id")
    parser.add_argument("--tiny", action="store_true", help="the tiny test generator (tests/helpers.py) instead of --model: a quick check")
    parser.add_argument("--n", type=int, default=32, help="samples per measurement")
    parser.add_argument("--size", type=int, default=10000, help="dataset length (shuffled access draws n of these)")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size")
    parser.add_argument("--chunk-size", type=int, default=8, help="generation batch size of the chunk cache")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the settings with workers (CPU only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-randomized", action="store_true", help="leave out the appearance='randomized' rows (they need torchio)")
    parser.add_argument("--out", type=Path, default=None, help="OUT.md and OUT.json (default docs/benchmarks/dataset-throughput)")
    args = parser.parse_args(argv)
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out: docs/benchmarks/ holds the results of real runs only")
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--chunk-size", args.chunk_size), ("--size", args.size)):
        if value < 1:
            parser.error(f"{flag} {value}: must be >= 1")
    if args.workers < 0:
        parser.error(f"--workers {args.workers}: must be >= 0")
    out = args.out if args.out is not None else ROOT / "docs" / "benchmarks" / "dataset-throughput"
    device = torch.device(args.device)
    if args.tiny:
        sys.path.insert(0, str(ROOT))
        from tests.helpers import tiny_generator

        base, model_name = tiny_generator(distribution=True, steps=2), "tiny test generator"
    else:
        base, model_name = BrainGenerator.from_pretrained(args.model), args.model
    generator = Counting.from_parts(base.parts()).to(device)
    torch.manual_seed(0)
    net = UNet(3, 1, len(generator.label_classes), channels=(8, 16, 32), strides=(2, 2), num_res_units=1).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step(batch):
        loss = torch.nn.functional.cross_entropy(net(batch["image"].to(device)), batch["label"][:, 0].to(device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def dataset(**kwargs) -> SyntheticBrainDataset:
        return SyntheticBrainDataset(args.size, None, generator, seed=0, device=device, chunk_size=args.chunk_size, **kwargs)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.n

    # Reference: generating exactly the indices asked, one generate() call per batch, as a loader of batch_size asks.
    order = torch.randperm(args.size, generator=torch.Generator().manual_seed(1))[: args.n].tolist()
    sequential, shuffled = list(range(args.n)), order

    def exact():
        for start in range(0, args.n, args.batch_size):
            seeds = [draws.volume_seed(0, i) for i in shuffled[start : start + args.batch_size]]
            base.generate(seed=seeds, batch_size=len(seeds))

    base.to(device)
    base.generate(seed=[0])  # warm-up
    reference = timed(exact)
    in_memory = list(torch.utils.data.DataLoader(torch.utils.data.Subset(dataset(), sequential), batch_size=args.batch_size))
    train_step(in_memory[0])
    consumer = timed(lambda: [train_step(b) for b in in_memory])

    rows = [
        {"setting": "generate exactly the requested indices (reference)", "seconds per sample": reference},
        {"setting": "training loop on tensors in memory", "seconds per sample": consumer},
    ]
    workers = args.workers if device.type == "cpu" else 0
    cases = [
        ("defaults, shuffled", {}, shuffled, 0),
        ("defaults, sequential", {}, sequential, 0),
        (f"defaults, shuffled, {workers} workers", {}, shuffled, workers),
        (f"defaults, sequential, {workers} workers", {}, sequential, workers),
        ("chunk cache + prefetch, shuffled", {"cache_mb": 1024}, shuffled, 0),
        ("chunk cache + prefetch, sequential", {"cache_mb": 1024}, sequential, 0),
        ("appearance='randomized', shuffled", {"appearance": "randomized"}, shuffled, 0),
        (f"appearance='randomized', shuffled, {workers} workers", {"appearance": "randomized"}, shuffled, workers),
    ]
    if workers == 0:
        cases = [c for c in cases if "workers" not in c[0]]
    if args.no_randomized:
        cases = [c for c in cases if "randomized" not in c[0]]

    def fresh_pass(kwargs: dict, indices: list[int], count: int, consume) -> tuple[float, int]:
        """Seconds per sample of one pass on a fresh dataset (no chunk cached by another pass), and the
        volumes generated in this process (workers count in theirs)."""
        Counting.generated = 0
        data = dataset(**kwargs)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, indices), batch_size=args.batch_size, num_workers=count)
        seconds = timed(lambda: consume(loader))
        data.close()  # wait for a chunk still being prefetched, so that it runs in no other setting's time
        return seconds, Counting.generated

    for name, kwargs, indices, count in cases:
        alone, generated = fresh_pass(kwargs, indices, count, list)
        fed, _ = fresh_pass(kwargs, indices, count, lambda loader: [train_step(b) for b in loader])
        rows.append(
            {
                "setting": name,
                "seconds per sample": alone,
                "with the training loop": fed,
                "generated per returned": generated / args.n if count == 0 else None,
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        shards = dataset(shards=Path(tmp) / "shards")
        subset = torch.utils.data.Subset(shards, sequential)
        for chunk in range(-(-args.n // args.chunk_size)):
            shards._load_chunk(chunk)
        read = timed(lambda: list(torch.utils.data.DataLoader(subset, batch_size=args.batch_size)))
        rows.append({"setting": "pre-generated shards (memory-mapped reads)", "seconds per sample": read})
    table = pd.DataFrame(rows)
    table["vs reference"] = table["seconds per sample"] / reference
    table["vs training loop"] = table.get("with the training loop", table["seconds per sample"]) / consumer
    seconds = table.set_index("setting")["seconds per sample"]
    randomized = "appearance='randomized', shuffled"
    randomized_ratio = float(seconds[randomized] / seconds["defaults, shuffled"]) if randomized in seconds else None
    command = "python benchmarks/dataset_throughput.py " + ("--tiny" if args.tiny else f"--model {args.model}")
    command += f" --n {args.n} --batch-size {args.batch_size} --chunk-size {args.chunk_size} --workers {args.workers}"
    command += f" --device {args.device}" + (" --no-randomized" if args.no_randomized else "")
    shuffled_ratio = float(table.loc[table["setting"] == "defaults, shuffled", "vs reference"].iloc[0])
    summary = {
        "command": command,
        "machine": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "model": model_name,
        "generator": {k: generator.defaults[k] for k in ("sampler", "steps", "guidance_scale", "timestep_spacing")},
        "image_grid": generator.image_grid.to_dict(),
        "shuffled defaults vs reference": shuffled_ratio,
        "randomized vs generated (shuffled, no workers)": randomized_ratio,
        "rows": table.astype(object).where(table.notna(), None).to_dict("records"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(out.with_suffix(".json"), summary)
    verdict = "meets" if shuffled_ratio <= 1.2 else "misses"
    report = "\n\n".join(
        [
            f"# SyntheticBrainDataset throughput: `{model_name}` on {args.device}",
            f"Command: `{summary['command']}`. Machine: {summary['machine']}. {args.n} samples per measurement from a dataset of "
            f"{args.size}; DataLoader batches of {args.batch_size}; consumer: MONAI 3D UNet (8, 16, 32), cross-entropy on the label maps; "
            f"generation: {summary['generator']}.",
            f"**Shuffled access with the defaults costs {shuffled_ratio:.2f}x the time of generating exactly the requested indices** "
            f"(target <= 1.2: {verdict}). "
            + (
                f"A randomised appearance costs {randomized_ratio:.2f}x a generated one per sample."
                if randomized_ratio is not None
                else "The randomised appearance was left out (--no-randomized)."
            ),
            "'generated per returned' counts the volumes generated in the main process per sample delivered (1.0: no wasted work; "
            "the chunk cache generates whole chunks for one volume each under shuffled access).",
            markdown_table(table.astype(object).fillna("-")),
        ]
    )
    _io.write_text(out.with_suffix(".md"), report + "\n")
    print(report)
    return summary


if __name__ == "__main__":
    main()
