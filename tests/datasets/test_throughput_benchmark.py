import json

import pytest
import torch

from synthbrain import SyntheticBrainDataset
from tests.helpers import load_benchmark, tiny_generator


def test_throughput_benchmark_runs_in_tiny_mode_and_writes_its_report(tmp_path, monkeypatch):
    benchmark = load_benchmark("dataset_throughput", monkeypatch)
    out = tmp_path / "throughput"
    summary = benchmark.main(
        ["--tiny", "--n", "4", "--size", "50", "--batch-size", "2", "--chunk-size", "2", "--workers", "2", "--out", str(out)]
    )
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["command"] == summary["command"] and "--tiny" in written["command"]
    settings = [row["setting"] for row in written["rows"]]
    assert settings[0].endswith("(reference)") and "defaults, shuffled" in settings and "defaults, sequential, 2 workers" in settings
    assert "appearance='randomized', shuffled" in settings and any("shards" in s for s in settings)
    rows = {row["setting"]: row for row in written["rows"]}
    assert rows["defaults, shuffled"]["generated per returned"] == 1.0  # exactly what is asked, shuffled or not
    assert rows["chunk cache + prefetch, shuffled"]["generated per returned"] > 1.0  # whole chunks for one volume each
    assert isinstance(written["shuffled defaults vs reference"], float) and isinstance(
        written["randomized vs generated (shuffled, no workers)"], float
    )
    report = out.with_suffix(".md").read_text()
    assert report.startswith("# SyntheticBrainDataset throughput") and all(s in report for s in settings)
    with pytest.raises(SystemExit):  # a tiny run never replaces the real results under docs/benchmarks/
        benchmark.main(["--tiny"])
    small = ["--tiny", "--n", "2", "--size", "50", "--batch-size", "2", "--chunk-size", "2", "--workers", "0"]
    lean = benchmark.main([*small, "--no-randomized", "--out", str(tmp_path / "lean")])  # the GPU run's: torchio is not there
    assert not any("randomized" in row["setting"] for row in lean["rows"])
    assert lean["randomized vs generated (shuffled, no workers)"] is None
    assert "--no-randomized" in lean["command"] and "left out (--no-randomized)" in (tmp_path / "lean.md").read_text()


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffled_access_with_defaults_generates_no_more_than_it_returns(tmp_path, workers):
    """Counted in every process (workers included) through a file each generate call appends to."""
    log = tmp_path / "generated.txt"
    generator = tiny_generator(distribution=True, steps=2)
    real_generate = generator.generate

    def counting(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        with open(log, "a") as handle:
            handle.write(f"{len(out)}\n")
        return out

    generator.generate = counting
    dataset = SyntheticBrainDataset(1000, None, generator, seed=0, device="cpu")
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=12, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=workers)
    returned = sum(len(b["index"]) for b in loader)
    generated = sum(int(line) for line in log.read_text().split())
    assert returned == 12 and generated <= returned + 3  # at most one batch ahead
