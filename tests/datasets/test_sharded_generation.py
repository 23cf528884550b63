import json
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from synthbrain.cli import main
from synthbrain.datasets import Fixed, SyntheticBrainDataset
from tests.helpers import subprocess_env, tiny_generator


def test_generate_shards_over_two_gloo_processes_then_resume(tmp_path):
    generator = tiny_generator(distribution=True, steps=2)
    model = generator.save_pretrained(tmp_path / "model")
    out = tmp_path / "shards"
    args = ["generate", "--model", str(model), "-n", "5", "--batch-size", "2", "--age", "50", "--seed", "3", "--device", "cpu"]
    args += ["--shards", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", "-m", "synthbrain.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["volumes"] == 5 and manifest["chunks"] == 3
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert table["index"].tolist() == [0, 1, 2, 3, 4] and (table["age"] == 50).all() and table["chunk"].tolist() == [0, 0, 1, 1, 2]

    # The shards hold exactly what the dataset generates in this process.
    reference = SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=3, chunk_size=2, device="cpu", steps=2)
    images = np.concatenate([np.load(out / f"chunk-{c:06d}" / "images.npy") for c in range(3)])
    for i in range(5):
        torch.testing.assert_close(torch.from_numpy(images[i]), reference[i]["image"], atol=1e-5, rtol=0)

    # Killed while writing chunk 1: it is generated again, the others are kept as they are.
    (out / "chunk-000001" / "done.json").unlink()
    (out / "chunk-000001" / "images.npy").write_bytes(b"truncated")
    kept = (out / "chunk-000002" / "images.npy").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "chunk-000002" / "images.npy").stat().st_mtime_ns == kept
    np.testing.assert_allclose(np.load(out / "chunk-000001" / "images.npy"), images[2:4], atol=1e-5)
    assert len(pd.read_csv(out / "participants.tsv", sep="\t")) == 5
