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
import sqlite3

import pandas as pd
import pytest

from synthbrain.reader_study.analysis import MIN_SHARED_CASES, analyse, fleiss_kappa, wilson
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
            store.mark_served(token, case_id)
            store.record_answer(token, case_id, LABEL[code[0]], int(code[1]) if len(code) > 1 else None)  # no browser time
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
    assert report["n_readers"] == 3 and report["n_names_entered"] == 3 and report["without_answers"] == []


def test_agreement_confidence_and_fooling_cases(answered, tmp_path):
    study, cases = answered
    report = analyse(study, tmp_path / "out", min_shared_cases=8)
    pairs = {(p["reader_a"], p["reader_b"]): p for p in report["agreement"]["cohen"]}
    # A vs B: observed 4/8; expected (3*4 + 4*3 + 1*1) / 64 = 25/64; kappa = (1/2 - 25/64) / (39/64) = 7/39
    assert pairs[("A", "B")]["cases"] == 8 and pairs[("A", "B")]["kappa"] == pytest.approx(7 / 39)
    # Fleiss over A, B, C: P_bar = 11/24, P_e = (11^2 + 10^2 + 3^2) / 24^2 = 230/576; kappa = 34/346 = 17/173
    assert report["agreement"]["fleiss"] == {"readers": 3, "cases": 8, "kappa": pytest.approx(17 / 173), "reason": None}
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


def test_a_broken_cue_check_file_is_an_error_naming_it(answered, tmp_path):
    study, _ = answered
    (study / "key" / "cue_check.json").write_text('{"cues": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"cue_check.json: not valid JSON"):
        analyse(study, tmp_path / "out")
    (study / "key" / "cue_check.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cue_check.json: a JSON list; expected an object"):
        analyse(study, tmp_path / "out")


def _answer(store, name: str, labels: list[str]) -> None:
    """``name`` answers the first cases of their order with ``labels`` (codes as in ANSWERS)."""
    token, state = store.start_session(name)
    for case_id, code in zip(state.case_order, labels):
        store.mark_served(token, case_id)
        store.record_answer(token, case_id, LABEL[code[0]], int(code[1]) if len(code) > 1 else None, 3.0)


def test_readers_are_those_who_answered_and_a_test_reader_can_be_left_out(answered, tmp_path):
    study, _ = answered
    meta = load_study(study)
    store = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    for name in ("Dr Idle", "Nobody"):  # entered a name, answered nothing
        store.start_session(name)
    report = analyse(study, tmp_path / "all", min_shared_cases=8)
    assert (report["n_readers"], report["n_names_entered"], report["without_answers"]) == (3, 5, ["Dr Idle", "Nobody"])
    assert [r["name"] for r in report["readers"]] == ["A", "B", "C"]
    assert (
        "Readers: 3 answered and analysed, of 5 name(s) entered; 2 without an answer (Dr Idle, Nobody)."
        in (tmp_path / "all" / "report.md").read_text()
    )

    report = analyse(study, tmp_path / "out", exclude_readers=[" c "], min_shared_cases=8)  # as entered: case and spacing ignored
    rows = {r["reader"]: r for r in report["per_reader"]}
    assert set(rows) == {"A", "B", "all readers (pooled)"} and report["n_readers"] == 2
    assert (rows["all readers (pooled)"]["accuracy"]["k"], rows["all readers (pooled)"]["accuracy"]["n"]) == (8, 16)
    assert report["excluded_readers"] == [{"name": "C", "answers": 8}]
    assert report["agreement"]["fleiss"]["readers"] == 2 and [r["name"] for r in report["readers"]] == ["A", "B"]
    assert sum(row["answers"] for row in report["fooled_most"] + report["real_called_synthetic_most"]) == 16
    assert "left out on request: C (8 answers)" in (tmp_path / "out" / "report.md").read_text()
    tsv = pd.read_csv(tmp_path / "out" / "answers.tsv", sep="\t")
    assert len(tsv) == 24 and tsv.groupby("reader")["excluded"].all().to_dict() == {"A": False, "B": False, "C": True}
    with pytest.raises(ValueError, match="exclude_readers: no reader named 'Dr Who'; readers: .*'Nobody'"):
        analyse(study, tmp_path / "x", exclude_readers=["Dr Who"])
    with pytest.raises(ValueError, match="no answers left"):
        analyse(study, tmp_path / "x", exclude_readers=["a", "b", "c"])


def test_kappa_needs_enough_shared_cases(answered, tmp_path):
    study, _ = answered
    meta = load_study(study)
    _answer(AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed), "D", ["r3"])  # one case only
    report = analyse(study, tmp_path / "out")
    pairs = {(p["reader_a"], p["reader_b"]): p for p in report["agreement"]["cohen"]}
    assert MIN_SHARED_CASES > 8 and report["agreement"]["min_shared_cases"] == MIN_SHARED_CASES
    assert pairs[("A", "D")]["cases"] == 1 and pairs[("A", "D")]["kappa"] is None
    assert pairs[("A", "D")]["reason"] == f"not computed: 1 shared case(s), at least {MIN_SHARED_CASES} needed"
    assert pairs[("A", "B")]["kappa"] is None and "8 shared case(s)" in pairs[("A", "B")]["reason"]
    assert report["agreement"]["fleiss"]["cases"] == 1 and report["agreement"]["fleiss"]["kappa"] is None
    assert "n/a (not computed: 1 shared case(s)" in (tmp_path / "out" / "report.md").read_text()
    report = analyse(study, tmp_path / "out", min_shared_cases=8)  # A-B share 8 cases: computed, as by hand above
    pairs = {(p["reader_a"], p["reader_b"]): p for p in report["agreement"]["cohen"]}
    assert pairs[("A", "B")]["kappa"] == pytest.approx(7 / 39) and pairs[("A", "D")]["kappa"] is None
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="min_shared_cases"):
            analyse(study, tmp_path / "out", min_shared_cases=bad)


def test_time_per_case_is_the_servers_and_implausible_times_are_listed(answered, tmp_path):
    study, cases = answered
    # reader A: server times 10..70 s and one of 5000 s (a break); browser times as sent, one of 1e7 s
    server = dict(zip(cases, [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 5000.0]))
    client = dict(zip(cases, [9.0, 19.0, 29.0, 9_999_999.0, 49.0, 59.0, 69.0, 4999.0]))
    with sqlite3.connect(study / "answers.sqlite") as db:
        (a,) = db.execute("SELECT reader_id FROM readers WHERE name = 'A'").fetchone()
        for case_id in cases:
            db.execute(
                "UPDATE answers SET server_seconds = ?, seconds = ? WHERE reader_id = ? AND case_id = ?",
                (server[case_id], client[case_id], a, case_id),
            )
        db.execute("UPDATE answers SET server_seconds = NULL WHERE reader_id != ? AND case_id = ?", (a, cases[0]))  # no server time
    report = analyse(study, tmp_path / "out")
    rows = {r["reader"]: r for r in report["per_reader"]}
    assert rows["A"]["median_seconds"] == 40.0 and rows["A"]["times_left_out"] == 1  # 10..70: the 5000 s left out
    assert rows["B"]["times_left_out"] == 1 and rows["C"]["times_left_out"] == 1
    times = report["times"]
    assert times["left_out"] == 3 and times["measure"] == "server_seconds"
    notes = {(n["reader"], n["case_id"]): n["time_note"] for n in times["notes"]}
    assert notes[("A", cases[7])] == "server time 5000 s over 3600 s (a break?): left out"
    assert notes[("A", cases[3])].startswith("browser time 1e+07 s exceeds the server's 40.0 s: implausible")
    assert notes[("B", cases[0])] == "no server time: left out" and len(notes) == 4
    assert analyse(study, tmp_path / "o2", max_seconds=6000)["per_reader"][0]["median_seconds"] == 45.0  # the break counts
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Time per case" in markdown and "| A | " + cases[3] + " | 9999999.0 | 40.0 | browser time" in markdown
    tsv = pd.read_csv(tmp_path / "out" / "answers.tsv", sep="\t", keep_default_na=False)
    assert set(tsv["time_note"]) >= {"", "no server time: left out"}
