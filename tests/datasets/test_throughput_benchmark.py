import json

import pytest

from tests.helpers import load_benchmark


def test_throughput_benchmark_runs_in_tiny_mode_and_writes_its_report(tmp_path, monkeypatch):
    benchmark = load_benchmark("dataset_throughput", monkeypatch)
    out = tmp_path / "throughput"
    summary = benchmark.main(["--tiny", "--n", "4", "--batch-size", "2", "--chunk-size", "2", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["command"] == summary["command"] and "--tiny" in written["command"]
    settings = [row["setting"] for row in written["rows"]]
    assert settings[0].endswith("(reference)") and any("no cache" in s for s in settings) and any("shards" in s for s in settings)
    fed = [row["samples/s"] for row in written["rows"][:4]]  # rates are reported, not judged
    assert all(isinstance(rate, float) for rate in fed) and written["rows"][4]["samples/s"] is None  # shard writing: no loop
    assert isinstance(written["rows"][4]["dataset alone, samples/s"], float)
    report = out.with_suffix(".md").read_text()
    assert report.startswith("# SyntheticBrainDataset throughput") and all(s in report for s in settings)
    with pytest.raises(SystemExit):  # a tiny run never replaces the real results under docs/benchmarks/
        benchmark.main(["--tiny"])
