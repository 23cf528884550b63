"""Does SyntheticBrainDataset keep a training loop fed? Samples per second delivered by the dataset
alone, and by a small 3D segmentation UNet training loop fed by it, against that loop's own rate
on tensors already in memory (the reference, measured in the same run).

    python benchmarks/dataset_throughput.py --model default --n 32

Settings: on the fly without cache or prefetch; on the fly with chunk cache and the prefetch
thread; pre-generated memory-mapped shards (written once, timed as reads). The same script runs
on a GPU (--device cuda).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _report import markdown_table
from monai.networks.nets import UNet

from synthbrain import BrainGenerator, _io
from synthbrain.datasets import SyntheticBrainDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=32, help="samples per measurement")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size")
    parser.add_argument("--chunk-size", type=int, default=8, help="generation batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/dataset-throughput"))
    args = parser.parse_args()

    generator = BrainGenerator.from_pretrained(args.model)
    classes = len(generator.label_classes)
    torch.manual_seed(0)
    net = UNet(3, 1, classes, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).to(args.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step(batch):
        logits = net(batch["image"].to(args.device))
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"].to(args.device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def make(**kwargs):
        common = {"seed": 0, "device": args.device, "chunk_size": args.chunk_size}
        return SyntheticBrainDataset(args.n, None, generator, **common, **kwargs)

    def loader(dataset):
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=0)

    def rate(fn) -> float:
        start = time.perf_counter()
        fn()
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
            "on the fly, no cache, no prefetch": lambda: make(cache_mb=0, prefetch=False),
            "on the fly, chunk cache + prefetch thread": lambda: make(),
            "pre-generated shards (memory-mapped reads)": lambda: make(cache_mb=0, prefetch=False, shards=Path(tmp) / "shards"),
        }
        for name, build in settings.items():
            alone = rate(lambda: list(loader(build())))
            fed = rate(lambda: [train_step(b) for b in loader(build())])
            rows.append({"setting": name, "dataset alone, samples/s": alone, "samples/s": fed})
        rows.append({"setting": "writing the shards (pregenerate)", "dataset alone, samples/s": write})
    table = pd.DataFrame(rows)
    table["training loop rate vs reference"] = table["samples/s"] / consumer
    summary = {
        "command": f"python benchmarks/dataset_throughput.py --model {args.model} --n {args.n} --batch-size {args.batch_size} "
        f"--chunk-size {args.chunk_size} --device {args.device}",
        "machine": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "generator": {k: generator.defaults[k] for k in ("sampler", "steps", "guidance_scale")},
        "image_grid": generator.image_grid.to_dict(),
        "rows": table.to_dict("records"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(args.out.with_suffix(".json"), summary)
    report = "\n\n".join(
        [
            f"# SyntheticBrainDataset throughput: `{args.model}` on {args.device}",
            f"Command: `{summary['command']}`. Machine: {summary['machine']}. Consumer: MONAI 3D UNet (8, 16, 32), "
            f"batch {args.batch_size}, cross-entropy on the label maps, {args.n} samples per measurement.",
            markdown_table(table.fillna("")),
        ]
    )
    _io.write_text(args.out.with_suffix(".md"), report + "\n")
    print(report)


if __name__ == "__main__":
    main()
