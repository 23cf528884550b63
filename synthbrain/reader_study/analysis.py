"""``reader-study analyse``: what the readers' answers say about the synthetic volumes.

Definitions (synthetic is the positive class; every answer counts, ``unsure`` as not correct):

- accuracy = correct answers / answers; sensitivity = synthetic cases called synthetic / synthetic
  cases answered; specificity = real cases called real / real cases answered; unsure share =
  ``unsure`` answers / answers. Each with a 95 % Wilson score interval (Wilson 1927;
  ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``).
- accuracy of decided answers (``unsure`` left out) with the exact two-sided binomial test against
  chance (0.5): a value near 0.5 with a large p means the readers could not tell.
- agreement: Cohen's kappa (Cohen 1960; ``sklearn.metrics.cohen_kappa_score``) for every pair of
  readers over the cases both answered, and Fleiss' kappa (Fleiss 1971, computed here) over the
  cases every reader answered; the three answers are the categories. Not computed (null, with the
  reason) over fewer than ``min_shared_cases`` cases (default :data:`MIN_SHARED_CASES`: a kappa of
  a handful of cases is noise) or where the expected agreement is 1 (everyone gave one answer).
- time per case: the server's time (``server_seconds``: from when the server first showed the case
  in the answering session to the answer), not the browser's, which a reader's machine can make
  anything. Times over ``max_seconds`` (a break, not reading) and answers without a server time
  are left out of the medians and listed; browser times more than :data:`CLIENT_TOLERANCE_S` over
  the server's are flagged as implausible.
- readers: those with at least one answer; names entered without an answer are counted apart.
  ``exclude_readers`` leaves named readers (a test reader) out of every number, and the report
  says whom and how many answers.
- accuracy against confidence: decided answers grouped by the confidence (1-5) given.
- the synthetic cases that fooled readers most: share of readers who called them real.

The pooled row treats all answers as independent, which they are not (answers of one reader are
correlated), so its interval is too narrow; read it as a summary, and the per-reader rows for
inference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from synthbrain import _io
from synthbrain.evaluation.metrics import wilson_interval
from synthbrain.reader_study.store import LABELS, normalise_name, open_store
from synthbrain.reader_study.study import KEY_DIR, load_study, read_key

POOLED = "all readers (pooled)"
MIN_SHARED_CASES = 10  # fewest cases a kappa is computed on
MAX_SECONDS = 3600.0  # a server time per case above this is a break, not reading
CLIENT_TOLERANCE_S = 5.0  # how far the browser's time may exceed the server's (request latency, rounding)


def wilson(successes: int, trials: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``successes`` out of ``trials``
    (:func:`synthbrain.evaluation.metrics.wilson_interval`); (None, None) for 0 trials."""
    return (None, None) if trials == 0 else wilson_interval(int(successes), int(trials), level)


def proportion(successes: int, trials: int) -> dict[str, Any]:
    """``{"k", "n", "value", "low", "high"}`` with the Wilson 95 % interval (value None for n = 0)."""
    low, high = wilson(successes, trials)
    return {"k": int(successes), "n": int(trials), "value": successes / trials if trials else None, "low": low, "high": high}


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa (Fleiss 1971) of a (cases, categories) table of how many raters chose each
    category; every row must sum to the same number of raters (>= 2). None when undefined
    (expected agreement 1). ValueError for rows with different sums or fewer than 2 raters."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"counts: shape {counts.shape}; allowed: (cases >= 1, categories)")
    raters = counts.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("counts: every case needs the same number (>= 2) of raters")
    n = raters[0]
    p_category = counts.sum(axis=0) / counts.sum()
    p_case = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_expected = p_case.mean(), np.square(p_category).sum()
    if math.isclose(p_expected, 1.0):
        return None
    return float((p_bar - p_expected) / (1.0 - p_expected))


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' answers on the same cases (``sklearn.metrics.cohen_kappa_score``
    over the three answers); None when undefined (no cases, or expected agreement 1)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = cohen_kappa_score(a, b, labels=list(LABELS))
    return None if not np.isfinite(value) else float(value)


ANSWER_COLUMNS = ["reader", "case_id", "position", "label", "confidence", "seconds", "server_seconds", "answered_at"]


def load_answers(folder: str | Path) -> tuple[pd.DataFrame, dict[str, dict], Any]:
    """The answers of a study joined with its key: one row per answer with ``reader, case_id,
    position, label, confidence, seconds, server_seconds, answered_at, truth, correct``; also the
    key entries by case id and the study. ValueError when the folder, key or database is missing or
    mismatched."""
    study = load_study(folder, key="required")
    key = {str(c["id"]): c for c in read_key(study.folder)["cases"]}
    store = open_store(study, create=False)
    table = pd.DataFrame(store.answers(), columns=ANSWER_COLUMNS)
    unknown = sorted(set(table["case_id"]) - set(key))
    if unknown:
        raise ValueError(f"study={str(folder)!r}: the database holds answers to cases the study does not have: {unknown[:10]}")
    table["truth"] = table["case_id"].map(lambda c: key[c]["truth"])
    table["correct"] = table["label"] == table["truth"]
    return table, key, study


def time_notes(answers: pd.DataFrame, max_seconds: float = MAX_SECONDS) -> pd.Series:
    """Per answer, why its time is not used or is doubtful (``""`` when it is fine): no server time;
    a server time over ``max_seconds`` (left out of the medians); a browser time more than
    :data:`CLIENT_TOLERANCE_S` over the server's (flagged; the server's is used)."""
    notes = []
    for server, client in zip(answers["server_seconds"], answers["seconds"]):
        if pd.isna(server):
            notes.append("no server time: left out")
        elif server > max_seconds:
            notes.append(f"server time {server:.0f} s over {max_seconds:g} s (a break?): left out")
        elif not pd.isna(client) and client > server + CLIENT_TOLERANCE_S:
            notes.append(f"browser time {client:.4g} s exceeds the server's {server:.1f} s: implausible, not used")
        else:
            notes.append("")
    return pd.Series(notes, index=answers.index, dtype=object)


def usable_seconds(answers: pd.DataFrame) -> pd.Series:
    """The server times of the answers whose ``time_note`` does not say ``left out``."""
    return answers.loc[~answers["time_note"].str.endswith("left out"), "server_seconds"].dropna()


def reader_metrics(answers: pd.DataFrame) -> list[dict[str, Any]]:
    """Per reader (and, with more than one reader, pooled, last): answers, accuracy, sensitivity,
    specificity, unsure share (each a :func:`proportion`), accuracy of decided answers with the exact
    two-sided binomial p against 0.5 (``scipy.stats.binomtest``), the median server time per case
    and how many times were left out. ``answers`` is :func:`load_answers`'s table with
    :func:`time_notes` as ``time_note``."""
    rows = []
    groups = [(name, group) for name, group in answers.groupby("reader", sort=False)]
    if len(groups) > 1:
        groups.append((POOLED, answers))
    for name, group in groups:
        synthetic, real = group[group["truth"] == "synthetic"], group[group["truth"] == "real"]
        decided = group[group["label"] != "unsure"]
        correct_decided = int(decided["correct"].sum())
        p_chance = float(stats.binomtest(correct_decided, len(decided), 0.5).pvalue) if len(decided) else None
        seconds = usable_seconds(group)
        rows.append(
            {
                "reader": name,
                "answers": len(group),
                "accuracy": proportion(int(group["correct"].sum()), len(group)),
                "sensitivity": proportion(int((synthetic["label"] == "synthetic").sum()), len(synthetic)),
                "specificity": proportion(int((real["label"] == "real").sum()), len(real)),
                "unsure": proportion(int((group["label"] == "unsure").sum()), len(group)),
                "decided_accuracy": proportion(correct_decided, len(decided)),
                "p_vs_chance": p_chance,
                "median_seconds": float(seconds.median()) if len(seconds) else None,
                "times_left_out": int(len(group) - len(seconds)),
            }
        )
    return rows


def agreement(answers: pd.DataFrame, min_shared_cases: int = MIN_SHARED_CASES) -> dict[str, Any]:
    """Cohen's kappa per pair of readers (cases both answered) and Fleiss' kappa over the cases
    every reader answered (with 2 or more readers). A kappa is None, with its ``reason``, over fewer
    than ``min_shared_cases`` cases or where it is undefined (expected agreement 1)."""
    wide = answers.pivot(index="case_id", columns="reader", values="label")
    readers = list(dict.fromkeys(answers["reader"]))

    def kappa(cases: int, compute) -> tuple[float | None, str | None]:
        if cases < min_shared_cases:
            return None, f"not computed: {cases} shared case(s), at least {min_shared_cases} needed"
        value = compute()
        return value, None if value is not None else "undefined: every answer in one category (expected agreement 1)"

    pairs = []
    for a, b in combinations(readers, 2):
        both = wide[[a, b]].dropna()
        value, reason = kappa(len(both), lambda: cohen_kappa(both[a].tolist(), both[b].tolist()))
        pairs.append({"reader_a": a, "reader_b": b, "cases": len(both), "kappa": value, "reason": reason})
    fleiss = {"readers": len(readers), "cases": 0, "kappa": None, "reason": "fewer than 2 readers"}
    if len(readers) >= 2:
        complete = wide[readers].dropna()

        def compute() -> float | None:
            return fleiss_kappa(np.stack([(complete == label).sum(axis=1).to_numpy() for label in LABELS], axis=1))

        value, reason = kappa(len(complete), compute)
        fleiss = {"readers": len(readers), "cases": int(len(complete)), "kappa": value, "reason": reason}
    return {"cohen": pairs, "fleiss": fleiss, "min_shared_cases": min_shared_cases}


def by_confidence(answers: pd.DataFrame) -> list[dict[str, Any]]:
    """Accuracy of decided answers per confidence level, pooled over readers and per reader."""
    decided = answers[answers["label"] != "unsure"]
    rows = []
    for level in range(1, 6):
        at = decided[decided["confidence"] == level]
        per_reader = {name: proportion(int(g["correct"].sum()), len(g)) for name, g in at.groupby("reader", sort=False)}
        rows.append({"confidence": level, **proportion(int(at["correct"].sum()), len(at)), "per_reader": per_reader})
    return rows


def case_table(answers: pd.DataFrame, key: dict[str, dict]) -> pd.DataFrame:
    """One row per case: truth, source, answers, how many said real / synthetic / unsure, and
    ``fooled``: the share of answers that were wrong and decided (real called synthetic or the reverse)."""
    rows = []
    for case_id, entry in sorted(key.items()):
        got = answers[answers["case_id"] == case_id]
        counts = {label: int((got["label"] == label).sum()) for label in LABELS}
        wrong = counts["real"] if entry["truth"] == "synthetic" else counts["synthetic"]
        rows.append(
            {
                "case_id": case_id,
                "truth": entry["truth"],
                "source": describe_source(entry.get("source") or {}),
                "answers": len(got),
                **{f"said_{label}": counts[label] for label in LABELS},
                "fooled": wrong / len(got) if len(got) else None,
            }
        )
    return pd.DataFrame(rows)


def describe_source(source: dict[str, Any]) -> str:
    """A key entry's ``source`` in a few words: ``subject <id>`` (a real subject of a prepared cohort), the
    file name (a real or synthetic volume given as a file), ``model <path>, seed <seed>`` (generated for
    the study), or ``?``."""
    if "subject_id" in source:
        return f"subject {source['subject_id']}"
    if "file" in source:
        return str(source["file"])
    if "model" in source:
        return f"model {source['model']}, seed {source.get('seed')}"
    return "?"


def analyse(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    exclude_readers: Sequence[str] = (),
    min_shared_cases: int = MIN_SHARED_CASES,
    max_seconds: float = MAX_SECONDS,
) -> dict[str, Any]:
    """Analyse a study's answers; write ``report.md``, ``report.json`` (strict JSON),
    ``report.png`` and ``answers.tsv`` (every answer with its truth, its ``time_note`` and whether
    its reader was ``excluded``) into ``out`` (default ``STUDY/analysis``) and return the report's
    numbers.

    ``exclude_readers``: reader names (as entered; case and spacing do not matter) whose answers
    are left out of every number (a test reader); ``min_shared_cases`` (>= 2): fewest cases a
    kappa is computed on; ``max_seconds`` (> 0): server time per case above which a time is left
    out of the medians. ValueError for a name no reader has, a bad ``min_shared_cases`` or
    ``max_seconds``, an incomplete study, a key that does not match, or no answers (left)."""
    if not (isinstance(min_shared_cases, int) and not isinstance(min_shared_cases, bool) and min_shared_cases >= 2):
        raise ValueError(f"min_shared_cases={min_shared_cases!r}; allowed: an integer >= 2")
    if not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds={max_seconds!r}; allowed: a finite number > 0")
    if isinstance(exclude_readers, str):
        raise ValueError(f"exclude_readers={exclude_readers!r}: expected a list of names, not one string")
    table, key, study = load_answers(folder)
    store = open_store(study, create=False)
    registered = store.readers()
    by_key = {normalise_name(r.name)[1]: r for r in registered}
    excluded = []
    for name in exclude_readers:
        try:
            wanted = normalise_name(name)[1]
        except ValueError as err:
            raise ValueError(f"exclude_readers: {err}") from None
        if wanted not in by_key:
            raise ValueError(f"exclude_readers: no reader named {name!r}; readers: {[r.name for r in registered]}")
        excluded.append(by_key[wanted].name)
    excluded = list(dict.fromkeys(excluded))
    if table.empty:
        raise ValueError(f"study={str(folder)!r}: no answers yet; nothing to analyse")
    table["time_note"] = time_notes(table, max_seconds)
    table["excluded"] = table["reader"].isin(excluded)
    used = table[~table["excluded"]].reset_index(drop=True)
    if used.empty:
        raise ValueError(f"study={str(folder)!r}: no answers left once {excluded} are excluded; nothing to analyse")
    out = Path(out) if out is not None else study.folder / "analysis"
    cases = case_table(used, key)
    synthetic = cases[cases["truth"] == "synthetic"].sort_values(["fooled", "said_unsure"], ascending=False, na_position="last")
    real = cases[cases["truth"] == "real"].sort_values(["fooled", "said_unsure"], ascending=False, na_position="last")
    cue_path = study.folder / KEY_DIR / "cue_check.json"
    cue = _read_cues(cue_path)
    readers = [{"name": r.name, "answered": r.answered, "of": len(r.case_order)} for r in registered]
    noted = used[used["time_note"] != ""]
    report = {
        "study": _io.shown_path(study.folder),
        "title": study.title,
        "cases": {
            "total": len(key),
            "real": int((cases["truth"] == "real").sum()),
            "synthetic": int((cases["truth"] == "synthetic").sum()),
        },
        "n_readers": int(used["reader"].nunique()),
        "n_names_entered": len(registered),
        "readers": [r for r in readers if r["answered"] > 0 and r["name"] not in excluded],
        "without_answers": [r["name"] for r in readers if r["answered"] == 0],
        "excluded_readers": [{"name": name, "answers": int((table["reader"] == name).sum())} for name in excluded],
        "closed": store.is_closed(),
        "per_reader": reader_metrics(used),
        "agreement": agreement(used, min_shared_cases),
        "by_confidence": by_confidence(used),
        "times": {
            "measure": "server_seconds",
            "max_seconds": float(max_seconds),
            "client_tolerance_s": CLIENT_TOLERANCE_S,
            "left_out": int(used["time_note"].str.endswith("left out").sum()),
            "notes": noted[["reader", "case_id", "seconds", "server_seconds", "time_note"]].to_dict("records"),
        },
        "fooled_most": synthetic.to_dict("records"),
        "real_called_synthetic_most": real.to_dict("records"),
        "cue_check": cue,
    }
    report = _io.strict_json(report)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_table(out / "answers.tsv", table.drop(columns=["correct"]))
    _io.write_json(out / "report.json", report)
    _figure(out / "report.png", report)
    _io.write_text(out / "report.md", _markdown(report, out))
    return report


def _read_cues(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = _io.read_json(path, "the cue check's result (synthbrain reader-study check writes it)")
    return {"cues": data.get("cues", []), "content_differences": data.get("content_differences", [])}


def _ci(p: dict[str, Any]) -> str:
    if p["value"] is None:
        return "n/a"
    return f"{p['value']:.2f} [{p['low']:.2f}, {p['high']:.2f}] ({p['k']}/{p['n']})"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _markdown(report: dict[str, Any], out: Path) -> str:
    c = report["cases"]
    lines = [
        f"# Reader study: {report['title']}",
        "",
        f"Study `{report['study']}`: {c['total']} cases ({c['real']} real, {c['synthetic']} synthetic), "
        f"{report['n_readers']} reader(s) analysed, study {'closed' if report['closed'] else 'still open'}. "
        "Synthetic is the positive class; `unsure` counts as not correct; intervals are 95 % Wilson score intervals.",
        "",
        _readers_line(report),
        "",
        "![per-reader accuracy, accuracy against confidence, fooling cases](report.png)",
        "",
        "## Per reader",
        "",
        "| reader | answered | accuracy | sensitivity (synthetic found) | specificity (real found) | unsure | accuracy of decided | "
        "p vs chance | median s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    answered = {r["name"]: f"{r['answered']}/{r['of']}" for r in report["readers"]}
    for row in report["per_reader"]:
        lines.append(
            f"| {row['reader']} | {answered.get(row['reader'], row['answers'])} | {_ci(row['accuracy'])} | {_ci(row['sensitivity'])} | "
            f"{_ci(row['specificity'])} | {_ci(row['unsure'])} | {_ci(row['decided_accuracy'])} | {_p(row['p_vs_chance'])} | "
            f"{_num(row['median_seconds'], 1)} |"
        )
    lines += [
        "",
        "p vs chance: exact two-sided binomial test of the accuracy of decided answers against 0.5. The pooled row treats all "
        "answers as independent (its interval is too narrow). median s: the server's time per case (see Time per case).",
        "",
        "## Agreement between readers",
        "",
    ]
    agreement = report["agreement"]
    if agreement["cohen"]:
        lines += ["| reader A | reader B | cases both answered | Cohen's kappa |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['reader_a']} | {p['reader_b']} | {p['cases']} | {_kappa(p)} |" for p in agreement["cohen"]]
        fleiss = agreement["fleiss"]
        lines += ["", f"Fleiss' kappa over the {fleiss['cases']} cases all {fleiss['readers']} readers answered: {_kappa(fleiss)}."]
    else:
        lines.append("One reader only: no agreement to measure.")
    lines += [
        "",
        "Categories: real, synthetic, unsure. Kappa 0 is chance agreement, 1 perfect; computed over at least "
        f"{agreement['min_shared_cases']} shared cases.",
        "",
        "## Accuracy against confidence",
        "",
        "| confidence | decided answers | accuracy |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {row['confidence']} | {row['n']} | {_ci(row)} |" for row in report["by_confidence"]]
    lines += [
        "",
        "## Synthetic cases that fooled readers most",
        "",
        "| case | source | answers | called real | unsure | called synthetic | fooled |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["fooled_most"][:10]:
        lines.append(
            f"| {row['case_id']} | {row['source']} | {row['answers']} | {row['said_real']} | {row['said_unsure']} | "
            f"{row['said_synthetic']} | {_num(row['fooled'])} |"
        )
    lines += [
        "",
        "## Real cases most often called synthetic",
        "",
        "| case | source | answers | called synthetic | unsure | called real | share called synthetic |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["real_called_synthetic_most"][:5]:
        lines.append(
            f"| {row['case_id']} | {row['source']} | {row['answers']} | {row['said_synthetic']} | {row['said_unsure']} | "
            f"{row['said_real']} | {_num(row['fooled'])} |"
        )
    times = report["times"]
    lines += [
        "",
        "## Time per case",
        "",
        "Measured by the server, from when it first showed the case in the answering session to the answer (the browser's "
        f"own time is only checked against it). {times['left_out']} time(s) left out of the medians "
        f"(no server time, or over {times['max_seconds']:g} s); browser times more than {times['client_tolerance_s']:g} s over "
        "the server's are flagged as implausible.",
    ]
    if times["notes"]:
        lines += ["", "| reader | case | browser s | server s | note |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {n['reader']} | {n['case_id']} | {_num(n['seconds'], 1)} | {_num(n['server_seconds'], 1)} | {n['time_note']} |"
            for n in times["notes"][:20]
        ]
        if len(times["notes"]) > 20:
            lines.append(f"\n{len(times['notes']) - 20} more in report.json.")
    lines += ["", "## Cue check", ""]
    cue = report["cue_check"]
    if cue is None:
        lines.append(f"No `{KEY_DIR}/cue_check.json` in the study: run `synthbrain reader-study check`.")
    else:
        lines += [f"- cue: {c}" for c in cue["cues"]] or ["- no cue found in the case files (see key/cue_check.md)"]
        lines += [f"- content difference: {c}" for c in cue["content_differences"]]
    answers, numbers = _io.shown_path(out / "answers.tsv"), _io.shown_path(out / "report.json")
    lines += ["", f"Every answer with its truth: `{answers}`; every number: `{numbers}`.", ""]
    return "\n".join(lines)


def _readers_line(report: dict[str, Any]) -> str:
    line = f"Readers: {report['n_readers']} answered and analysed, of {report['n_names_entered']} name(s) entered"
    if report["without_answers"]:
        shown = ", ".join(report["without_answers"][:10]) + (", ..." if len(report["without_answers"]) > 10 else "")
        line += f"; {len(report['without_answers'])} without an answer ({shown})"
    if report["excluded_readers"]:
        line += "; left out on request: " + ", ".join(f"{r['name']} ({r['answers']} answers)" for r in report["excluded_readers"])
    return line + "."


def _kappa(entry: dict[str, Any]) -> str:
    return _num(entry["kappa"]) if entry["kappa"] is not None else f"n/a ({entry['reason']})"


def _figure(path: Path, report: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), dpi=110, layout="constrained")
    ax_reader, ax_conf, ax_cases = fig.subplots(1, 3, width_ratios=[1.2, 1, 1.3])
    rows = report["per_reader"]
    metrics = [("accuracy", "accuracy", "C0"), ("sensitivity", "sensitivity", "C1"), ("specificity", "specificity", "C2")]
    x = np.arange(len(rows))
    for offset, (field, label, colour) in zip((-0.2, 0.0, 0.2), metrics):
        values = [r[field]["value"] if r[field]["value"] is not None else np.nan for r in rows]
        low = [r[field]["value"] - r[field]["low"] if r[field]["value"] is not None else 0 for r in rows]
        high = [r[field]["high"] - r[field]["value"] if r[field]["value"] is not None else 0 for r in rows]
        ax_reader.errorbar(x + offset, values, yerr=[low, high], fmt="o", color=colour, capsize=3, label=label)
    ax_reader.axhline(0.5, color="grey", lw=0.8, ls="--")
    names = ["pooled" if r["reader"] == POOLED else r["reader"] if len(r["reader"]) <= 14 else r["reader"][:13] + "…" for r in rows]
    ax_reader.set_xticks(x, names, rotation=20, ha="right")
    ax_reader.set_ylim(-0.02, 1.2)
    ax_reader.set_yticks(np.linspace(0, 1, 6))
    ax_reader.set_ylabel("proportion (95 % Wilson interval)")
    ax_reader.set_title("Per reader (synthetic = positive)")
    ax_reader.legend(fontsize=8, loc="upper center", ncol=3)

    levels = [r for r in report["by_confidence"]]
    readers = [r["reader"] for r in rows if r["reader"] != POOLED]
    for i, name in enumerate(readers):
        points = [(r["confidence"], r["per_reader"][name]["value"]) for r in levels if name in r["per_reader"]]
        if points:
            ax_conf.plot(*zip(*points), "-o", ms=3, lw=0.8, alpha=0.6, color=f"C{i % 10}", label=name[:14])
    pooled = [(r["confidence"], r["value"], r["low"], r["high"]) for r in levels if r["n"]]
    if pooled:
        c, v, lo, hi = (np.array(a, dtype=float) for a in zip(*pooled))
        ax_conf.errorbar(c, v, yerr=[v - lo, hi - v], fmt="s-", color="black", capsize=3, label="pooled")
    ax_conf.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_conf.set_xticks(range(1, 6))
    ax_conf.set_xlabel("confidence (1 = guess, 5 = certain)")
    ax_conf.set_ylabel("accuracy of decided answers")
    ax_conf.set_ylim(-0.02, 1.2)
    ax_conf.set_yticks(np.linspace(0, 1, 6))
    ax_conf.set_title("Accuracy against confidence")
    ax_conf.legend(fontsize=7, loc="upper center", ncol=4)

    fooled = [r for r in report["fooled_most"] if r["answers"]]
    names = [r["case_id"] for r in fooled]
    real_share = np.array([r["said_real"] / r["answers"] for r in fooled])
    unsure_share = np.array([r["said_unsure"] / r["answers"] for r in fooled])
    ax_cases.bar(range(len(fooled)), real_share, color="C3", label="called real (fooled)")
    ax_cases.bar(range(len(fooled)), unsure_share, bottom=real_share, color="C7", label="unsure")
    ax_cases.set_xticks(range(len(fooled)), names, rotation=90, fontsize=6 if len(fooled) > 20 else 8)
    ax_cases.set_ylim(0, 1.2)
    ax_cases.set_yticks(np.linspace(0, 1, 6))
    ax_cases.set_ylabel("share of readers")
    ax_cases.set_title("Synthetic cases, most convincing first")
    ax_cases.legend(fontsize=8, loc="upper center", ncol=2)
    _io.save_figure(path, fig)
