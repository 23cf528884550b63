import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.components import load_component, save_component
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig

TINY = AutoencoderConfig(num_classes=4, channels=(8, 16), norm_num_groups=8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = BrainAutoencoder(TINY)
    save_component(model, tmp_path / "ae")
    return model, tmp_path / "ae"


def test_round_trip_is_exact(saved):
    model, folder = saved
    loaded = load_component(BrainAutoencoder, AutoencoderConfig, folder)
    assert loaded.config == TINY
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    config = json.loads((folder / "config.json").read_text())
    assert config["class"] == "BrainAutoencoder" and config["synthbrain_version"]


def test_wrong_class_unknown_keys_and_missing_files_are_errors(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ValueError, match="class 'BrainAutoencoder'; expected 'ConditionalUNet'"):
        load_component(ConditionalUNet, DiffusionConfig, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dropout": 0.1}))
    with pytest.raises(ValueError, match=r"unknown keys \['dropout'\]"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
    with pytest.raises(ValueError, match=r"nowhere/config.json: missing; a component folder holds config.json"):
        load_component(BrainAutoencoder, AutoencoderConfig, tmp_path / "nowhere")


def test_missing_unexpected_misshaped_or_unreadable_weights_are_errors(saved):
    _, folder = saved
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "extra.weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model.safetensors: missing weights \[\], unexpected weights \['extra.weight'\]"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
    first = next(iter(weights))
    save_file({k: v for k, v in weights.items() if k != first}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"missing weights \['{re.escape(first)}'\], unexpected weights \[\]"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
    save_file({**weights, first: torch.zeros(3)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"wrong shape \['{re.escape(first)} \(3,\) \(expected"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)


def test_config_without_a_required_key_or_not_json_is_an_error(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    del config["channels"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: missing key 'channels'"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        load_component(BrainAutoencoder, AutoencoderConfig, folder)
