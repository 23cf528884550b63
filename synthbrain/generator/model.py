"""``BrainGenerator``: the autoencoder, the diffusion UNet, the noise schedule and the covariate schema
of one model, turning covariates in physical units into T1 volumes with matching label maps on a
known MNI grid (a latent diffusion model after Pinaya et al. 2022, "Brain imaging generation with
latent diffusion models").

Data flow of :meth:`BrainGenerator.generate`: covariates (given, drawn by a condition sampler, or
drawn from the training density; :mod:`synthbrain.generator.draws`) -> normalised condition vector
-> starting noise from each volume's seed -> diffusion sampler (:mod:`synthbrain.samplers`) with
classifier-free guidance -> latent / ``latent_scale`` -> decoder -> image and label logits -> label
map (argmax), background set to 0 -> quality-control measures (:mod:`synthbrain.generator.qc`),
with failing subjects drawn again when asked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from synthbrain import __version__, _io
from synthbrain.device import resolve_device
from synthbrain.generator import draws
from synthbrain.generator import qc as quality
from synthbrain.generator.output import GeneratedBrains, covariate_ranges, model_name
from synthbrain.hub import resolve_folder
from synthbrain.model_folder import EMBEDDED_MODELS, INDEX, ModelParts, as_dtype, network_dtype, read_model_folder, write_model_folder
from synthbrain.samplers import SAMPLERS, sample
from synthbrain.sampling import QC_MODES

if TYPE_CHECKING:  # imported where a model is built or read: MONAI, scikit-learn and SciPy load on first use, not on import
    from synthbrain.autoencoder.model import BrainAutoencoder
    from synthbrain.cohort.covariates import CovariateSchema
    from synthbrain.cohort.distribution import CovariateDistribution
    from synthbrain.diffusion.model import ConditionalUNet
    from synthbrain.grid import Grid
    from synthbrain.samplers.schedule import NoiseSchedule

DEFAULT_KEYS = ("sampler", "steps", "guidance_scale", "timestep_spacing", "qc")
# The precisions the networks are stored and run in are synthbrain.model_folder.DTYPES; see :meth:`BrainGenerator.to`.
HALF = (torch.bfloat16, torch.float16)
# Keywords of generate() itself: a covariate may not be named like one of them.
GENERATE_KEYWORDS = (
    "covariates",
    "n",
    "cond_sampler",
    "seed",
    "steps",
    "sampler",
    "guidance_scale",
    "timestep_spacing",
    "batch_size",
    "extrapolate",
    "raw",
    "qc",
    "max_redraws",
    "progress",
)


class BrainGenerator:
    """A conditional latent diffusion model of brain MRI with label maps.

    Build one with :meth:`from_pretrained` (``"default"``, a folder or a Hub id), :meth:`from_training`
    (training outputs), or from its parts. ``autoencoder`` decodes latents (C, d, h, w) into an image
    and label logits on ``image_grid``; ``unet`` predicts noise from a latent, a timestep and the
    normalised covariates of ``schema``; ``schedule`` is the noise schedule it was trained on;
    ``latent_scale`` and ``latent_shift`` map the autoencoder's latents into the space the UNet was
    trained in, ``(z - latent_shift) * latent_scale``, and back after sampling: a number each (1/std of
    the cached latents and 0, the usual scale factor) or C numbers each (per-channel standardisation,
    ``DiffusionTraining(latent_scaling="per_channel")``); ``label_classes``
    names the label map's classes; ``defaults`` holds the sampling settings ``generate`` uses when
    not told (``sampler``, ``steps``, ``guidance_scale``, ``timestep_spacing``); ``distribution`` is
    the training covariates' density, from which covariates a caller leaves out are drawn.

    The networks' parameters must all have one dtype of :data:`synthbrain.model_folder.DTYPES`: the generator runs in it.

    Raises ``ValueError`` when the parts do not fit together (condition width, unknown default keys,
    a covariate named like a keyword of ``generate``, a guidance default on a model that cannot be guided,
    parameters of several dtypes, a latent scale that is not positive and finite, a latent scale or
    shift with another number of entries than the latent channels).
    """

    def __init__(
        self,
        autoencoder: BrainAutoencoder,
        unet: ConditionalUNet,
        schedule: NoiseSchedule,
        schema: CovariateSchema,
        image_grid: Grid,
        latent_scale: float | Sequence[float],
        label_classes: Sequence[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        distribution: CovariateDistribution | None = None,
        latent_shift: float | Sequence[float] = 0.0,
    ):
        if not schema.fitted:
            raise ValueError("schema: the covariate schema must be fitted on the training cohort")
        if unet.config.condition_dim != schema.width:
            raise ValueError(f"unet.config.condition_dim={unet.config.condition_dim} differs from the schema's width {schema.width}")
        clashes = [name for name in schema.names if name in GENERATE_KEYWORDS]
        if clashes:
            raise ValueError(f"schema: covariates {clashes} are named like keywords of generate(); rename them")
        unknown = sorted(set(defaults or {}) - set(DEFAULT_KEYS))
        if unknown:
            raise ValueError(f"defaults: unknown keys {unknown}; allowed: {list(DEFAULT_KEYS)}")
        self.autoencoder, self.unet = autoencoder.eval(), unet.eval()
        self.schedule, self.schema, self.image_grid = schedule, schema, image_grid
        self.label_classes = tuple(label_classes) if label_classes else None
        factor = autoencoder.config.downsample
        self.latent_shape = (autoencoder.config.latent_channels, *(n // factor for n in image_grid.shape))
        self.latent_scale = _per_channel("latent_scale", latent_scale, self.latent_shape[0], positive=True)
        self.latent_shift = _per_channel("latent_shift", latent_shift, self.latent_shape[0], positive=False)
        defaults = {"sampler": "ddim", "steps": 50, "guidance_scale": 1.0, "qc": "measure", **(defaults or {})}
        if "timestep_spacing" not in defaults and defaults["sampler"] in SAMPLERS:
            defaults["timestep_spacing"] = SAMPLERS[defaults["sampler"]].DEFAULT_SPACING
        self.defaults = defaults
        self.source: dict[str, Any] = {"path": None, "sha256": None}  # set when loaded from disk
        draws.check_sampling(defaults["sampler"], defaults["steps"], defaults["guidance_scale"], defaults["timestep_spacing"], "defaults: ")
        self._check_guidance(defaults["guidance_scale"], "defaults: ")
        if defaults["qc"] not in QC_MODES or (defaults["qc"] == "reject" and not self.label_classes):
            raise ValueError(f"defaults: qc={defaults['qc']!r}; allowed: {list(QC_MODES)} ('reject' only for a model with label maps)")
        schedule.timesteps(defaults["steps"], defaults["timestep_spacing"])  # a count the spacing cannot start right is refused
        self.distribution = distribution
        self._fit_precision()

    def __repr__(self) -> str:
        """A summary: where the model came from, its grid, label classes, covariates (units and
        training ranges), sampling defaults, device and precision."""
        name = model_name(self.source.get("path"))
        grid = self.image_grid
        classes = f"{len(self.label_classes)} label classes ({', '.join(self.label_classes)})" if self.label_classes else "no label maps"
        d = self.defaults
        return (
            f"BrainGenerator(model: {name}\n"
            f"  grid: {' x '.join(map(str, grid.shape))} voxels of {grid.spacing:g} mm (MNI), "
            f"latent {' x '.join(map(str, self.latent_shape))}\n"
            f"  {classes}\n"
            f"  covariates: {covariate_ranges(self.schema)}\n"
            f"  sampling: {d['sampler']}, {d['steps']} steps, guidance {d['guidance_scale']:g}, {d['timestep_spacing']} spacing, "
            f"qc {d['qc']}; on {self.device}, {str(self.dtype).removeprefix('torch.')})"
        )

    # ------------------------------------------------------------------ construction and persistence

    @classmethod
    def from_parts(cls, parts: ModelParts) -> BrainGenerator:
        """A generator from the parts :func:`synthbrain.model_folder.read_model_folder` returns (weights already loaded)."""
        generator = cls(**parts.arguments())
        generator.source = dict(parts.source)
        return generator

    def parts(self) -> ModelParts:
        """This generator's networks, schedule and settings, as :func:`synthbrain.model_folder.write_model_folder` saves them."""
        return ModelParts(
            self.autoencoder,
            self.unet,
            self.schedule,
            self.schema,
            self.image_grid,
            self.latent_scale,
            list(self.label_classes) if self.label_classes else None,
            dict(self.defaults),
            self.distribution,
            dict(self.source),
            self.latent_shift,
        )

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (format: :mod:`synthbrain.model_folder`); return it. The weights are
        saved in the generator's precision (a bfloat16 generator writes bfloat16 safetensors and
        ``"torch_dtype": "bfloat16"`` in the index), and :meth:`from_pretrained` reads them back in it."""
        return write_model_folder(self.parts(), folder)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | str | None = None,
    ) -> BrainGenerator:
        """Load an embedded model by name (:data:`~synthbrain.model_folder.EMBEDDED_MODELS`: ``"default"``,
        4 mm, and ``"default-2mm"``, 2 mm; model cards in ``synthbrain/models/<name>/README.md``), a local
        folder, or a Hugging Face Hub repository id (downloaded once into the local cache, at ``revision``
        if given; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` reads the cache only).

        ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``; default: the CPU) and
        ``torch_dtype`` (``torch.float32``, ``torch.bfloat16``, ``torch.float16``, ``torch.float64`` or
        their names; default: the precision the folder was saved in, float32 for every released model)
        are diffusers' names: the same as ``from_pretrained(...).to(device, torch_dtype)``, with both
        checked before anything is read. See :meth:`to` for what each precision means.

        A MONAI bundle (a folder with ``configs/`` and ``models/``, such as the reference model
        ``"MONAI/brain_image_synthesis_latent_diffusion_model"``) is read by :mod:`synthbrain.monai_bundle`.
        Raises ``ValueError`` naming the file for anything that does not load strictly, and naming the
        argument for a ``torch_dtype`` not in :data:`synthbrain.model_folder.DTYPES` or a ``device`` this machine lacks
        (:func:`synthbrain.device.resolve_device`)."""
        dtype = None if torch_dtype is None else as_dtype(torch_dtype, "torch_dtype")
        device = None if device is None else resolve_device(device)
        if str(name_or_path) in EMBEDDED_MODELS:
            embedded = EMBEDDED_MODELS[str(name_or_path)]
            if not (embedded / INDEX).is_file():
                raise ValueError(f"name_or_path={str(name_or_path)!r}: the embedded model is missing from this installation ({embedded})")
            parts = read_model_folder(embedded)
        else:
            folder = resolve_folder(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
            from synthbrain import monai_bundle

            bundle = not (folder / INDEX).is_file() and monai_bundle.is_bundle(folder)
            parts = monai_bundle.load_bundle(folder) if bundle else read_model_folder(folder)
        return cls.from_parts(parts).to(device, dtype)

    @classmethod
    def from_training(
        cls, latents: str | os.PathLike, diffusion_run: str | os.PathLike, *, defaults: Mapping[str, Any] | None = None
    ) -> BrainGenerator:
        """A generator from training outputs: the latent cache written by ``synthbrain train autoencoder``
        (``RUN/latents``, which names its autoencoder, covariate schema, latent scale and image grid; the
        autoencoder is found beside it when the run folder moved, :func:`~synthbrain.diffusion.latents.autoencoder_folder`)
        and a diffusion run folder (``unet/``, ``scheduler/``); ``defaults`` are its sampling defaults. The
        covariate density is a one-component Gaussian per sex fitted on the training cohort's table."""
        from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
        from synthbrain.cohort.distribution import CovariateDistribution
        from synthbrain.components import load_component, load_config
        from synthbrain.diffusion.latents import LatentCache, autoencoder_folder
        from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
        from synthbrain.preprocessing.prepared import PreparedCohort
        from synthbrain.preprocessing.template import Grid
        from synthbrain.samplers.schedule import NoiseSchedule

        cache = LatentCache.load(latents)
        meta = cache.meta
        autoencoder = load_component(BrainAutoencoder, AutoencoderConfig, autoencoder_folder(latents, meta))
        unet = load_component(ConditionalUNet, DiffusionConfig, Path(diffusion_run) / "unet")
        schedule = load_config(NoiseSchedule, Path(diffusion_run) / "scheduler")
        prepared = PreparedCohort.load(meta["prepared"])
        classes = prepared.class_names
        distribution = CovariateDistribution.fit(prepared.table, cache.schema, components=1)
        grid, defaults = Grid.from_dict(meta["image_grid"]), dict(defaults) if defaults else None
        run = _io.read_json(Path(diffusion_run) / "run.json", "a diffusion run folder")
        scale, shift = cache.scaling(run["training"].get("latent_scaling", "global"))
        return cls(autoencoder, unet, schedule, cache.schema, grid, scale, classes, defaults, distribution, shift)

    def _from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        """Sampled latents (B, C, d, h, w) back to the autoencoder's latents: ``z / latent_scale + latent_shift``, in float32
        or wider (the sampler's float32 latents give the same bits as a division by a Python float)."""
        per_channel = (self.latent_scale, self.latent_shift)
        scale, shift = (torch.tensor(v, dtype=torch.float32, device=z.device).reshape(1, -1, 1, 1, 1) for v in per_channel)
        return z / scale + shift

    # ------------------------------------------------------------------ device and precision

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> BrainGenerator:
        """Move to ``device`` and, with ``dtype`` (a ``torch.dtype`` of :data:`synthbrain.model_folder.DTYPES` or its name), cast
        every weight to that precision (``module.to(dtype)``: a bfloat16 generator holds bfloat16
        parameters, half the memory of float32). Return the generator itself.

        The networks then compute in that dtype, with three exceptions that keep precision where it
        matters: the sampler's state (the noisy latent, the noise schedule's cumulative products and the
        update of each step, :mod:`synthbrain.samplers`) stays float32 (float64 in a float64 model), the
        network's input is cast to its dtype and its prediction back; MONAI's upcast attention computes
        in the weights' dtype (MONAI multiplies the float32 attention by the values in their own dtype,
        which it cannot mix); and average pooling (MONAI's down-sampling residual blocks) runs in
        float32 and is rounded back, since PyTorch has no bfloat16 / float16 ``avg_pool3d`` on the CPU.
        Both half precisions therefore run on the CPU as on CUDA. Images come back as float32 in [0, 1]
        in every case, label maps as uint8.

        Raises ``ValueError`` for a dtype not in :data:`synthbrain.model_folder.DTYPES` (naming ``dtype``) or a device this
        machine lacks (:func:`synthbrain.device.resolve_device`, the same message as the command line's)."""
        dtype = None if dtype is None else as_dtype(dtype, "dtype")
        device = None if device is None else resolve_device(device)
        for module in (self.autoencoder, self.unet):
            module.to(device=device, dtype=dtype)
        self._fit_precision()
        return self

    def _fit_precision(self) -> None:
        """Make the networks run in their parameters' one dtype (checked): MONAI attention blocks built
        with ``upcast_attention`` compute in it, and in half precision average pooling runs in float32."""
        dtype = network_dtype([self.autoencoder, self.unet])
        for module in (self.autoencoder, self.unet):
            for name, block in list(module.named_modules()):
                if getattr(block, "attention_dtype", None) is not None:
                    block.attention_dtype = dtype
                parent, _, child = name.rpartition(".")
                if dtype in HALF and isinstance(block, torch.nn.modules.pooling._AvgPoolNd):
                    if not isinstance(module.get_submodule(parent), _Float32Pooling):  # once
                        setattr(module.get_submodule(parent), child, _Float32Pooling(block))

    @property
    def units(self) -> dict[str, str]:
        """Each covariate's physical unit (``"years"``, ``"mL"``; ``""`` for a categorical one)."""
        return {c.name: c.unit for c in self.schema.covariates}

    @property
    def device(self) -> torch.device:
        """The device the networks are on."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The precision the weights are stored and the networks compute in (see :meth:`to`)."""
        return next(self.unet.parameters()).dtype

    # ------------------------------------------------------------------ generation

    def _check_guidance(self, guidance_scale: float, where: str = "") -> None:
        if guidance_scale != 1.0 and not self.unet.config.classifier_free_guidance:
            name = self.source.get("path") or "this model"
            raise ValueError(
                f"{where}guidance_scale={guidance_scale}: {name} was not trained with condition dropout (no null condition), "
                "so classifier-free guidance has no meaning for it; allowed: 1.0"
            )

    def sampling_settings(
        self, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None, timestep_spacing: str | None = None
    ) -> dict[str, Any]:
        """The sampling settings a call uses, checked: each one given, else the model's default. The
        timestep spacing defaults to the model's for the model's own sampler, and to the sampler's own
        (:data:`DEFAULT_SPACING` of its module) for another one. Raises ``ValueError`` naming the argument."""
        sampler = self.defaults["sampler"] if sampler is None else sampler
        draws.check_sampling(sampler, 1, 1.0)
        if timestep_spacing is None:
            own = sampler == self.defaults["sampler"]
            timestep_spacing = self.defaults["timestep_spacing"] if own else SAMPLERS[sampler].DEFAULT_SPACING
        settings = {
            "sampler": sampler,
            "steps": self.defaults["steps"] if steps is None else steps,
            "guidance_scale": self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale,
            "timestep_spacing": timestep_spacing,
        }
        draws.check_sampling(settings["sampler"], settings["steps"], settings["guidance_scale"], settings["timestep_spacing"])
        self._check_guidance(settings["guidance_scale"])
        self.schedule.timesteps(settings["steps"], settings["timestep_spacing"])
        return settings

    @torch.no_grad()
    def generate(
        self,
        covariates: pd.DataFrame | Mapping[str, Any] | None = None,
        /,
        *,
        n: int | None = None,
        cond_sampler: Callable[[np.random.Generator], Mapping[str, Any]] | None = None,
        seed: int | Sequence[int] = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        timestep_spacing: str | None = None,
        batch_size: int = 4,
        extrapolate: bool = False,
        raw: bool = False,
        qc: str | None = None,
        max_redraws: int = 10,
        progress: bool = False,
        **covariate_values: Any,
    ) -> GeneratedBrains:
        """Generate volumes with label maps; return :class:`GeneratedBrains` (images (B, 1, D, H, W) in [0, 1]).

        Covariates, in physical units (years, "F"/"M" or "female"/"male", mL), come one of three ways:
        as keywords (``generate(age=70, sex="F", n=2)``; scalars repeat, lists give one value per
        volume), as a DataFrame or mapping (``generate({"age": [70, 45]})``), or from ``cond_sampler``,
        a callable ``rng -> dict`` such as :class:`~synthbrain.Uniform` called once per volume. Those
        left out are drawn from the training cohort's density, conditionally on those given.

        ``seed``: an int (volume i gets ``volume_seed(seed, i)``, see :mod:`synthbrain.seeding`)
        or one volume seed per volume (a list alone sets ``n``); the ``seed`` column of the result reproduces each volume alone.
        ``progress=True`` shows one bar over the volumes (with more than one batch) and the sampler's steps of each batch.
        ``steps``, ``sampler`` (``ddim``, ``dpm++2m``, ``ddpm``), ``guidance_scale`` (classifier-free
        guidance; 1 = none) and ``timestep_spacing`` (``leading``, ``trailing``, ``linspace``) default
        to the model's. ``raw=True`` keeps the decoder's output everywhere; by default voxels whose
        label is background are set to exactly 0, as in skull-stripped prepared images. ``qc="measure"``
        adds the quality-control columns; ``qc="reject"`` also draws a failing subject again, with
        the seed ``volume_seed(its seed, attempt)``, up to ``max_redraws`` times (then an error);
        the default is the model's (``defaults["qc"]``: ``reject`` for a model whose measured broken
        rate is above 0, as the embedded default model's card records).

        Raises ``ValueError`` naming the argument for a missing, mistyped or out-of-range covariate
        (unless ``extrapolate=True``), unknown covariates, or sampling settings the model cannot take.
        """
        if n is not None and not (draws.is_int(n) and n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        if covariate_values:
            if covariates is not None:
                raise ValueError(f"covariates and keywords {sorted(covariate_values)}: give covariates one way, not both")
            unknown = [name for name in covariate_values if name not in self.schema.names]
            if unknown:
                raise ValueError(f"generate() got unknown keywords {unknown}; the model's covariates are {self.schema.names}")
            covariates = covariate_values
        if cond_sampler is not None and covariates is not None:
            raise ValueError("covariates and cond_sampler: give one or the other (a sampler can fix values, e.g. Fixed(sex='F'))")
        if n is None and covariates is None and not draws.is_int(seed) and hasattr(seed, "__len__"):
            n = len(seed)  # one volume per seed given
        given = None if cond_sampler is not None else draws.covariate_table(covariates if covariates is not None else {}, n)
        n = len(given) if given is not None else (n or 1)
        seeds = draws.volume_seeds(seed, n)
        settings = self.sampling_settings(steps, sampler, guidance_scale, timestep_spacing)
        if not (draws.is_int(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        qc = self.defaults["qc"] if qc is None else qc
        if qc not in QC_MODES:
            raise ValueError(f"qc={qc!r}; allowed: {list(QC_MODES)}")
        if qc == "reject" and not self.label_classes:
            raise ValueError("qc='reject': this model has no label maps, which the quality-control measures need; use qc='measure'")
        if not (draws.is_int(max_redraws) and max_redraws >= 0):
            raise ValueError(f"max_redraws={max_redraws!r}; allowed: an integer >= 0")
        table, drawn = draws.resolve_covariates(
            self.schema, self.distribution, seeds, given=given, cond_sampler=cond_sampler, extrapolate=extrapolate
        )
        images, labels, checks = self._sample(table, seeds, settings, batch_size, extrapolate, raw, progress)
        attempts = [0] * n
        if qc == "reject":
            for attempt in range(1, max_redraws + 1):
                failing = [i for i in range(n) if not checks.loc[i, "qc_pass"]]
                if not failing:
                    break
                redraw = [draws.volume_seed(seeds[i], attempt) for i in failing]
                # Covariates that came from the seed (a condition sampler, the training density) come from the new seed too,
                # so that the recorded seed reproduces the volume alone; given values stay.
                again = given.iloc[failing].reset_index(drop=True) if given is not None else None
                part, _ = draws.resolve_covariates(
                    self.schema, self.distribution, redraw, given=again, cond_sampler=cond_sampler, extrapolate=extrapolate
                )
                new_images, new_labels, new_checks = self._sample(part, redraw, settings, batch_size, extrapolate, raw, False)
                for k, i in enumerate(failing):
                    seeds[i], attempts[i] = redraw[k], attempt
                    images[i], labels[i] = new_images[k], new_labels[k]
                    checks.iloc[i] = new_checks.iloc[k]
                    table.iloc[i] = part.iloc[k]
            failing = [i for i in range(n) if not checks.loc[i, "qc_pass"]]
            if failing:
                raise RuntimeError(f"qc='reject': volumes {failing} still fail quality control after max_redraws={max_redraws} redraws")
        used = table.copy()
        used["seed"] = seeds
        if checks is not None:
            used = pd.concat([used, checks], axis=1)
            if qc == "reject":
                used["qc_redraws"] = attempts
        provenance = {
            "synthbrain_version": __version__,
            "model": self.source,
            **settings,
            "extrapolate": bool(extrapolate),
            "raw": bool(raw),
            "qc": qc,
            "qc_thresholds": dict(quality.THRESHOLDS) if checks is not None else None,
            "cond_sampler": _describe(cond_sampler),
            "drawn_from_training_distribution": drawn,
            "seed_scheme": "volume i of seed s: volume_seed(s, i), synthbrain.seeding",
            "dtype": str(self.dtype).removeprefix("torch."),
            "space": "MNI152NLin2009aSym",
            "grid": self.image_grid.to_dict(),
        }
        return GeneratedBrains(
            torch.stack(images),
            torch.stack(labels) if labels else None,
            used,
            self.image_grid.affine,
            self.label_classes,
            provenance,
            self.units,
        )

    def _sample(self, table, seeds, settings, batch_size, extrapolate, raw, progress):
        """Images and label maps (lists of per-volume tensors) and QC measures of the volumes whose
        covariates are ``table`` and whose volume seeds are ``seeds``."""
        condition = torch.from_numpy(self.schema.normalize(table, extrapolate=extrapolate))
        weights = self.dtype
        state = torch.promote_types(weights, torch.float32)  # the sampler's state and arithmetic: float32, or float64 in a float64 model
        guidance = settings["guidance_scale"]
        images, labels = [], []
        from tqdm.auto import tqdm

        # One bar over the volumes when there are several batches; the sampler's steps of each batch below it (not kept).
        bar = tqdm(total=len(seeds), desc="generate", unit="volume", disable=not progress or len(seeds) <= batch_size)
        for start in range(0, len(seeds), batch_size):
            part = slice(start, min(start + batch_size, len(seeds)))
            noise = draws.initial_noise(seeds[part], self.latent_shape).to(self.device, state)
            cond = condition[part].to(self.device, weights)
            stochastic = [draws.torch_stream(s, draws.SAMPLER) for s in seeds[part]]  # used by DDPM and DDIM with eta > 0 only

            def model_fn(x, t, cond=cond):
                return self.unet.guided(x.to(weights), t, cond, guidance).to(state)

            try:
                z = sample(
                    model_fn,
                    noise,
                    self.schedule,
                    settings["sampler"],
                    settings["steps"],
                    spacing=settings["timestep_spacing"],
                    generator=stochastic,
                    progress=progress,
                )
                image, logits = self.autoencoder.decode(self._from_diffusion_space(z).to(weights))
            except NotImplementedError as err:  # an operation PyTorch lacks in this precision on this device
                if weights not in HALF:
                    raise
                raise ValueError(
                    f"dtype={str(weights).removeprefix('torch.')} on {self.device.type}: this PyTorch ({torch.__version__}) cannot run "
                    f"the networks in it ({str(err).splitlines()[0]}); use float32 (to(dtype=torch.float32)) or another PyTorch"
                ) from None
            if not torch.isfinite(image).all() or (logits is not None and not torch.isfinite(logits).all()):
                hint = "; float16 overflows above 65504: use bfloat16 or float32" if weights == torch.float16 else ""
                shown = str(weights).removeprefix("torch.")
                raise RuntimeError(f"generate: the decoded volumes hold non-finite values in dtype={shown}{hint}")
            image = image.float().clamp(0, 1).cpu()
            if logits is not None:
                label = logits.argmax(dim=1).to(torch.uint8).cpu()
                labels.extend(label)
                images.extend(image if raw else image * (label > 0).unsqueeze(1))
            else:
                images.extend(image)
            bar.update(part.stop - part.start)
        bar.close()
        checks = None
        if labels:  # measured on the unmasked decoder output would hide nothing: dark labelled voxels are inside the mask
            checks = quality.measure(torch.stack(images), torch.stack(labels))
        return images, labels, checks


class _Float32Pooling(torch.nn.Module):
    """An average pooling layer run in float32 and rounded back for a half-precision input (PyTorch has no
    bfloat16 / float16 ``avg_pool3d`` on the CPU), and as it is for any other (a generator cast to half
    precision and back to float64 keeps its wrappers); no weights, so the state dict is unchanged."""

    def __init__(self, pool: torch.nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x.float()).to(x.dtype) if x.dtype in HALF else self.pool(x)


def _describe(cond_sampler: Any) -> str | None:
    if cond_sampler is None:
        return None
    from synthbrain.generator.conditions import describe

    return describe(cond_sampler)


def _per_channel(argument: str, value: Any, channels: int, *, positive: bool) -> float | tuple[float, ...]:
    """``value`` as one float, or as a tuple of ``channels`` floats (a list or tuple of that length);
    each finite, and > 0 with ``positive``. Raises ``ValueError`` naming ``argument``, the value and what
    is allowed."""

    def number(v: Any) -> bool:
        return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)

    if number(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == channels and all(map(number, value)):
        return tuple(float(v) for v in value)
    allowed = "a finite number > 0" if positive else "a finite number"
    raise ValueError(f"{argument}={value!r}; allowed: {allowed}, or a list of {channels} (one per latent channel)")
