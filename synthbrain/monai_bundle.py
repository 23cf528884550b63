"""The released reference model (Pinaya et al. 2022) from its MONAI bundle, as a :class:`BrainGenerator`.

The bundle ``brain_image_synthesis_latent_diffusion_model`` (MONAI model zoo; a copy on the Hugging
Face Hub as ``MONAI/brain_image_synthesis_latent_diffusion_model``) is a folder::

    configs/inference.json   network definitions (MONAI core or the older ``generative`` package)
    models/autoencoder.pt    AutoencoderKL state dict     (older releases: autoencoder.pth)
    models/model.pt          DiffusionModelUNet state dict (older releases: diffusion_model.pth)

The weights were saved with the old ``generative`` package (PyPI ``monai-generative``), whose key
names MONAI core (>= 1.4) renamed; :func:`map_old_keys` maps them, strictly: a key that is neither a
known old name nor a current one, a missing key, or a shape that differs is an error (MONAI core's
own ``load_old_state_dict`` leaves such weights at their random initialisation). Weight files are
read with ``torch.load(..., weights_only=True)`` only, so no pickled code is ever run.

What the bundle does not record, and is taken from the paper and the bundle's sampling script:
conditioning ``[sex, age, ventricular_volume, brain_volume]``, each in [0, 1] (:func:`reference_schema`),
DDIM with eta 0 at timesteps 980, 960, ..., 0, no latent scale factor, and the 160 x 224 x 160 grid at
1 mm in MNI space. See ``docs/reference-model.md``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from synthbrain import __version__, _io
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.cohort.covariates import CATEGORICAL, CONTINUOUS, Covariate, CovariateSchema
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
from synthbrain.grid import Grid
from synthbrain.hub import resolve_folder
from synthbrain.model_folder import ModelParts, write_model_folder
from synthbrain.preprocessing.template import make_grid
from synthbrain.samplers.schedule import NoiseSchedule

BUNDLE_NAME = "brain_image_synthesis_latent_diffusion_model"
HUB_ID = f"MONAI/{BUNDLE_NAME}"
# (autoencoder, diffusion UNet) file names under models/, current release first.
WEIGHT_FILES = (("autoencoder.pt", "model.pt"), ("autoencoder.pth", "diffusion_model.pth"))
INFERENCE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
CONVERSION_RECORD = "conversion.json"

# The published architecture (configs/inference.json of the bundle): 13.8 M and 553 M parameters.
REFERENCE_AUTOENCODER = AutoencoderConfig(
    num_classes=0, channels=(64, 128, 128, 128), latent_channels=3, num_res_blocks=2, norm_num_groups=32
)
REFERENCE_UNET = DiffusionConfig(
    latent_channels=3,
    condition_dim=4,
    channels=(256, 512, 768),
    attention_levels=(False, True, True),
    num_res_blocks=2,
    num_head_channels=(0, 512, 768),
    norm_num_groups=32,
    resblock_updown=True,
    concat_condition=True,
    classifier_free_guidance=False,  # trained without condition dropout (Pinaya et al. 2022)
)
# The bundle's DDIMScheduler: 1000 steps, scaled-linear betas 0.0015-0.0205, epsilon prediction, clip_sample False.
REFERENCE_SCHEDULE = NoiseSchedule(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0205)
# DDIM (eta 0) with 50 steps at the "leading" timesteps 980, 960, ..., 0, as the released samples were made.
REFERENCE_DEFAULTS = {"sampler": "ddim", "steps": 50, "guidance_scale": 1.0, "timestep_spacing": "leading"}
REFERENCE_AGE_YEARS = (44.0, 82.0)  # age 44 -> 0, 82 -> 1 (UK Biobank's range at imaging)


def reference_schema() -> CovariateSchema:
    """The reference model's conditioning, in its order.

    Sex and age are scaled as published (F = 0, M = 1; age (years - 44) / 38). The two volume
    scalings were not published: those covariates are the model's own [0, 1] values ("fraction"),
    passed through unchanged. The schema is already fitted (``low``/``high`` set), so it is not fitted
    on any cohort.
    """
    low, high = REFERENCE_AGE_YEARS
    return CovariateSchema(
        [
            Covariate("sex", "", CATEGORICAL, categories=("F", "M"), description="biological sex; F=0, M=1"),
            Covariate("age", "years", CONTINUOUS, low=low, high=high, description="age at scan; (years - 44) / 38"),
            Covariate(
                "ventricular_volume",
                "fraction",
                CONTINUOUS,
                low=0.0,
                high=1.0,
                description="ventricular CSF volume as the model's [0, 1] value (its scaling from mL was not published)",
            ),
            Covariate(
                "brain_volume",
                "fraction",
                CONTINUOUS,
                low=0.0,
                high=1.0,
                description="brain volume normalised for head size, as the model's [0, 1] value (its scaling was not published)",
            ),
        ]
    )


# ---------------------------------------------------------------------------------------------- keys

_CROSS_ATTENTION_OUT = re.compile(r"(.*\.transformer_blocks\.\d+\.attn[12])\.to_out\.0\.(weight|bias)")
_UPSAMPLE_CONV = re.compile(r"(decoder\.blocks\.\d+|up_blocks\.\d+\.upsampler)\.conv\.conv\.(weight|bias)")
_SELF_ATTENTION_QKV = re.compile(r"(.*)\.(to_q|to_k|to_v)\.(weight|bias)")
_SELF_ATTENTION_OUT = re.compile(r"(.*)\.proj_attn\.(weight|bias)")


def new_key(key: str) -> str:
    """The MONAI core (>= 1.4) name of a state-dict key saved by the ``generative`` package; current
    names are returned unchanged.

    * cross-attention output ``...transformer_blocks.N.attn{1,2}.to_out.0.*`` -> ``...attn{1,2}.out_proj.*``
    * upsampling convolution ``decoder.blocks.N.conv.conv.*`` (autoencoder) and
      ``up_blocks.N.upsampler.conv.conv.*`` (UNet without resblock_updown) -> ``...postconv.conv.*``
    * self-attention blocks ``X.to_{q,k,v}.*`` -> ``X.attn.to_{q,k,v}.*`` and ``X.proj_attn.*`` -> ``X.attn.out_proj.*``
    """
    if m := _CROSS_ATTENTION_OUT.fullmatch(key):
        return f"{m[1]}.out_proj.{m[2]}"
    if m := _UPSAMPLE_CONV.fullmatch(key):
        return f"{m[1]}.postconv.conv.{m[2]}"
    if m := _SELF_ATTENTION_OUT.fullmatch(key):
        return f"{m[1]}.attn.out_proj.{m[2]}"
    if (m := _SELF_ATTENTION_QKV.fullmatch(key)) and not re.search(r"(^|\.)attn[12]?$", m[1]):
        return f"{m[1]}.attn.{m[2]}.{m[3]}"  # transformer blocks (attn1/attn2) and current names keep theirs
    return key


def map_old_keys(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, what: str) -> dict[str, torch.Tensor]:
    """Rename old ``generative`` keys to MONAI core names and check the result against ``expected``
    (a model's ``state_dict()``): every key present once, none unknown, every shape equal. Returns the
    renamed state dict (the same tensors). Raises ``ValueError`` naming ``what`` when two keys map to one
    name, keys are unknown or missing, or shapes differ."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = new_key(key)
        if name in mapped:
            raise ValueError(f"{what}: keys {key!r} and another both map to {name!r}; the state dict mixes old and new names")
        mapped[name] = value
    unknown = sorted(set(mapped) - set(expected))
    missing = sorted(set(expected) - set(mapped))
    if unknown or missing:
        raise ValueError(
            f"{what}: {len(unknown)} unknown keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''} and {len(missing)} missing keys "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; the weights do not fit this architecture (or were modified)"
        )
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in mapped.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{what}: shapes differ from the architecture's (key, found, expected): {wrong[:5]}")
    return mapped


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` state dict from a ``.pt``/``.pth`` file, read onto the CPU with
    ``torch.load(weights_only=True)``. Raises ``ValueError`` for a file that this cannot read (pickled
    objects included), or that holds anything but a non-empty mapping of names to tensors."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: not readable with torch.load(weights_only=True) ({first}); only plain tensor state dicts are "
            "loaded, never pickled objects"
        ) from err
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: holds a {type(obj).__name__}; expected a non-empty state dict of name -> tensor")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]!r} are not name -> tensor; expected a flat state dict")
    return dict(obj)


# ---------------------------------------------------------------------------------------------- bundle


def is_bundle(folder: str | os.PathLike) -> bool:
    """A MONAI bundle folder: ``configs/`` and ``models/``."""
    folder = Path(folder)
    return (folder / "configs").is_dir() and (folder / "models").is_dir()


def weight_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """(autoencoder, diffusion UNet) weight files of a bundle, current names first (:data:`WEIGHT_FILES`).
    Raises ``ValueError`` listing what ``models/`` holds when neither pair is there."""
    models = Path(folder) / "models"
    for autoencoder, unet in WEIGHT_FILES:
        if (models / autoencoder).is_file() and (models / unet).is_file():
            return models / autoencoder, models / unet
    found = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    raise ValueError(f"{models}: found {found}; expected one of the pairs {[list(pair) for pair in WEIGHT_FILES]}")


def network_configs(folder: str | os.PathLike) -> tuple[AutoencoderConfig, DiffusionConfig, str]:
    """The architecture from the bundle's ``configs/inference.{json,yaml}`` (``autoencoder_def`` and
    ``diffusion_def``), or the published one where the bundle has no such definitions. Also returns
    where it came from (the config's path, or a sentence). Settings synthbrain's models cannot reproduce
    exactly are a ``ValueError``, as is an autoencoder latent width that differs from the UNet's."""
    configs = Path(folder) / "configs"
    for name in INFERENCE_CONFIGS:
        path = configs / name
        if path.is_file():
            if name.endswith(".json"):
                data = _io.read_json(path, "a MONAI bundle inference config")
            else:
                import yaml

                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if (
                isinstance(data, Mapping)
                and isinstance(data.get("autoencoder_def"), Mapping)
                and isinstance(data.get("diffusion_def"), Mapping)
            ):
                autoencoder = autoencoder_config(data["autoencoder_def"], where=f"{path}: autoencoder_def")
                unet = unet_config(data["diffusion_def"], where=f"{path}: diffusion_def")
                if autoencoder.latent_channels != unet.latent_channels:
                    raise ValueError(
                        f"{path}: autoencoder latent_channels={autoencoder.latent_channels} differs from the UNet's "
                        f"out_channels={unet.latent_channels}"
                    )
                return autoencoder, unet, str(path)
    return REFERENCE_AUTOENCODER, REFERENCE_UNET, "published reference architecture (no network definitions in the bundle)"


class _Definition:
    """Reads one network definition of a bundle config, remembering which keys were used."""

    def __init__(self, definition: Mapping[str, Any], where: str):
        self.definition, self.where, self.used = dict(definition), where, {"_target_"}

    def get(self, *names: str, default: Any = None, required: bool = True) -> Any:
        self.used.update(names)
        for name in names:
            if name in self.definition:
                value = self.definition[name]
                if isinstance(value, str) and value[:1] in ("$", "@", "%"):
                    raise ValueError(f"{self.where}: {name}={value!r} is an expression; only literal values can be read")
                return value
        if required and default is None:
            raise ValueError(f"{self.where}: no {' or '.join(names)}")
        return default

    def expect(self, name: str, allowed: Any, default: Any) -> None:
        value = self.get(name, default=default, required=False)
        if value != allowed:
            raise ValueError(f"{self.where}: {name}={value!r}; synthbrain reproduces this network only with {name}={allowed!r}")

    def ignore(self, *names: str) -> None:
        self.used.update(names)

    def finish(self, target: str) -> None:
        found = str(self.definition.get("_target_", ""))
        if found.rsplit(".", 1)[-1] != target:
            raise ValueError(f"{self.where}: _target_={found!r}; expected MONAI's (or the generative package's) {target}")
        unknown = sorted(set(self.definition) - self.used)
        if unknown:
            raise ValueError(f"{self.where}: unknown settings {unknown}; cannot check that synthbrain reproduces them")


def _levels(value: Any, n: int, name: str, where: str) -> int:
    """``num_res_blocks``: an int, or one equal int per level."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == n and len(set(value)) == 1:
        return int(value[0])
    raise ValueError(f"{where}: {name}={value!r}; allowed: an int, or the same int for each of the {n} levels")


def autoencoder_config(definition: Mapping[str, Any], *, where: str = "autoencoder_def") -> AutoencoderConfig:
    """A bundle's ``AutoencoderKL`` definition -> :class:`AutoencoderConfig` (image only, no attention). Raises
    ``ValueError`` naming ``where`` for another ``_target_``, an expression instead of a literal, a missing
    ``channels`` or ``latent_channels``, a setting that differs from what :class:`BrainAutoencoder` builds,
    or an unknown setting."""
    d = _Definition(definition, where)
    channels = tuple(d.get("channels", "num_channels"))
    d.expect("spatial_dims", 3, 3)
    d.expect("in_channels", 1, 1)
    d.expect("out_channels", 1, 1)
    d.expect("norm_eps", 1e-6, 1e-6)
    d.expect("attention_levels", [False] * len(channels), [False] * len(channels))
    d.expect("with_encoder_nonlocal_attn", False, True)
    d.expect("with_decoder_nonlocal_attn", False, True)
    d.expect("use_convtranspose", False, False)
    d.ignore("use_flash_attention", "use_checkpointing")  # no attention in this network; checkpointing only saves memory in training
    config = AutoencoderConfig(
        num_classes=0,
        channels=channels,
        latent_channels=int(d.get("latent_channels")),
        num_res_blocks=_levels(d.get("num_res_blocks"), len(channels), "num_res_blocks", where),
        norm_num_groups=int(d.get("norm_num_groups", default=32, required=False)),
    )
    d.finish("AutoencoderKL")
    return config


def unet_config(definition: Mapping[str, Any], *, where: str = "diffusion_def") -> DiffusionConfig:
    """A bundle's ``DiffusionModelUNet`` definition -> :class:`DiffusionConfig` (conditions concatenated and cross-attended).
    Raises ``ValueError`` as :func:`autoencoder_config` does; ``in_channels`` must be ``out_channels +
    cross_attention_dim`` (the concatenated condition)."""
    d = _Definition(definition, where)
    channels = tuple(d.get("channels", "num_channels"))
    condition_dim = int(d.get("cross_attention_dim"))
    latent_channels = int(d.get("out_channels"))
    d.expect("spatial_dims", 3, 3)
    d.expect("in_channels", latent_channels + condition_dim, None)
    d.expect("with_conditioning", True, False)
    d.expect("transformer_num_layers", 1, 1)
    d.expect("upcast_attention", True, False)
    d.expect("norm_eps", 1e-6, 1e-6)
    d.expect("num_class_embeds", None, None)
    d.expect("dropout_cattn", 0.0, 0.0)
    d.expect("include_fc", True, True)
    d.expect("use_combined_linear", False, False)
    d.ignore("use_flash_attention")  # the same attention, computed by another kernel
    heads = d.get("num_head_channels", default=8, required=False)
    config = DiffusionConfig(
        latent_channels=latent_channels,
        condition_dim=condition_dim,
        channels=channels,
        attention_levels=tuple(bool(a) for a in d.get("attention_levels")),
        num_res_blocks=_levels(d.get("num_res_blocks"), len(channels), "num_res_blocks", where),
        num_head_channels=heads if isinstance(heads, int) else tuple(int(h) for h in heads),
        norm_num_groups=int(d.get("norm_num_groups", default=32, required=False)),
        resblock_updown=bool(d.get("resblock_updown", default=False, required=False)),
        concat_condition=True,
        classifier_free_guidance=False,  # MONAI bundles are trained without condition dropout
    )
    d.finish("DiffusionModelUNet")
    return config


def load_bundle(folder: str | os.PathLike, *, image_grid: Grid | None = None) -> ModelParts:
    """The parts of a generator (:class:`~synthbrain.model_folder.ModelParts`; build one with
    ``BrainGenerator.from_parts``) from a MONAI bundle folder, with the released model's schema,
    schedule and sampling defaults. ``image_grid`` defaults to the 160 x 224 x 160 MNI grid at 1 mm.
    Raises ``ValueError`` for a folder that is not a bundle, an architecture the weights do not
    fit, or a grid the networks cannot take."""
    folder = Path(folder)
    if not is_bundle(folder):
        raise ValueError(f"{folder}: not a MONAI bundle (a folder with configs/ and models/)")
    autoencoder_file, unet_file = weight_files(folder)
    autoencoder_cfg, unet_cfg, architecture = network_configs(folder)
    grid = make_grid(1.0) if image_grid is None else image_grid
    factor = autoencoder_cfg.downsample * unet_cfg.downsample
    if any(n % factor for n in grid.shape):
        raise ValueError(f"image_grid: shape {grid.shape} must be divisible by {factor} (autoencoder x UNet downsampling)")
    autoencoder = BrainAutoencoder(autoencoder_cfg)
    unet = ConditionalUNet(unet_cfg)
    for model, path in ((autoencoder, autoencoder_file), (unet, unet_file)):
        weights = map_old_keys(read_state_dict(path), model.net.state_dict(), what=str(path))
        model.net.load_state_dict(weights, strict=True)
    source = {
        "path": str(folder.resolve()),
        "sha256": {"autoencoder": _io.sha256_file(autoencoder_file), "unet": _io.sha256_file(unet_file)},
        "format": "monai-bundle",
        "weights": {"autoencoder": f"models/{autoencoder_file.name}", "unet": f"models/{unet_file.name}"},
        "architecture": architecture,
    }
    return ModelParts(
        autoencoder, unet, REFERENCE_SCHEDULE, reference_schema(), grid, 1.0, defaults=dict(REFERENCE_DEFAULTS), source=source
    )


@_io.writes_folder("out")  # checked and written by one process: a model finished meanwhile is not replaced
def convert_bundle(bundle: str | os.PathLike, out: str | os.PathLike, *, revision: str | None = None, overwrite: bool = False) -> Path:
    """Write a bundle (a folder, or a Hub id) as a synthbrain model folder (safetensors + configs).

    The folder is written under a temporary name beside ``out`` and renamed when complete; an
    existing non-empty ``out`` is refused unless ``overwrite=True``. ``conversion.json`` records the
    source and the sha256 of its weight files. ``revision``: the Hub revision (branch, tag or commit).
    Returns ``out``. Raises ``ValueError`` for an ``out`` that is a file, not empty (without
    ``overwrite``) or not a model folder (even with ``overwrite``), a bundle the Hub cannot give
    (:func:`~synthbrain.hub.resolve_folder`), or as :func:`load_bundle`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"out={str(out)!r} exists and is not empty; pass overwrite=True (--overwrite) or choose another folder")
    folder = resolve_folder(bundle, revision=revision)
    if not is_bundle(folder):
        raise ValueError(f"bundle={str(bundle)!r}: {folder} is not a MONAI bundle (a folder with configs/ and models/)")
    parts = load_bundle(folder)
    record = {"source": str(bundle), "revision": revision, **parts.source, "synthbrain_version": __version__}
    if out.is_dir() and any(out.iterdir()) and not (out / "synthbrain_generator.json").is_file():
        raise ValueError(f"out={str(out)!r} holds files that are not a synthbrain model; choose another folder")
    return write_model_folder(parts, out, extra={CONVERSION_RECORD: record})
