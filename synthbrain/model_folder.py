"""A generator on disk: the model folder format, read and written, and the embedded default model.

::

    model/
      synthbrain_generator.json   index: components with the sha256 of each weight file, image grid,
                                  latent shape, scale (and shift), label classes, sampling defaults, version
      autoencoder/  config.json, model.safetensors
      unet/         config.json, model.safetensors
      scheduler/    config.json
      covariates/   covariates.json (schema), distribution.json (training covariates' density, optional)

The weights are stored in the networks' precision (``torch_dtype``): float32 unless the model was
cast (``BrainGenerator.to(dtype=...)``, ``from_pretrained(torch_dtype=...)``) before it was saved; the
index then records it as ``"torch_dtype": "bfloat16"`` (``"float16"``, ``"float64"``), and the folder
is read back in that precision. A float32 model writes no ``torch_dtype`` key, so its folder is the
same as before the key existed (and an older reader refuses a half-precision folder rather than
silently reading it as float32).

:func:`read_model_folder` checks every hash before loading and loads strictly: unknown or missing
keys in the index or any config, missing or unexpected weights and a latent shape that the
components do not give are errors naming the file. :func:`write_model_folder` writes a whole folder
into a staging folder beside the target and moves it into place, so a reader never sees a folder
that mixes two models. Both work on :class:`ModelParts`, the constructor arguments of
:class:`~synthbrain.BrainGenerator`, so this module does not depend on the generator class.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from synthbrain import __version__, _io
from synthbrain.components import WEIGHTS, load_component, load_config, save_component, save_config

if TYPE_CHECKING:  # the networks (MONAI), the density (scikit-learn) and the grid (SciPy) are imported where a folder is read
    from synthbrain.autoencoder.model import BrainAutoencoder
    from synthbrain.cohort.covariates import CovariateSchema
    from synthbrain.cohort.distribution import CovariateDistribution
    from synthbrain.diffusion.model import ConditionalUNet
    from synthbrain.grid import Grid
    from synthbrain.samplers.schedule import NoiseSchedule

INDEX = "synthbrain_generator.json"
# The models embedded in the package, by the name from_pretrained takes, each trained on IXI-HH with its
# model card beside it: "default" (version 3, 4 mm, examples/train_default_model.sh) and "default-2mm"
# (version 4, 2 mm, examples/train_default_model_v4.sh).
EMBEDDED_MODELS = {name: Path(__file__).resolve().parent / "models" / name for name in ("default", "default-2mm")}
DEFAULT_MODEL = EMBEDDED_MODELS["default"]
INDEX_KEYS = {"class", "synthbrain_version", "components", "image_grid", "latent_shape", "latent_scale", "label_classes", "defaults"}
# written only when needed: torch_dtype when the weights are not float32, latent_shift when not 0 (per-channel scaling)
OPTIONAL_KEYS = {"torch_dtype", "latent_shift"}
COMPONENTS = ("autoencoder", "unet")
# The precisions a generator's weights are stored and run in, by name (torch_dtype of from_pretrained, dtype of .to, the index).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
FOLDER_HOLDS = f"a generator folder holds {INDEX}, autoencoder/, unet/, scheduler/config.json and covariates/"
# Models saved before the timestep spacing was recorded (synthbrain 0.1) sampled with each sampler's spacing of that time.
LEGACY_SPACING = {"ddim": "leading", "ddpm": "trailing", "dpm++2m": "trailing"}


@dataclass
class ModelParts:
    """Everything a generator is made of (the arguments of ``BrainGenerator``), and where it came from.

    ``autoencoder`` and ``unet``: the networks; ``schedule``: the noise schedule the UNet was trained on;
    ``schema``: the covariates and their normalisation; ``image_grid``: the MNI grid of decoded images;
    ``latent_scale`` and ``latent_shift``: latents were trained on as ``(z - latent_shift) * latent_scale``,
    a number each (1/std of the cached latents and 0) or a list of one per latent channel;
    ``label_classes``: the name of each label class by index, or None; ``defaults``: sampling defaults
    (``sampler``, ``steps``, ``guidance_scale``, ``timestep_spacing``); ``distribution``: the training
    covariates' density, or None; ``source``: ``{"path", "sha256"}``, the folder read from and the
    sha256 of each component's weights (None for parts that were not read from a folder).
    """

    autoencoder: BrainAutoencoder
    unet: ConditionalUNet
    schedule: NoiseSchedule
    schema: CovariateSchema
    image_grid: Grid
    latent_scale: float | list[float]
    label_classes: list[str] | None = None
    defaults: dict[str, Any] | None = None
    distribution: CovariateDistribution | None = None
    source: dict[str, Any] = field(default_factory=lambda: {"path": None, "sha256": None})
    latent_shift: float | list[float] = 0.0

    def arguments(self) -> dict[str, Any]:
        """The constructor arguments of ``BrainGenerator`` (everything but ``source``)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "source"}


def as_dtype(value: Any, argument: str = "torch_dtype") -> torch.dtype:
    """``value`` as one of the precisions of :data:`DTYPES`: a ``torch.dtype`` (``torch.bfloat16``) or its
    name (``"bfloat16"``), as diffusers' ``torch_dtype`` takes it. Raises ``ValueError`` naming ``argument``,
    the value and the allowed precisions for anything else (``torch.int8``, ``"half"``, ``"auto"``); a flag
    (``argument="--dtype"``) is shown as ``--dtype 'half'``, as :func:`synthbrain.device.resolve_device` does."""
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    shown = f"{argument} {value!r}" if argument.startswith("-") else f"{argument}={value!r}"  # a flag, or an argument
    raise ValueError(f"{shown}; allowed: {list(DTYPES)}, as names or torch dtypes (torch.bfloat16)")


def network_dtype(networks: Iterable[nn.Module]) -> torch.dtype:
    """The one dtype of every parameter of ``networks``. Raises ``ValueError`` for parameters of several
    dtypes (a partly cast model) or of a dtype not in :data:`DTYPES`."""
    found = {p.dtype for network in networks for p in network.parameters()}
    if len(found) != 1 or next(iter(found)) not in DTYPES.values():
        raise ValueError(
            f"the networks' parameters are {sorted(str(d) for d in found)}; allowed: one dtype of {list(DTYPES)} for all of them "
            "(cast with BrainGenerator.to(dtype=...))"
        )
    return found.pop()


@_io.writes_folder("folder")
def write_model_folder(parts: ModelParts, folder: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``parts`` as a model folder (replacing a previous one only once the new one is complete;
    its ``README.md`` model card is kept). ``extra`` maps further file names to JSON content written
    beside the index (e.g. a conversion record). A non-empty folder that is not a model folder is
    refused (``ValueError``), so a mistyped path never deletes other files. One writer at a time
    (:func:`synthbrain._io.writes_folder`; another is a :class:`~synthbrain._io.FolderInUseError`)."""
    target = Path(folder)
    if target.is_dir() and any(target.iterdir()) and not (target / INDEX).is_file():
        raise ValueError(f"folder={str(folder)!r} holds files but no {INDEX}; a model is written only into a new, empty or model folder")
    with _io.staged_folder(folder) as staging:
        if (target / "README.md").is_file():  # the model card stays with the model
            _io.write_text(staging / "README.md", (target / "README.md").read_text(encoding="utf-8"))
        save_component(parts.autoencoder, staging / "autoencoder")
        save_component(parts.unet, staging / "unet")
        save_config(parts.schedule, staging / "scheduler")
        parts.schema.save(staging / "covariates" / "covariates.json")
        if parts.distribution is not None:
            _io.write_json(staging / "covariates" / "distribution.json", parts.distribution.to_dict())
        for name, content in (extra or {}).items():
            _io.write_json(staging / name, content)
        factor = parts.autoencoder.config.downsample
        dtype = str(network_dtype([parts.autoencoder, parts.unet])).removeprefix("torch.")
        shift = _number_or_list(parts.latent_shift)
        _io.write_json(
            staging / INDEX,
            {
                "class": "BrainGenerator",
                "synthbrain_version": __version__,
                "components": {name: {"path": name, "sha256": _io.sha256_file(staging / name / WEIGHTS)} for name in COMPONENTS},
                "image_grid": parts.image_grid.to_dict(),
                "latent_shape": [parts.autoencoder.config.latent_channels, *(n // factor for n in parts.image_grid.shape)],
                "latent_scale": _number_or_list(parts.latent_scale),
                "label_classes": list(parts.label_classes) if parts.label_classes else None,
                "defaults": parts.defaults,
                **({"torch_dtype": dtype} if dtype != "float32" else {}),
                **({"latent_shift": shift} if shift != 0.0 else {}),
            },
        )
    return Path(folder)


def read_model_folder(folder: str | os.PathLike) -> ModelParts:
    """The parts of a model folder, checked as the module docstring says; networks are loaded on the CPU,
    in the precision the index records (``torch_dtype``, float32 when absent).
    A model written before the timestep spacing was recorded gets its sampler's spacing of that time
    (:data:`LEGACY_SPACING`). Raises ``ValueError`` naming the file for any check that fails."""
    from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
    from synthbrain.cohort.covariates import CovariateSchema
    from synthbrain.cohort.distribution import CovariateDistribution
    from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
    from synthbrain.preprocessing.template import Grid
    from synthbrain.samplers.schedule import NoiseSchedule

    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise ValueError(f"{folder}: no {INDEX}; not a synthbrain generator folder")
    index = _io.read_json(folder / INDEX, FOLDER_HOLDS)
    unknown, absent = sorted(set(index) - INDEX_KEYS - OPTIONAL_KEYS), sorted(INDEX_KEYS - set(index))
    if unknown or absent or index.get("class") != "BrainGenerator":
        raise ValueError(
            f"{folder / INDEX}: unknown keys {unknown}, missing keys {absent}, class {index.get('class')!r}; "
            f"expected exactly {sorted(INDEX_KEYS)} (and optionally {sorted(OPTIONAL_KEYS)}) and class 'BrainGenerator'"
        )
    dtype = as_dtype(index.get("torch_dtype", "float32"), f"{folder / INDEX}: torch_dtype")
    components = index["components"]
    if not isinstance(components, dict) or sorted(components) != sorted(COMPONENTS):
        raise ValueError(f"{folder / INDEX}: components {components!r}; expected exactly {list(COMPONENTS)}")
    for name, entry in components.items():
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256"}:
            raise ValueError(f"{folder / INDEX}: components[{name!r}]={entry!r}; expected exactly the keys ['path', 'sha256']")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise ValueError(f"{folder / INDEX}: components[{name!r}] path {entry['path']!r}; allowed: a folder inside {folder}")
        weights = folder / entry["path"] / WEIGHTS
        if not weights.is_file():
            raise ValueError(f"{weights}: missing")
        found = _io.sha256_file(weights)
        if found != entry["sha256"]:
            raise ValueError(
                f"{weights}: sha256 {found[:12]}... differs from the index's {str(entry['sha256'])[:12]}...; "
                "the file is truncated or was modified"
            )
    autoencoder = load_component(BrainAutoencoder, AutoencoderConfig, folder / components["autoencoder"]["path"], dtype)
    unet = load_component(ConditionalUNet, DiffusionConfig, folder / components["unet"]["path"], dtype)
    schedule = load_config(NoiseSchedule, folder / "scheduler")
    schema_file, distribution_file = folder / "covariates" / "covariates.json", folder / "covariates" / "distribution.json"
    with about(schema_file):
        schema = CovariateSchema.from_dict(_io.read_json(schema_file, FOLDER_HOLDS))
    distribution = None
    if distribution_file.is_file():
        with about(distribution_file):
            distribution = CovariateDistribution.from_dict(_io.read_json(distribution_file, FOLDER_HOLDS), schema)
    defaults = index["defaults"]
    if isinstance(defaults, dict) and "timestep_spacing" not in defaults and defaults.get("sampler") in LEGACY_SPACING:
        defaults = {**defaults, "timestep_spacing": LEGACY_SPACING[defaults["sampler"]]}
    with about(folder / INDEX):
        parts = ModelParts(
            autoencoder,
            unet,
            schedule,
            schema,
            Grid.from_dict(index["image_grid"]),
            _number_or_list(index["latent_scale"]),
            index["label_classes"],
            defaults,
            distribution,
            {"path": str(folder.resolve()), "sha256": {k: v["sha256"] for k, v in components.items()}},
            _number_or_list(index.get("latent_shift", 0.0)),
        )
    factor = autoencoder.config.downsample
    expected = [autoencoder.config.latent_channels, *(n // factor for n in parts.image_grid.shape)]
    if list(index["latent_shape"]) != expected:
        raise ValueError(
            f"{folder / INDEX}: latent_shape {index['latent_shape']} differs from {expected}, "
            "which the autoencoder and image grid give; the folder mixes files of different models"
        )
    return parts


def _number_or_list(value: float | Iterable[float]) -> float | list[float]:
    """A latent scale or shift as the index stores it: a number, or a list of one per channel."""
    return float(value) if isinstance(value, (int, float)) else [float(v) for v in value]


@contextlib.contextmanager
def about(path: Path):
    """Context manager: a ``KeyError``, ``TypeError`` or ``ValueError`` raised in the block is raised again
    as a ``ValueError`` prefixed with ``path`` (a ``KeyError`` as ``missing key ...``)."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{path}: {detail}") from None


def embedded_name(path: str | os.PathLike) -> str | None:
    """The name of the embedded model stored at ``path`` (a key of :data:`EMBEDDED_MODELS`), or None."""
    resolved = Path(path).resolve()
    return next((name for name, folder in EMBEDDED_MODELS.items() if folder == resolved), None)
