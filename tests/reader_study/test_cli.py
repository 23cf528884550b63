"""synthbrain reader-study create | check | serve | close | analyse from the command line."""

from __future__ import annotations

import json

import pytest

from synthbrain import BrainGenerator
from synthbrain.cli import main
from synthbrain.reader_study.store import AnswerStore
from synthbrain.reader_study.study import load_study
from tests.helpers import tiny_generator


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_create_check_close_analyse(sources, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real, synthetic = str(sources["real"]), str(sources["synthetic"])
    assert main(["reader-study", "create", "--real", real, "--synthetic", synthetic, "--n", "6", "--seed", "2", "--out", "study"]) == 0
    out = capsys.readouterr().out
    assert "study study: 3 real + 3 synthetic cases on 16x16x16 voxels of 4 mm" in out and "no cue found" in out
    assert str(tmp_path) not in out  # paths as given, relative to where the command ran
    assert main(["reader-study", "check", "study"]) == 0 and "key/cue_check.md" in capsys.readouterr().out

    assert main(["reader-study", "analyse", "study"]) == 2
    assert _error_line(capsys).startswith("synthbrain reader-study: error: study='study': no answers.sqlite yet")
    meta = load_study(tmp_path / "study")
    store = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    token, reader = store.start_session("Reader One")
    for case_id in reader.case_order:
        store.record_answer(token, case_id, "synthetic", 5)
    assert main(["reader-study", "close", "study"]) == 0 and "closed at" in capsys.readouterr().out
    assert store.is_closed()
    for name in ("Test Reader", "Nobody"):  # entered a name, answered nothing
        store.start_session(name)
    assert main(["reader-study", "analyze", "study", "--out", "report"]) == 0
    out = capsys.readouterr().out
    assert "Reader One: accuracy 0.50" in out and "1 reader(s) analysed, of 3 name(s) entered" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["closed"] is True and report["study"] == "study" and report["without_answers"] == ["Test Reader", "Nobody"]
    assert main(["reader-study", "analyse", "study", "--exclude-reader", "nobody", "--min-shared-cases", "3", "--max-seconds", "60"]) == 0
    assert "left out: Nobody (0 answers)" in capsys.readouterr().out
    report = json.loads((tmp_path / "study" / "analysis" / "report.json").read_text())
    assert report["agreement"]["min_shared_cases"] == 3 and report["times"]["max_seconds"] == 60.0
    assert main(["reader-study", "analyse", "study", "--exclude-reader", "Dr Who"]) == 2
    assert "exclude_readers: no reader named 'Dr Who'" in _error_line(capsys)
    assert main(["reader-study", "analyse", "study", "--min-shared-cases", "1"]) == 2
    assert "min_shared_cases=1; allowed: an integer >= 2" in _error_line(capsys)


def test_create_from_a_model(sources, tmp_path, monkeypatch, capsys):
    loaded = []

    def fake_from_pretrained(cls, name, **kwargs):
        loaded.append(name)
        return tiny_generator(distribution=True, steps=2)

    monkeypatch.setattr(BrainGenerator, "from_pretrained", classmethod(fake_from_pretrained))
    args = ["reader-study", "create", "--real", str(sources["real"]), "--model", "tiny", "--n", "4", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    key = json.loads((tmp_path / "s" / "key" / "key.json").read_text())
    assert loaded == ["tiny"] and key["model"] == "tiny" and key["sampling"] == {"steps": 2}
    assert sum(c["truth"] == "synthetic" for c in key["cases"]) == 2


def test_bad_input_is_one_line_exit_2(sources, study, tmp_path, capsys):
    real, synthetic = str(sources["real"]), str(sources["synthetic"])
    base = ["reader-study", "create", "--real", real, "--synthetic", synthetic, "--out", str(tmp_path / "x")]
    assert main([*base, "--n", "1"]) == 2
    assert "synthbrain reader-study: error: n=1; allowed: an integer >= 2" in _error_line(capsys)
    assert main([*base, "--synthetic-fraction", "1.5"]) == 2 and "synthetic_fraction=1.5" in _error_line(capsys)
    assert main([*base, "--steps", "3"]) == 2 and "apply to --model only" in _error_line(capsys)
    with pytest.raises(SystemExit) as info:
        main([*base, "--model", "default"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    (study / "cases" / sorted(p.name for p in (study / "cases").iterdir())[0]).unlink()
    assert main(["reader-study", "serve", str(study), "--port", "0"]) == 2  # refused before anything is served
    assert "is incomplete: missing 1 case file(s)" in _error_line(capsys)
    assert main(["reader-study", "serve", str(tmp_path / "none")]) == 2 and "no such folder" in _error_line(capsys)


def test_help_lists_the_reader_study(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "reader-study" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["reader-study", "create", "--help"])
    text = capsys.readouterr().out
    assert "--synthetic-fraction" in text and "--model" in text


def test_create_from_a_model_takes_and_records_every_sampling_flag(sources, tmp_path, monkeypatch):
    asked = []

    def fake_from_pretrained(cls, name, **kwargs):
        generator = tiny_generator(distribution=True, steps=2)
        real_generate = generator.generate
        generator.generate = lambda **kw: asked.append(kw) or real_generate(**kw)
        return generator

    monkeypatch.setattr(BrainGenerator, "from_pretrained", classmethod(fake_from_pretrained))
    args = ["reader-study", "create", "--real", str(sources["real"]), "--model", "tiny", "--n", "4", "--steps", "20"]
    flags = ["--timestep-spacing", "leading", "--qc", "measure", "--sampler", "ddim", "--guidance-scale", "1"]
    assert main([*args, *flags, "--out", str(tmp_path / "s")]) == 0
    sampling = {"steps": 20, "timestep_spacing": "leading", "qc": "measure", "sampler": "ddim", "guidance_scale": 1.0}
    assert asked[0].items() >= sampling.items()
    assert json.loads((tmp_path / "s" / "key" / "key.json").read_text())["sampling"] == sampling


def test_create_checks_the_sampling_flags_as_generate_does(sources, tmp_path, capsys):
    base = ["reader-study", "create", "--real", str(sources["real"]), "--model", "tiny", "--out", str(tmp_path / "x")]
    for flag, value in (("--sampler", "euler"), ("--timestep-spacing", "sideways"), ("--qc", "maybe")):
        with pytest.raises(SystemExit) as info:
            main([*base, flag, value])
        assert info.value.code == 2 and f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err
    assert main([*base, "--steps", "0"]) == 2 and "steps=0; allowed: an integer >= 1" in _error_line(capsys)
    assert main([*base, "--guidance-scale", "-1"]) == 2 and "guidance_scale=-1.0; allowed: >= 0" in _error_line(capsys)
    synthetic = ["reader-study", "create", "--real", str(sources["real"]), "--synthetic", str(sources["synthetic"])]
    assert main([*synthetic, "--timestep-spacing", "leading", "--out", str(tmp_path / "y")]) == 2
    assert "apply to --model only" in _error_line(capsys)
