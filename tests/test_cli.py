import json

import pandas as pd
import pytest

from synthbrain.cli import main
from tests.helpers import make_prepared, rigid_matrix, template_subject


@pytest.fixture(scope="module")
def template_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    template_subject(root, "c01", rigid_matrix([5, 0, 0], [0, 3, 0]))
    pd.DataFrame({"subject_id": ["c01"], "age": [40.0], "sex": ["M"]}).to_csv(root / "participants.csv", index=False)
    return root


def test_cli_prepares_and_reports_bad_input(template_folder, tmp_path, capsys):
    args = [
        "prepare",
        "--images",
        str(template_folder / "images"),
        "--labels",
        str(template_folder / "labels"),
        "--table",
        str(template_folder / "participants.csv"),
        "--spacing",
        "4",
        "--registration-spacing",
        "4",
        "--workers",
        "1",
    ]
    assert main([*args, "--out", str(tmp_path / "ok"), "--limit", "1"]) == 0
    assert "dice_template" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "bad"), "--id-column", "participant"]) == 2
    assert "id_column='participant'" in capsys.readouterr().err
    assert main([*args[:-6], "--spacing", "40", "--out", str(tmp_path / "bad")]) == 2
    assert "spacing=40.0" in capsys.readouterr().err


def test_cli_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and "synthbrain 0." in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "--registration" in capsys.readouterr().out


def test_cli_needs_an_input(tmp_path, capsys):
    with pytest.raises(SystemExit, match="give --images and --table"):
        main(["prepare", "--out", str(tmp_path / "x")])


def test_cli_trains_both_stages_and_caches_latents(tmp_path, capsys):
    prepared = make_prepared(tmp_path / "prepared", n=4)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "autoencoder",
                "--prepared",
                str(prepared),
                "--run",
                str(run / "ae"),
                "--channels",
                "8,16",
                "--groups",
                "8",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--downsample",
                "2",
            ]
        )
        == 0
    )
    assert (run / "ae" / "autoencoder" / "model.safetensors").is_file()
    latents = json.loads((run / "ae" / "latents" / "latents.json").read_text())
    assert latents["image_grid"]["shape"] == [8, 8, 8] and latents["shape"] == [3, 4, 4, 4]
    # a sampling default the generator could not take is refused before training, not after it
    refused = ["train", "diffusion", "--latents", str(run / "ae" / "latents"), "--run", str(run / "refused"), "--steps", "2"]
    for flags, said in (
        (["--default-sampler", "dpm_solver", "--default-spacing", "trailing"], "--default-sampler='dpm_solver'; allowed: ['ddpm'"),
        (["--default-spacing", "even"], "--default-spacing='even'; allowed: ['leading'"),
        (["--default-steps", "0"], "--default-steps=0; allowed: an integer >= 1"),
    ):
        assert main([*refused, *flags]) == 2
        assert said in capsys.readouterr().err
    assert not (run / "refused").exists()
    assert (
        main(
            [
                "train",
                "diffusion",
                "--latents",
                str(run / "ae" / "latents"),
                "--run",
                str(run / "dm"),
                "--channels",
                "16,32",
                "--attention",
                "0,1",
                "--groups",
                "8",
                "--head-channels",
                "16",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--default-steps",
                "3",
                "--default-guidance-scale",
                "2",
            ]
        )
        == 0
    )
    assert (run / "dm" / "unet" / "model.safetensors").is_file() and (run / "dm" / "scheduler" / "config.json").is_file()
    index = json.loads((run / "dm" / "generator" / "synthbrain_generator.json").read_text())
    assert index["defaults"]["steps"] == 3 and index["defaults"]["guidance_scale"] == 2.0
    # The whole chain: prepared cohort -> autoencoder -> latents -> diffusion -> generator -> volumes on disk.
    assert (
        main(
            [
                "generate",
                "--model",
                str(run / "dm" / "generator"),
                "-n",
                "2",
                "--age",
                "40",
                "--sex",
                "M",
                "--ventricular-volume",
                "10",
                "--brain-volume",
                "200",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--extrapolate",
                "--out",
                str(run / "synth"),
            ]
        )
        == 0
    )
    from synthbrain.generator import BrainGenerator

    generator = BrainGenerator.from_pretrained(run / "dm" / "generator")
    assert generator.image_grid.shape == (8, 8, 8) and generator.label_classes[1] == "ventricles"
    assert len(list((run / "synth").glob("sub-*/anat/*_dseg.nii.gz"))) == 2
    assert generator.distribution is not None  # fitted on the training table: covariates not given are drawn
    assert (
        main(
            [
                "generate",
                "--model",
                str(run / "dm" / "generator"),
                "-n",
                "2",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--out",
                str(run / "drawn"),
            ]
        )
        == 0
    )
    drawn = pd.read_csv(run / "drawn" / "participants.tsv", sep="\t")
    assert drawn[["sex", "age", "ventricular_volume", "brain_volume"]].notna().all().all()
    assert main(["train", "diffusion", "--latents", str(tmp_path), "--run", str(run / "x")]) == 2
    assert "no latents.json" in capsys.readouterr().err


def test_cli_prepare_reads_one_bids_session_and_the_chosen_header_transform(template_folder, tmp_path, capsys):
    from tests.helpers import bids_from_template_subjects

    root = bids_from_template_subjects(template_folder, tmp_path / "bids", {"ses-1": "c01", "ses-2": "c01"}, mirror_sform=True)
    args = ["prepare", "--bids", str(root), "--spacing", "4", "--registration-spacing", "4", "--workers", "1", "--session", "2"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "their handedness differs" in err and "--trust-header" in err
    assert main([*args, "--trust-header", "qform", "--out", str(tmp_path / "ok")]) == 0
    table = pd.read_csv(tmp_path / "ok" / "participants.tsv", sep="\t")
    expected = [["sub-01", "sub-01", "ses-2", 62.5, "F"]]  # the age at ses-2, from sub-01_sessions.tsv
    assert table[["subject_id", "participant_id", "session_id", "age", "sex"]].values.tolist() == expected
    record = json.loads((tmp_path / "ok" / "subjects" / "sub-01" / "record.json").read_text())
    assert record["source_image"].endswith("sub-01_ses-2_T1w.nii.gz") and record["header"]["image"]["source"] == "qform"
    with pytest.raises(SystemExit, match="--session 2: sessions are read from a BIDS dataset"):
        main(["prepare", "--images", str(template_folder / "images"), "--table", "t.csv", "--session", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    help_text = capsys.readouterr().out
    assert "--session" in help_text and "--trust-header {sform,qform}" in help_text


def test_no_arguments_print_the_help_and_help_loads_no_heavy_library(capsys):
    import subprocess
    import sys

    assert main([]) == 0 and "usage: synthbrain" in capsys.readouterr().out
    code = (
        "import sys; from synthbrain.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'monai', 'torchio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_shows_defaults_and_errors_speak_the_flags(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "-n N                  number of volumes (default: 1)" in text and "--batch-size BATCH_SIZE" in text
    assert "(default: 4)" in text and "--timestep-spacing" in text
    assert main(["generate", "--age", "200", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "pass --extrapolate to allow them" in err and "extrapolate=True" not in err


def test_ctrl_c_prints_one_line(monkeypatch, capsys, tmp_path):
    import synthbrain.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_generate", interrupted)
    assert main(["generate", "--out", str(tmp_path / "x")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("synthbrain generate: interrupted; outputs are written atomically")


def test_cli_generate_passes_every_setting_on(tmp_path, capsys):
    """Each flag of synthbrain generate reaches generation (the provenance records what generate
    used, the seeds what it drew from), and with --shards the dataset that writes them (its
    definition); --raw, which the shards cannot hold, is refused with them rather than dropped."""
    from synthbrain.datasets import Fixed, SyntheticBrainDataset, volume_seed
    from tests.helpers import tiny_generator

    generator = tiny_generator(distribution=True, steps=3)
    model = generator.save_pretrained(tmp_path / "model")
    settings = dict(steps=4, sampler="dpm++2m", guidance_scale=2.0, timestep_spacing="linspace")
    flags = ["--steps", "4", "--sampler", "dpm++2m", "--guidance-scale", "2", "--timestep-spacing", "linspace", "--seed", "5"]
    covariates = {"age": 95.0, "sex": "F", "ventricular_volume": 20.0, "brain_volume": 1200.0}  # 95: outside the fitted ages
    given = ["--age", "95", "--sex", "F", "--ventricular-volume", "20", "--brain-volume", "1200", "--extrapolate"]
    common = ["generate", "--model", str(model), "-n", "2", *given, "--device", "cpu", *flags]
    assert main([*common, "--raw", "--out", str(tmp_path / "volumes")]) == 0
    provenance = json.loads((tmp_path / "volumes" / "provenance.json").read_text())
    assert {k: provenance[k] for k in (*settings, "raw", "extrapolate")} == {**settings, "raw": True, "extrapolate": True}
    assert sorted(provenance["subjects"].values()) == sorted(volume_seed(5, i) for i in range(2))
    assert (pd.read_csv(tmp_path / "volumes" / "participants.tsv", sep="\t")["age"] == 95.0).all()
    assert main([*common, "--shards", "--out", str(tmp_path / "shards")]) == 0
    dataset = SyntheticBrainDataset(2, Fixed(**covariates), generator, seed=5, chunk_size=4, device="cpu", extrapolate=True, **settings)
    written = json.loads((tmp_path / "shards" / "dataset.json").read_text())
    assert {k: v for k, v in written.items() if k != "model"} == {k: v for k, v in dataset.definition().items() if k != "model"}
    capsys.readouterr()
    assert main([*common, "--raw", "--shards", "--out", str(tmp_path / "raw-shards")]) == 2
    assert "--raw with --shards" in capsys.readouterr().err


def _subcommands(parser) -> dict:
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_train_flags_take_every_default_from_the_settings_they_fill():
    """Issue 33: a training default is declared once, in its dataclass (or function); the flags read it."""
    from synthbrain.autoencoder.model import AutoencoderConfig
    from synthbrain.autoencoder.train import AutoencoderTraining
    from synthbrain.cli import _autoencoder_settings, _Default, _diffusion_settings, _resolve_defaults, build_parser
    from synthbrain.diffusion.model import DiffusionConfig
    from synthbrain.diffusion.train import DiffusionTraining
    from synthbrain.samplers.schedule import NoiseSchedule

    parser = build_parser()
    ae = _resolve_defaults(parser.parse_args(["train", "autoencoder", "--prepared", "p", "--run", "r"]))
    assert _autoencoder_settings(ae, 8) == (AutoencoderConfig(num_classes=8), AutoencoderTraining())
    assert ae.downsample == 1 and ae.mirror_latents is False  # train_autoencoder's and cache_latents' parameter defaults
    dm = _resolve_defaults(parser.parse_args(["train", "diffusion", "--latents", "l", "--run", "r"]))
    assert _diffusion_settings(dm, 3, 4) == (DiffusionConfig(latent_channels=3, condition_dim=4), DiffusionTraining(), NoiseSchedule())
    # no literal default left in cli.py: every setting's flag names its owner's field (which exists)
    own = {"help", "prepared", "run", "latents", "device"}
    for stage in _subcommands(_subcommands(parser)["train"]).values():
        for action in stage._actions:
            if action.dest not in own and not action.dest.startswith("default_"):  # default_*: the model's sampling defaults
                assert isinstance(action.default, _Default), action.dest
                action.default.value()
    # and a value given on the command line reaches the settings
    given = ["train", "autoencoder", "--prepared", "p", "--run", "r", "--steps", "7", "--patch-size", "8", "--adaptive-adversarial-weight"]
    config, training = _autoencoder_settings(_resolve_defaults(parser.parse_args(given)), 0)
    assert (training.steps, training.patch_size, training.adaptive_adversarial_weight, config.num_classes) == (7, (8, 8, 8), True, 0)
    _, training = _autoencoder_settings(_resolve_defaults(parser.parse_args([*given, "--labels-dice-weight", "0.5"])), 0)
    assert training.weights.labels_dice == 0.5
    with pytest.raises(ValueError, match="weights.labels_dice=nan"):
        _autoencoder_settings(_resolve_defaults(parser.parse_args([*given, "--labels-dice-weight", "nan"])), 0)
