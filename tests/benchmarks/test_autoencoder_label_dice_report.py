import json

import pytest

from tests.helpers import load_benchmark


def test_report_tabulates_each_arm_and_mode_from_the_detail_results(tiny, tmp_path, monkeypatch):
    script = load_benchmark("autoencoder_detail", monkeypatch)
    prepared, _, folder = tiny
    results = tmp_path / "results"
    common = ["--autoencoder", str(folder), "--real", str(prepared)]
    whole = script.main([*common, "--out", str(results / "shipped-whole")])
    windows = script.main([*common, "--window", "8", "--out", str(results / "dice1-windows")])
    report_script = load_benchmark("autoencoder_label_dice_report", monkeypatch)
    report = report_script.main([str(results), str(tmp_path / "report")])
    rows = {(row["autoencoder"], row["reconstructed"]): row for row in report["rows"]}
    assert list(rows) == [("shipped", "whole"), ("dice1", "windows")]  # arms in their fixed order; absent ones left out
    for row, result in ((rows["shipped", "whole"], whole), (rows["dice1", "windows"], windows)):
        assert row["high-frequency share / real"] == result["measures"]["high-frequency share"]["ratio"]
        assert (row["L1"], row["label Dice"]) == (result["l1"], result["label_dice"])
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == report["rows"]
    text = (tmp_path / "report.md").read_text()
    assert "| shipped | whole |" in text and "| dice1 | windows |" in text
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="no NAME-whole.json"):
        report_script.main([str(tmp_path / "empty"), str(tmp_path / "none")])
