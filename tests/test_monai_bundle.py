"""The released reference model's MONAI bundle: strict old-key loading, weights_only reading, and
generation equal to MONAI core's networks driven by a hand-written DDIM loop at the released timesteps.

No download is possible in tests, so bundles are built here: random weights, the reference
architecture at small channel counts (the full size in the slow test), saved with the old
``generative`` package's key names, as the released files are."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from synthbrain.autoencoder.model import BrainAutoencoder
from synthbrain.cli import main
from synthbrain.diffusion.model import ConditionalUNet
from synthbrain.generator import INDEX, BrainGenerator
from synthbrain.grid import Grid
from synthbrain.monai_bundle import (
    HUB_ID,
    REFERENCE_AUTOENCODER,
    REFERENCE_UNET,
    autoencoder_config,
    convert_bundle,
    load_bundle,
    map_old_keys,
    new_key,
    read_state_dict,
    reference_schema,
    unet_config,
)
from synthbrain.preprocessing.template import make_grid
from tests.helpers import randomised

# The network definitions of the released bundle's configs/inference.json (MONAI model zoo, version 1.0.0).
PAPER_AUTOENCODER_DEF = {
    "_target_": "monai.networks.nets.AutoencoderKL",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 3,
    "channels": [64, 128, 128, 128],
    "num_res_blocks": 2,
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
    "attention_levels": [False, False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}
PAPER_UNET_DEF = {
    "_target_": "monai.networks.nets.DiffusionModelUNet",
    "spatial_dims": 3,
    "in_channels": 7,
    "out_channels": 3,
    "channels": [256, 512, 768],
    "num_res_blocks": 2,
    "attention_levels": [False, True, True],
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
    "resblock_updown": True,
    "num_head_channels": [0, 512, 768],
    "with_conditioning": True,
    "transformer_num_layers": 1,
    "cross_attention_dim": 4,
    "upcast_attention": True,
    "use_flash_attention": False,
}
# The same structure at small channel counts: 4 autoencoder levels, 3 UNet levels with one-head attention on the last two.
SMALL_AUTOENCODER_DEF = {**PAPER_AUTOENCODER_DEF, "channels": [8, 16, 16, 16], "norm_num_groups": 8}
SMALL_UNET_DEF = {**PAPER_UNET_DEF, "channels": [16, 32, 48], "num_head_channels": [0, 32, 48], "norm_num_groups": 8}
SMALL_GRID = Grid((32, 64, 32), 1.0, (-15.5, -48.5, -10.5))  # latent 4 x 8 x 4
RELEASED_TIMESTEPS = list(range(980, -1, -20))  # 980, 960, ..., 0
QUERY = {"sex": ["F", "M"], "age": [44.0, 82.0], "ventricular_volume": [0.2, 0.7], "brain_volume": [0.4, 0.55]}
QUERY_CONDITION = torch.tensor([[0.0, 0.0, 0.2, 0.4], [1.0, 1.0, 0.7, 0.55]])  # as the bundle's sampler takes it


def monai_networks(autoencoder_def: dict, unet_def: dict, seed: int = 0) -> tuple[AutoencoderKL, DiffusionModelUNet]:
    """MONAI core networks built from bundle definitions, with random weights everywhere (also where MONAI zero-initialises)."""
    torch.manual_seed(seed)
    autoencoder = AutoencoderKL(**{k: v for k, v in autoencoder_def.items() if k != "_target_"})
    unet = DiffusionModelUNet(**{k: v for k, v in unet_def.items() if k != "_target_"})
    return randomised(autoencoder).eval(), randomised(unet).eval()


def old_key(key: str) -> str:
    """MONAI core name -> the generative package's name (checked against that package in test_old_names_match_the_generative_package)."""
    key = re.sub(r"\.transformer_blocks\.(\d+)\.attn([12])\.out_proj\.", r".transformer_blocks.\1.attn\2.to_out.0.", key)
    key = re.sub(r"^(decoder\.blocks\.\d+|(?:.*\.)?up_blocks\.\d+\.upsampler)\.postconv\.", r"\1.conv.", key)
    key = re.sub(r"\.attn\.out_proj\.", ".proj_attn.", key)
    return re.sub(r"\.attn\.(to_[qkv])\.", r".\1.", key)


def old_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {old_key(k): v.clone() for k, v in model.state_dict().items()}


def write_bundle(folder: Path, autoencoder, unet, autoencoder_def: dict, unet_def: dict, names=("autoencoder.pt", "model.pt")) -> Path:
    """A bundle folder as released: configs/inference.json (abridged) and old-key state dicts under models/."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    config = {"load_old": 1, "autoencoder_def": autoencoder_def, "network_def": "@autoencoder_def", "diffusion_def": unet_def}
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    torch.save(old_state_dict(autoencoder), folder / "models" / names[0])
    torch.save(old_state_dict(unet), folder / "models" / names[1])
    return folder


@torch.no_grad()
def reference_sample(autoencoder: AutoencoderKL, unet: DiffusionModelUNet, noise: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The bundle's sampling written out: DDIM, eta 0, at 980, 960, ..., 0; scaled-linear betas 0.0015-0.0205;
    epsilon prediction; the condition concatenated to the latent and as the (B, 1, 4) cross-attention context."""
    betas = torch.linspace(0.0015**0.5, 0.0205**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    x = noise
    concat = condition[:, :, None, None, None].expand(-1, -1, *noise.shape[2:]).to(noise)
    context = condition[:, None, :].to(noise)
    for t in RELEASED_TIMESTEPS:
        eps = unet(torch.cat([x, concat], dim=1), timesteps=torch.full((len(x),), t, dtype=torch.long, device=x.device), context=context)
        abar = float(alphas_cumprod[t])
        abar_prev = float(alphas_cumprod[t - 20]) if t >= 20 else 1.0
        x0 = (x - (1 - abar) ** 0.5 * eps) / abar**0.5
        x = abar_prev**0.5 * x0 + (1 - abar_prev) ** 0.5 * eps
    return autoencoder.decode_stage_2_outputs(x)


def seeded_noise(latent_shape, seeds) -> torch.Tensor:
    return torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    autoencoder, unet = monai_networks(SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF)
    folder = write_bundle(tmp_path_factory.mktemp("bundle") / BUNDLE_FOLDER, autoencoder, unet, SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF)
    return folder, autoencoder, unet


BUNDLE_FOLDER = "brain_image_synthesis_latent_diffusion_model"


def assert_same_weights(ours: torch.nn.Module, monai_net: torch.nn.Module) -> None:
    expected = monai_net.state_dict()
    found = ours.state_dict()
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(found[key], value), key


# ---------------------------------------------------------------------------------------------- the reference


def test_generate_equals_monai_core_networks_with_a_hand_written_ddim_loop(small):
    folder, autoencoder, unet = small
    generator = BrainGenerator.from_parts(load_bundle(folder, image_grid=SMALL_GRID))
    assert generator.schedule.timesteps(50, "leading") == RELEASED_TIMESTEPS and len(RELEASED_TIMESTEPS) == 50
    assert_same_weights(generator.autoencoder.net, autoencoder)
    assert_same_weights(generator.unet.net, unet)
    out = generator.generate(QUERY, seed=[3, 4], batch_size=2)
    reference = reference_sample(autoencoder, unet, seeded_noise(generator.latent_shape, [3, 4]), QUERY_CONDITION)
    assert out.images.shape == reference.shape == (2, 1, 32, 64, 32) and out.labels is None
    inside = ((reference > 0) & (reference < 1)).float().mean()
    assert inside > 0.2, "the comparison would be weak: most reference voxels fall outside [0, 1]"
    torch.testing.assert_close(out.images, reference.clamp(0, 1), rtol=1e-4, atol=1e-5)
    assert out.provenance["sampler"] == "ddim" and out.provenance["steps"] == 50 and out.provenance["model"]["format"] == "monai-bundle"


def test_key_mapping_equals_monai_core_load_old_state_dict(small):
    folder, autoencoder, unet = small
    for monai_net, name in ((autoencoder, "autoencoder.pt"), (unet, "model.pt")):
        old = read_state_dict(folder / "models" / name)
        assert any(new_key(k) != k for k in old), "the bundle should carry old names"
        reference = copy.deepcopy(monai_net)
        for p in reference.parameters():
            p.data.zero_()
        reference.load_old_state_dict(dict(old))
        mapped = map_old_keys(old, monai_net.state_dict(), what=name)
        assert mapped.keys() == reference.state_dict().keys()
        for key, value in reference.state_dict().items():
            assert torch.equal(mapped[key], value), key


@pytest.mark.parametrize(
    "network",
    [
        lambda: AutoencoderKL(
            spatial_dims=3, in_channels=1, out_channels=1, channels=(8, 16, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8,
            attention_levels=(False, True, True), with_encoder_nonlocal_attn=True, with_decoder_nonlocal_attn=True,
        ),
        lambda: DiffusionModelUNet(
            spatial_dims=3, in_channels=1, out_channels=1, channels=(8, 16, 16), attention_levels=(False, True, True), num_res_blocks=1,
            num_head_channels=8, norm_num_groups=8, resblock_updown=False,
        ),
    ],
    ids=["autoencoder-self-attention", "unet-self-attention-upsampler-conv"],
)  # fmt: skip
def test_other_old_names_map_as_monai_core_maps_them(network):
    torch.manual_seed(1)
    model = randomised(network())
    old = old_state_dict(model)
    reference = network()
    reference.load_old_state_dict(dict(old))
    mapped = map_old_keys(old, reference.state_dict(), what="old")
    for key, value in reference.state_dict().items():
        assert torch.equal(mapped[key], value), key


def test_old_names_match_the_generative_package():
    """Where the old package is importable (PyPI monai-generative 0.2.x): the names written here are its names,
    and at full size its networks' keys map exactly onto synthbrain's reference networks (built on the meta device)."""
    try:
        from generative.networks.nets import AutoencoderKL as OldAutoencoderKL
        from generative.networks.nets import DiffusionModelUNet as OldDiffusionModelUNet
    except ImportError:
        pytest.skip("the generative package (PyPI monai-generative) is not installed")

    def old_arguments(definition):
        return {("num_channels" if k == "channels" else k): v for k, v in definition.items() if k != "_target_"}

    autoencoder, unet = monai_networks(SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF)
    pairs = (
        (OldAutoencoderKL(**old_arguments(SMALL_AUTOENCODER_DEF)), autoencoder),
        (OldDiffusionModelUNet(**old_arguments(SMALL_UNET_DEF)), unet),
    )
    for old_net, new_net in pairs:
        expected = {k: tuple(v.shape) for k, v in old_net.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in old_state_dict(new_net).items()} == expected
    with torch.device("meta"):
        full = (
            (OldAutoencoderKL(**old_arguments(PAPER_AUTOENCODER_DEF)), BrainAutoencoder(REFERENCE_AUTOENCODER).net),
            (OldDiffusionModelUNet(**old_arguments(PAPER_UNET_DEF)), ConditionalUNet(REFERENCE_UNET).net),
        )
        for old_net, ours in full:
            expected = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
            assert {new_key(k): tuple(v.shape) for k, v in old_net.state_dict().items()} == expected


def test_paper_definitions_give_the_reference_architecture():
    assert autoencoder_config(PAPER_AUTOENCODER_DEF) == REFERENCE_AUTOENCODER
    assert unet_config(PAPER_UNET_DEF) == REFERENCE_UNET
    generative_style = {("num_channels" if k == "channels" else k): v for k, v in PAPER_UNET_DEF.items()}
    assert unet_config({**generative_style, "_target_": "generative.networks.nets.DiffusionModelUNet"}) == REFERENCE_UNET
    assert REFERENCE_UNET.head_channels == (0, 512, 768)


def test_per_level_head_channels_round_trip_and_are_checked():
    from synthbrain.diffusion.model import DiffusionConfig

    saved = json.loads(json.dumps(REFERENCE_UNET.to_dict()))
    assert saved["num_head_channels"] == [0, 512, 768] and DiffusionConfig.from_dict(saved) == REFERENCE_UNET
    old_style = DiffusionConfig(channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8)
    assert DiffusionConfig.from_dict(json.loads(json.dumps(old_style.to_dict()))) == old_style and old_style.head_channels == (0, 16)
    for heads in ([0, 32], [0, 32, 48, 8], [0, 0, 48], [0, 5, 48]):
        with pytest.raises(ValueError, match=r"num_head_channels=\(.*\); allowed: an int, or one int per level"):
            DiffusionConfig(channels=(16, 32, 48), attention_levels=(False, True, True), num_head_channels=heads, norm_num_groups=8)


def test_reference_conditioning_and_defaults(small):
    schema = reference_schema()
    assert schema.names == ["sex", "age", "ventricular_volume", "brain_volume"]
    scaled = schema.normalize(
        {"sex": ["F", "M", "F"], "age": [44, 82, 63], "ventricular_volume": [0.0, 1.0, 0.3], "brain_volume": [0.5] * 3}
    )
    np.testing.assert_allclose(scaled, [[0, 0, 0, 0.5], [1, 1, 1, 0.5], [0, 0.5, 0.3, 0.5]], atol=1e-7)
    with pytest.raises(ValueError, match=r"'age': values \[43.0\] years are outside the fitted range \[44, 82\]"):
        schema.normalize({"sex": "F", "age": 43.0, "ventricular_volume": 0.3, "brain_volume": 0.5})
    with pytest.raises(ValueError, match=r"'ventricular_volume': values \[30.0\] fraction are outside"):
        schema.normalize({"sex": "F", "age": 60.0, "ventricular_volume": 30.0, "brain_volume": 0.5})
    generator = BrainGenerator.from_parts(load_bundle(small[0]))
    assert generator.image_grid == make_grid(1.0) and generator.image_grid.shape == (160, 224, 160)
    assert generator.latent_shape == (3, 20, 28, 20) and generator.latent_scale == 1.0
    assert generator.defaults == {"sampler": "ddim", "steps": 50, "guidance_scale": 1.0, "timestep_spacing": "leading", "qc": "measure"}
    with pytest.raises(ValueError, match="guidance_scale=3.*not trained with condition dropout"):  # no null condition
        generator.generate({"sex": "F", "age": 60, "ventricular_volume": 0.3, "brain_volume": 0.5}, guidance_scale=3.0)
    with pytest.raises(ValueError, match="no covariate distribution"):
        generator.generate({"sex": "F", "age": 60})


def test_written_nifti_has_the_1mm_mni_affine(tmp_path):
    tiny_ae = {**SMALL_AUTOENCODER_DEF, "channels": [4, 4, 4, 4], "norm_num_groups": 4, "num_res_blocks": 1}
    tiny_unet = {**SMALL_UNET_DEF, "channels": [8, 8, 8], "num_head_channels": [0, 8, 8], "norm_num_groups": 4, "num_res_blocks": 1}
    folder = write_bundle(tmp_path / "bundle", *monai_networks(tiny_ae, tiny_unet), tiny_ae, tiny_unet)
    query = {"sex": "M", "age": 70, "ventricular_volume": 0.3, "brain_volume": 0.5}
    out = BrainGenerator.from_pretrained(folder).generate(query, steps=2, timestep_spacing="trailing")
    written = out.save(tmp_path / "synth")
    t1 = nib.load(written / "sub-synth00000" / "anat" / "sub-synth00000_T1w.nii.gz")
    assert t1.shape == (160, 224, 160) and not (written / "sub-synth00000" / "anat" / "sub-synth00000_dseg.nii.gz").exists()
    np.testing.assert_allclose(t1.affine, make_grid(1.0).affine)
    np.testing.assert_allclose(np.diag(t1.affine)[:3], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(t1.affine[:3, :3] @ (np.array(t1.shape) - 1) / 2 + t1.affine[:3, 3], [0.0, -17.0, 5.0])  # MNI brain centre
    assert json.loads((written / "provenance.json").read_text())["space"] == "MNI152NLin2009aSym"


# ---------------------------------------------------------------------------------------------- refusals


def test_unknown_missing_renamed_or_misshapen_keys_are_refused(small, tmp_path):
    folder, autoencoder, unet = small
    good = read_state_dict(folder / "models" / "model.pt")
    expected = unet.state_dict()
    with pytest.raises(ValueError, match=r"1 unknown keys \['extra.weight'\] and 0 missing"):
        map_old_keys({**good, "extra.weight": torch.zeros(1)}, expected, what="model.pt")
    renamed = {(k.replace("to_out.0", "to_out.1") if "middle_block.attention.transformer_blocks.0.attn1.to_out.0.weight" in k else k): v
               for k, v in good.items()}  # fmt: skip
    with pytest.raises(ValueError, match=r"1 unknown keys .*attn1.to_out.1.weight.* and 1 missing keys .*attn1.out_proj.weight"):
        map_old_keys(renamed, expected, what="model.pt")
    missing = dict(good)
    del missing["out.2.conv.bias"]
    with pytest.raises(ValueError, match=r"0 unknown keys \[\] and 1 missing keys \['out.2.conv.bias'\]"):
        map_old_keys(missing, expected, what="model.pt")
    with pytest.raises(ValueError, match=r"shapes differ .*'out.2.conv.bias', \(4,\), \(3,\)"):
        map_old_keys({**good, "out.2.conv.bias": torch.zeros(4)}, expected, what="model.pt")
    new_name = "middle_block.attention.transformer_blocks.0.attn1.out_proj.weight"
    with pytest.raises(ValueError, match="both map to"):
        map_old_keys({**good, new_name: expected[new_name]}, expected, what="model.pt")
    # the same through the loader: a bundle whose UNet file carries an extra key
    bad = tmp_path / "bad"
    write_bundle(bad, autoencoder, unet, SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF)
    torch.save({**good, "extra.weight": torch.zeros(1)}, bad / "models" / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt: 1 unknown keys \['extra.weight'\]"):
        BrainGenerator.from_pretrained(bad)


EXECUTED: list[str] = []


def _record(text: str) -> None:
    EXECUTED.append(text)


class Payload:
    """Unpickling this would call _record: a stand-in for code hidden in a checkpoint."""

    def __reduce__(self):
        return (_record, ("unpickled and ran",))


def test_pickled_objects_are_never_unpickled(small, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil.pt: not readable with torch.load\(weights_only=True\)"):
        read_state_dict(path)
    assert EXECUTED == []
    torch.save({"weight": torch.zeros(2), "step": 7}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"entries \['step'\] are not name -> tensor"):
        read_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt: not readable"):
        read_state_dict(tmp_path / "broken.pt")
    bundle = write_bundle(tmp_path / "bundle", *small[1:], SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF)
    torch.save({**read_state_dict(bundle / "models" / "autoencoder.pt"), "payload": Payload()}, bundle / "models" / "autoencoder.pt")
    with pytest.raises(ValueError, match="weights_only"):
        BrainGenerator.from_pretrained(bundle)
    assert EXECUTED == []


def test_bundle_layouts_and_settings_that_cannot_be_reproduced_are_refused(small, tmp_path):
    _, autoencoder, unet = small
    older = write_bundle(
        tmp_path / "older", autoencoder, unet, SMALL_AUTOENCODER_DEF, SMALL_UNET_DEF, ("autoencoder.pth", "diffusion_model.pth")
    )
    assert_same_weights(load_bundle(older, image_grid=SMALL_GRID).unet.net, unet)
    (older / "models" / "diffusion_model.pth").unlink()
    with pytest.raises(ValueError, match=r"found \['autoencoder.pth'\]; expected one of the pairs"):
        load_bundle(older)
    for definitions, message in [
        (({**SMALL_AUTOENCODER_DEF, "attention_levels": [False, False, False, True]}, SMALL_UNET_DEF), "attention_levels="),
        ((SMALL_AUTOENCODER_DEF, {**SMALL_UNET_DEF, "upcast_attention": False}), "upcast_attention=False; synthbrain reproduces"),
        ((SMALL_AUTOENCODER_DEF, {**SMALL_UNET_DEF, "dropout": 0.1}), r"unknown settings \['dropout'\]"),
        ((SMALL_AUTOENCODER_DEF, {**SMALL_UNET_DEF, "channels": "$@base * 2"}), "is an expression"),
        ((SMALL_AUTOENCODER_DEF, {**SMALL_UNET_DEF, "_target_": "monai.networks.nets.SPADEDiffusionModelUNet"}), "_target_="),
    ]:
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        write_bundle(folder, autoencoder, unet, *definitions)
        with pytest.raises(ValueError, match=message):
            load_bundle(folder)
    with pytest.raises(ValueError, match=r"image_grid: shape \(32, 48, 32\) must be divisible by 32"):
        load_bundle(small[0], image_grid=Grid((32, 48, 32), 1.0, (0.0, 0.0, 0.0)))


# ---------------------------------------------------------------------------------------------- Hub and conversion


def hub_cache(root: Path, repo_id: str, bundle: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A Hugging Face cache (as snapshot_download leaves it) holding ``bundle`` at ``commit``, with refs/main -> commit."""
    import shutil

    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(bundle, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_hub_id_loads_the_bundle_from_the_local_cache_offline_at_a_pinned_revision(small, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, autoencoder, unet = small
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    cache = hub_cache(tmp_path / "hub", HUB_ID, folder, commit)
    for revision in (None, "main", commit):
        generator = BrainGenerator.from_pretrained(HUB_ID, revision=revision, cache_dir=cache)
        assert_same_weights(generator.unet.net, unet)
        assert generator.source["path"].endswith(f"snapshots/{commit}") and generator.source["format"] == "monai-bundle"
    with pytest.raises(ValueError, match=re.escape(f"name_or_path={HUB_ID!r}: not found in the local Hub cache")):
        BrainGenerator.from_pretrained(HUB_ID, revision="fedcba9876543210fedcba9876543210fedcba98", cache_dir=cache)


def test_convert_writes_a_synthbrain_folder_that_loads_the_same_model(small, tmp_path, capsys):
    folder, autoencoder, unet = small
    out = convert_bundle(folder, tmp_path / "converted")
    assert (out / INDEX).is_file() and (out / "unet" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    converted = BrainGenerator.from_pretrained(out)
    assert_same_weights(converted.autoencoder.net, autoencoder)
    assert_same_weights(converted.unet.net, unet)
    original = BrainGenerator.from_parts(load_bundle(folder))
    assert converted.schema == original.schema and converted.schedule == original.schedule
    assert converted.image_grid == original.image_grid and converted.defaults == original.defaults
    assert converted.unet.config == original.unet.config and converted.unet.config.num_head_channels == (0, 32, 48)
    record = json.loads((out / "conversion.json").read_text())
    assert record["format"] == "monai-bundle" and record["sha256"] == original.source["sha256"]
    with pytest.raises(ValueError, match="exists and is not empty"):
        convert_bundle(folder, out)
    assert main(["convert-monai", str(folder), str(out)]) == 2 and "exists and is not empty" in capsys.readouterr().err
    (out / "stale.txt").write_text("from before")
    assert main(["convert-monai", str(folder), str(out), "--overwrite"]) == 0
    assert (out / INDEX).is_file() and not (out / "stale.txt").exists()
    assert main(["convert-monai", str(tmp_path / "converted"), str(tmp_path / "again")]) == 2
    assert "is not a MONAI bundle" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.gpu
def test_full_size_generate_equals_the_monai_core_reference(tmp_path, monkeypatch):
    """The published architecture (13.8 M + 553 M parameters), 160 x 224 x 160, DDIM-50, on a GPU (about 175 TFLOP
    for the two routes: too long for a CPU). Float32 parity: TF32 off, so both routes round as float32 does."""
    device = "cuda"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    autoencoder, unet = monai_networks(PAPER_AUTOENCODER_DEF, PAPER_UNET_DEF)
    folder = write_bundle(tmp_path / "bundle", autoencoder, unet, PAPER_AUTOENCODER_DEF, PAPER_UNET_DEF)
    generator = BrainGenerator.from_pretrained(folder)
    assert generator.unet.config == REFERENCE_UNET and generator.autoencoder.config == REFERENCE_AUTOENCODER
    assert sum(p.numel() for p in generator.unet.parameters()) == sum(p.numel() for p in unet.parameters())
    generator.to(device)
    query = {k: v[:1] for k, v in QUERY.items()}
    out = generator.generate(query, seed=[5])
    noise = seeded_noise(generator.latent_shape, [5]).to(device)
    reference = reference_sample(autoencoder.to(device), unet.to(device), noise, QUERY_CONDITION[:1].to(device)).cpu()
    assert out.images.shape == reference.shape == (1, 1, 160, 224, 160)
    torch.testing.assert_close(out.images, reference.clamp(0, 1), rtol=1e-4, atol=1e-4)
