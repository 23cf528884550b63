"""reader-study analyse against values computed by hand on a constructed answer set.

Cases R1-R4 are the study's real cases and S1-S4 its synthetic ones (each in id order). Answers
(label, confidence; r = real, s = synthetic, u = unsure):

    case   A      B      C
    R1     r 5    r 3    r 4
    R2     r 4    s 3    r 5
    R3     s 2    s 4    r 3
    R4     u      r 2    r 4
    S1     s 5    s 4    s 3
    S2     s 4    r 2    u
    S3     r 3    r 5    s 1
    S4     s 2    u      s 5
"""

from __future__ import annotations

import json
import math

import pytest

from synthbrain.reader_study.analysis import analyse, fleiss_kappa, wilson
from synthbrain.reader_study.store import AnswerStore
from synthbrain.reader_study.study import load_study

ANSWERS = {
    "A": ["r5", "r4", "s2", "u", "s5", "s4", "r3", "s2"],
    "B": ["r3", "s3", "s4", "r2", "s4", "r2", "r5", "u"],
    "C": ["r4", "r5", "r3", "r4", "s3", "u", "s1", "s5"],
}
LABEL = {"r": "real", "s": "synthetic", "u": "unsure"}


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture
def answered(study):
    meta = load_study(study)
    key = json.loads((study / "key" / "key.json").read_text())
    real = [c["id"] for c in key["cases"] if c["truth"] == "real"]
    synthetic = [c["id"] for c in key["cases"] if c["truth"] == "synthetic"]
    cases = real + synthetic  # R1-R4, S1-S4
    store = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    for reader, answers in ANSWERS.items():
        by_case = dict(zip(cases, answers))
        token, state = store.start_session(reader)
        for case_id in state.case_order:  # in the reader's own (shuffled) order
            code = by_case[case_id]
            store.record_answer(token, case_id, LABEL[code[0]], int(code[1]) if len(code) > 1 else None, 10.0)
    return study, cases


def test_per_reader_values(answered, tmp_path):
    study, cases = answered
    report = analyse(study, tmp_path / "out")
    rows = {r["reader"]: r for r in report["per_reader"]}
    expected = {  # (accuracy, sensitivity, specificity, unsure, decided accuracy) as (k, n)
        "A": ((5, 8), (3, 4), (2, 4), (1, 8), (5, 7)),
        "B": ((3, 8), (1, 4), (2, 4), (1, 8), (3, 7)),
        "C": ((7, 8), (3, 4), (4, 4), (1, 8), (7, 7)),
        "all readers (pooled)": ((15, 24), (7, 12), (8, 12), (3, 24), (15, 21)),
    }
    for reader, values in expected.items():
        for field, (k, n) in zip(("accuracy", "sensitivity", "specificity", "unsure", "decided_accuracy"), values):
            got = rows[reader][field]
            assert (got["k"], got["n"]) == (k, n), (reader, field)
            assert got["value"] == pytest.approx(k / n)
            low, high = _wilson_by_hand(k, n)
            assert (got["low"], got["high"]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9)), (reader, field)
    assert rows["C"]["p_vs_chance"] == pytest.approx(2 * 0.5**7)  # 7 of 7 decided right: exact binomial, two-sided
    assert rows["A"]["median_seconds"] == 10.0


def test_agreement_confidence_and_fooling_cases(answered, tmp_path):
    study, cases = answered
    report = analyse(study, tmp_path / "out")
    pairs = {(p["reader_a"], p["reader_b"]): p for p in report["agreement"]["cohen"]}
    # A vs B: observed 4/8; expected (3*4 + 4*3 + 1*1) / 64 = 25/64; kappa = (1/2 - 25/64) / (39/64) = 7/39
    assert pairs[("A", "B")]["cases"] == 8 and pairs[("A", "B")]["kappa"] == pytest.approx(7 / 39)
    # Fleiss over A, B, C: P_bar = 11/24, P_e = (11^2 + 10^2 + 3^2) / 24^2 = 230/576; kappa = 34/346 = 17/173
    assert report["agreement"]["fleiss"] == {"readers": 3, "cases": 8, "kappa": pytest.approx(17 / 173)}
    by_level = {row["confidence"]: (row["k"], row["n"]) for row in report["by_confidence"]}
    assert by_level == {1: (1, 1), 2: (2, 4), 3: (3, 5), 4: (5, 6), 5: (4, 5)}
    fooled = [(row["case_id"], row["said_real"], row["said_unsure"]) for row in report["fooled_most"]]
    s1, s2, s3, s4 = cases[4:]
    assert fooled == [(s3, 2, 0), (s2, 1, 1), (s4, 0, 1), (s1, 0, 0)]
    assert report["fooled_most"][0]["fooled"] == pytest.approx(2 / 3)
    assert report["real_called_synthetic_most"][0]["case_id"] == cases[2]  # R3: two of three said synthetic


def test_fleiss_kappa_by_hand_and_wilson_edges():
    # 3 cases, 4 raters: p_j = (5, 4, 3)/12; P_i = (1, 1, (1 + 9 - 4)/12 = 1/2), P_bar = 5/6;
    # P_e = (25 + 16 + 9)/144 = 25/72; kappa = (5/6 - 25/72) / (1 - 25/72) = 35/47
    assert fleiss_kappa([[4, 0, 0], [0, 4, 0], [1, 0, 3]]) == pytest.approx(35 / 47)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # everyone said the same: undefined
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])
    assert wilson(0, 0) == (None, None)
    low, high = wilson(0, 5)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(_wilson_by_hand(0, 5)[1])


def test_report_files_are_strict_and_name_no_absolute_path(answered, tmp_path, monkeypatch):
    study, _ = answered
    monkeypatch.chdir(study.parent)
    analyse("study", "report")
    out = study.parent / "report"
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "report.png", "answers.tsv"}
    text = (out / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    markdown = (out / "report.md").read_text()
    assert str(tmp_path) not in markdown and str(tmp_path) not in text
    assert "Study `study`" in markdown and "| A |" in markdown and "Fleiss' kappa" in markdown and "report.png" in markdown
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "answers.tsv").read_text().splitlines()) == 1 + 24


def test_analysis_needs_answers_and_a_matching_key(study, tmp_path):
    with pytest.raises(ValueError, match="no answers.sqlite yet"):
        analyse(study, tmp_path / "out")
    meta = load_study(study)
    AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    with pytest.raises(ValueError, match="no answers yet"):
        analyse(study, tmp_path / "out")
    (study / "key" / "key.json").unlink()
    with pytest.raises(ValueError, match="missing key/key.json"):
        analyse(study, tmp_path / "out")
