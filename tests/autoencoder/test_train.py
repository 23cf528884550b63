import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from synthbrain.autoencoder import train as train_module
from synthbrain.autoencoder.losses import AutoencoderLossWeights
from synthbrain.autoencoder.model import AutoencoderConfig
from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
from tests.helpers import make_prepared, subprocess_env

TINY = AutoencoderConfig(num_classes=8, channels=(8, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8)
STEPS = AutoencoderTraining(steps=6, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def test_trains_and_exports_a_component_folder(prepared, tmp_path):
    out = train_autoencoder(prepared, tmp_path / "run", TINY, STEPS, device="cpu", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["class"] == "BrainAutoencoder"
        and AutoencoderConfig.from_dict({k: v for k, v in config.items() if k not in ("class", "synthbrain_version")}) == TINY
    )
    weights = load_file(out / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6] and history[-1]["total"] < history[0]["total"]
    assert (tmp_path / "run" / "losses.png").read_bytes()[:4] == b"\x89PNG"


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(prepared, tmp_path, monkeypatch):
    reference = load_file(train_autoencoder(prepared, tmp_path / "a", TINY, STEPS, device="cpu", progress=False) / "model.safetensors")
    real_loss, calls = train_module.autoencoder_loss, []

    def dying_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # during step 4; the last checkpoint is from step 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "autoencoder_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(prepared, tmp_path / "b", TINY, STEPS, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "autoencoder_loss", real_loss)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed = load_file(train_autoencoder(prepared, tmp_path / "b", TINY, STEPS, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)


def test_other_configuration_in_the_same_run_folder_is_refused_but_more_steps_continue(prepared, tmp_path):
    train_autoencoder(prepared, tmp_path / "run", TINY, AutoencoderTraining(steps=1, batch_size=2), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"run_dir=.* another configuration \(differing: \['training\.learning_rate'\]\)"):
        train_autoencoder(
            prepared, tmp_path / "run", TINY, AutoencoderTraining(steps=2, batch_size=2, learning_rate=1e-3), device="cpu", progress=False
        )
    train_autoencoder(prepared, tmp_path / "run", TINY, AutoencoderTraining(steps=3, batch_size=2), device="cpu", progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3  # continued from step 1
    # a run started before the Dice term existed (its record has no labels_dice) continues without it, not with it
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    del record["training"]["weights"]["labels_dice"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    train_autoencoder(prepared, tmp_path / "run", TINY, AutoencoderTraining(steps=4, batch_size=2), device="cpu", progress=False)
    with_dice = AutoencoderTraining(steps=5, batch_size=2, weights=AutoencoderLossWeights(labels_dice=1.0))
    with pytest.raises(ValueError, match=r"differing: \['training\.weights\.labels_dice'\]"):
        train_autoencoder(prepared, tmp_path / "run", TINY, with_dice, device="cpu", progress=False)


def test_bad_arguments_are_named(prepared, tmp_path):
    with pytest.raises(ValueError, match="num_classes=4"):
        train_autoencoder(
            prepared,
            tmp_path / "x",
            AutoencoderConfig(num_classes=4, channels=(8, 16), norm_num_groups=8),
            STEPS,
            device="cpu",
            progress=False,
        )
    with pytest.raises(ValueError, match="batch_size=8"):
        train_autoencoder(prepared, tmp_path / "x", TINY, AutoencoderTraining(batch_size=8), device="cpu", progress=False)
    with pytest.raises(ValueError, match="steps=0"):
        AutoencoderTraining(steps=0)


def test_two_processes_with_torchrun_and_gloo(prepared, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(f"""
        from synthbrain.autoencoder.model import AutoencoderConfig
        from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
        config = AutoencoderConfig(**{TINY.to_dict()!r} | {{"channels": tuple({list(TINY.channels)!r})}})
        train_autoencoder({str(prepared)!r}, {str(tmp_path / "ddp")!r}, config,
                          AutoencoderTraining(steps=3, batch_size=1, checkpoint_every=2, log_every=1), device="cpu", progress=False)
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert len(torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["generators"]["noise"]) == 2
    assert (tmp_path / "ddp" / "autoencoder" / "model.safetensors").is_file()
