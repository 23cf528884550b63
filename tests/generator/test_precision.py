"""The generator's precision and device, with diffusers' names: ``from_pretrained(..., device=, torch_dtype=)``,
weights stored in the dtype asked for, a saved half-precision model read back in it."""

import pytest
import torch
from safetensors import safe_open

from synthbrain import _io
from synthbrain.generator import INDEX, BrainGenerator
from synthbrain.generator import model as generator_model
from tests.helpers import tiny_generator

QUERY = {"sex": ["F", "M"], "age": [30.0, 70.0], "ventricular_volume": 20.0, "brain_volume": 1200.0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_generator().save_pretrained(tmp_path_factory.mktemp("precision") / "model")


def _weights(generator):
    return [*generator.autoencoder.parameters(), *generator.unet.parameters()]


def test_a_bfloat16_generator_stores_every_weight_in_bfloat16_and_gives_float32_volumes(folder, monkeypatch):
    float32 = BrainGenerator.from_pretrained(folder)
    generator = BrainGenerator.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert generator.dtype == torch.bfloat16 and {p.dtype for p in _weights(generator)} == {torch.bfloat16}
    # the stored values are the float32 weights rounded once to bfloat16
    for cast, full in zip(_weights(generator), _weights(float32)):
        assert torch.equal(cast, full.to(torch.bfloat16))
    assert {p.dtype for p in _weights(BrainGenerator.from_pretrained(folder, torch_dtype="bfloat16"))} == {torch.bfloat16}

    # the sampler's state stays float32: the noise it starts from and the predictions it gets; the UNet gets bfloat16
    seen = {}
    real_sample = generator_model.sample

    def spying_sample(model_fn, noise, *args, **kwargs):
        seen["noise"], seen["prediction"] = noise.dtype, model_fn(noise, 999).dtype
        return real_sample(model_fn, noise, *args, **kwargs)

    inputs = []
    hook = generator.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0].dtype))
    monkeypatch.setattr(generator_model, "sample", spying_sample)
    out = generator.generate(QUERY, seed=3)
    hook.remove()
    assert seen == {"noise": torch.float32, "prediction": torch.float32} and set(inputs) == {torch.bfloat16}
    assert out.images.dtype == torch.float32 and out.images.shape == (2, 1, 16, 16, 16) and torch.isfinite(out.images).all()
    assert out.labels.dtype == torch.uint8 and out.labels.shape == (2, 16, 16, 16) and out.provenance["dtype"] == "bfloat16"
    again = generator.generate(QUERY, seed=3)
    assert torch.equal(again.images, out.images) and torch.equal(again.labels, out.labels)
    assert not torch.equal(generator.generate(QUERY, seed=4).images, out.images)


def test_half_precision_pools_in_float32_with_each_pool_wrapped_once():
    # PyTorch has no float16 / bfloat16 avg_pool3d on the CPU (the bfloat16 generation above runs through these wrappers;
    # float16 generation on the CPU is compared with float32 in tests/test_generator.py)
    generator = tiny_generator().to("cpu", torch.float16).to(dtype="float16")
    pools = [m for m in generator.unet.modules() if isinstance(m, torch.nn.modules.pooling._AvgPoolNd)]
    wrappers = [m for m in generator.unet.modules() if isinstance(m, generator_model._Float32Pooling)]
    assert pools and len(wrappers) == len(pools)  # MONAI's resblock down-sampling pools, each wrapped once
    x = torch.rand(1, 16, 4, 4, 4).to(torch.float16)
    torch.testing.assert_close(wrappers[0](x), torch.nn.functional.avg_pool3d(x.float(), 2).to(torch.float16), rtol=0, atol=0)
    assert generator.to(dtype=torch.float32).unet.state_dict().keys() == tiny_generator().unet.state_dict().keys()
    generator.to(dtype=torch.float64)  # cast back to float64, the wrappers stay and pool in float64, not float32
    wide = torch.rand(1, 16, 4, 4, 4, dtype=torch.float64)
    assert torch.equal(wrappers[0](wide), torch.nn.functional.avg_pool3d(wide, 2))


def test_a_saved_bfloat16_generator_is_read_back_in_bfloat16(folder, tmp_path):
    generator = BrainGenerator.from_pretrained(folder, torch_dtype="bfloat16")
    saved = generator.save_pretrained(tmp_path / "bf16")
    assert _io.read_json(saved / INDEX, "")["torch_dtype"] == "bfloat16"
    for component in ("autoencoder", "unet"):
        with safe_open(saved / component / "model.safetensors", "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    loaded = BrainGenerator.from_pretrained(saved)
    assert loaded.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(_weights(loaded), _weights(generator)))
    assert torch.equal(loaded.generate(QUERY, seed=5).images, generator.generate(QUERY, seed=5).images)
    # torch_dtype overrides what the folder holds; a float32 model records no torch_dtype (its folder is as before)
    assert BrainGenerator.from_pretrained(saved, torch_dtype=torch.float32).dtype == torch.float32
    assert "torch_dtype" not in _io.read_json(folder / INDEX, "")
    index = _io.read_json(saved / INDEX, "")
    _io.write_json(saved / INDEX, {**index, "torch_dtype": "int8"})
    with pytest.raises(ValueError, match=rf"{INDEX}: torch_dtype='int8'; allowed: \['float32', 'bfloat16', 'float16', 'float64'\]"):
        BrainGenerator.from_pretrained(saved)


def test_bad_dtypes_and_devices_are_refused_by_name_before_anything_is_read(folder, monkeypatch):
    for bad in ("half", "auto", torch.int8, 16):
        with pytest.raises(ValueError, match=rf"^torch_dtype={bad!r}; allowed: \['float32', 'bfloat16', 'float16', 'float64'\]"):
            BrainGenerator.from_pretrained("no/such-model", torch_dtype=bad)
    with pytest.raises(ValueError, match=r"^dtype='half'; allowed"):
        tiny_generator().to(dtype="half")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device='cuda': CUDA is not available on this machine; allowed: 'cpu'"):
        BrainGenerator.from_pretrained("no/such-model", device="cuda")
    on_cpu = BrainGenerator.from_pretrained(folder, device="cpu", torch_dtype=torch.float64)
    assert {p.device.type for p in _weights(on_cpu)} == {"cpu"} and {p.dtype for p in _weights(on_cpu)} == {torch.float64}


def test_networks_of_several_dtypes_are_refused():
    generator = tiny_generator()
    generator.autoencoder.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"parameters are \['torch.bfloat16', 'torch.float32'\]; allowed: one dtype"):
        BrainGenerator.from_parts(generator.parts())


def test_the_command_line_generates_in_the_dtype_asked_for(folder, tmp_path, capsys):
    from synthbrain.cli import main

    common = ["generate", "--model", str(folder), "-n", "1", "--age", "50", "--sex", "F", "--ventricular-volume", "20"]
    common += ["--brain-volume", "1200", "--device", "cpu"]
    assert main([*common, "--dtype", "bfloat16", "--out", str(tmp_path / "bf16")]) == 0
    assert _io.read_json(tmp_path / "bf16" / "provenance.json", "")["dtype"] == "bfloat16"
    capsys.readouterr()
    assert main([*common, "--dtype", "half", "--out", str(tmp_path / "half")]) == 2
    assert capsys.readouterr().err.strip().startswith("synthbrain generate: error: --dtype 'half'; allowed: ['float32', 'bfloat16'")
    assert not (tmp_path / "half").exists()


def test_an_operation_missing_in_a_precision_and_non_finite_volumes_are_errors_not_output(monkeypatch):
    generator = tiny_generator().to(dtype=torch.float16)

    def missing(*args, **kwargs):
        raise NotImplementedError("\"some_kernel\" not implemented for 'Half'")

    monkeypatch.setattr(generator.unet, "guided", missing)
    with pytest.raises(ValueError, match=r"^dtype=float16 on cpu: this PyTorch \(.*\) cannot run the networks in it \(\"some_kernel\""):
        generator.generate(QUERY, seed=0)
    monkeypatch.undo()
    real_decode = generator.autoencoder.decode

    def overflowing(z):
        image, logits = real_decode(z)
        return image.masked_fill(torch.zeros_like(image, dtype=torch.bool).index_fill_(2, torch.tensor([3]), True), float("inf")), logits

    monkeypatch.setattr(generator.autoencoder, "decode", overflowing)
    with pytest.raises(RuntimeError, match=r"decoded volumes hold non-finite values in dtype=float16; float16 overflows above 65504"):
        generator.generate(QUERY, seed=0, steps=1, timestep_spacing="trailing")


def test_a_shard_folder_holds_the_volumes_of_one_precision(folder, tmp_path):
    # a folder loaded in float32 and cast keeps its index's sha256, but its volumes differ: the shards say which precision made them
    # (synthbrain generate --dtype resumes an interrupted run from such a folder, OUT.partial)
    from synthbrain.datasets import SyntheticBrainDataset
    from synthbrain.datasets.shards import ShardsInUse
    from synthbrain.generator.conditions import Fixed

    def dataset(generator):
        covariates = Fixed(sex="F", age=50.0, ventricular_volume=20.0, brain_volume=1200.0)
        return SyntheticBrainDataset(1, covariates, generator, device="cpu", shards=tmp_path / "shards")

    float32 = dataset(BrainGenerator.from_pretrained(folder))
    assert "dtype" not in float32.definition()["model"]  # as folders written before precisions were stored
    with pytest.raises(ShardsInUse, match=r"differing: \['model\.dtype'\]"):
        dataset(BrainGenerator.from_pretrained(folder, torch_dtype=torch.bfloat16))
    with pytest.raises(ShardsInUse, match=r"differing: \['model\.dtype'\]"):
        dataset(BrainGenerator.from_pretrained(folder).to(dtype=torch.float64))
    dataset(BrainGenerator.from_pretrained(folder))  # the same precision again: the same folder
