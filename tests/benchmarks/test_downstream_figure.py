"""The downstream figure: one colour per arm in every panel, and one readable legend naming them (issue 34, point 1)."""

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("downstream", monkeypatch)


def _rows(script) -> tuple[pd.DataFrame, dict]:
    """Finished runs of three tasks whose arms differ per task (as in the real benchmark), so that a
    colour assigned by position within a panel would give one arm two colours."""
    rng = np.random.default_rng(0)
    arms = {
        "segmentation": (script.REAL, script.GENERATED, script.RANDOMIZED, script.BOTH, script.SPREAD),
        "age": (script.REAL, script.SPREAD, script.SYNTH_ONLY),
        "sex": (script.REAL, script.UPPER, script.GENERATED),
    }
    metrics = {"segmentation": ["dice"], "age": ["absolute error (years)"], "sex": ["p(male)", "male"]}
    out = []
    for task, task_arms in arms.items():
        for arm in task_arms:
            for n in [0] if arm == script.SYNTH_ONLY else [4, 40]:
                for seed in range(2):
                    for subject in range(6):
                        for metric in metrics[task]:
                            value = float(subject % 2) if metric == "male" else float(rng.uniform(0.2, 0.8))
                            out.append(
                                {"task": task, "arm": arm, "n": n, "seed": seed, "cohort": script.SPLIT_TEST}
                                | {"subject": subject, "metric": metric, "value": value}
                            )
    return pd.DataFrame(out), arms


def test_every_arm_has_one_colour_in_every_panel_and_one_legend_names_them(script):
    rows, arms = _rows(script)
    fig = script._figure(rows, ["segmentation", "age", "sex"], [4, 40], [script.SPLIT_TEST])
    names = {label: arm for arm, (label, *_) in script.ARMS.items()}
    seen = {}
    for ax, task in zip(fig.axes, ["segmentation", "age", "sex"]):
        drawn = {names[c.get_label()]: matplotlib.colors.to_hex(c.lines[0].get_color()) for c in ax.containers}
        assert set(drawn) == set(arms[task]), task
        for arm, colour in drawn.items():
            assert colour == matplotlib.colors.to_hex(script.ARM_COLOURS[arm]), (task, arm)
            seen.setdefault(arm, set()).add(colour)
        assert ax.get_legend() is None  # no panel's own legend
    assert all(len(colours) == 1 for colours in seen.values())
    # no two named arms share a colour (a generated-S arm given to --arms, added to ARMS by another test, takes viridis)
    assert len(set(script.ARM_COLOURS.values())) == len(script.ARM_COLOURS) and set(script.ARM_COLOURS) <= set(script.ARMS)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [script.ARMS[a][0] for a in script.ARMS if a in seen]  # every arm drawn, once, in the arms' order
    assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
    legend_colours = [matplotlib.colors.to_hex(h.get_color()) for h in legend.legend_handles]
    assert legend_colours == [matplotlib.colors.to_hex(script.ARM_COLOURS[a]) for a in script.ARMS if a in seen]


def test_report_only_needs_only_the_finished_runs(script, tmp_path):
    """The committed report is written again without the split generator or the split: their folders
    are named (the configuration's hash) but never opened."""
    out = tmp_path / "downstream"
    argv = ["--model", str(tmp_path / "absent-model"), "--split", str(tmp_path / "absent-split"), "--sizes", "4,40", "--seeds", "2"]
    argv += ["--device", "cpu", "--out", str(out), "--report-only"]
    args = script._parse(argv)
    settings = {**script.FULL, "sizes": "4,40", "seeds": 2}
    rows, _ = _rows(script)
    rows.insert(0, "config", rows["task"].map(lambda t: script._config(t, settings, args, script.torch.device("cpu"))))
    rows.to_csv(out.with_name("downstream.subjects.tsv.gz"), sep="\t", index=False, na_rep="n/a", compression="gzip")
    record = script.main(argv)
    assert set(record["tasks"]) == {"segmentation", "age", "sex"}
    text = out.with_suffix(".md").read_text()
    assert "Written with `--report-only` from the finished runs" in text and "![learning curves and arms](downstream.png)" in text
    assert out.with_suffix(".png").stat().st_size > 10_000
