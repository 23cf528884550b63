"""Stage 5, generation: ``BrainGenerator`` ties the autoencoder, the diffusion UNet, the noise
schedule and the covariate schema together, and turns covariates in physical units into T1 volumes
with matching label maps on a known MNI grid.

On disk (``save_pretrained``)::

    model/
      synthbrain_generator.json   index: components with the sha256 of each weight file, image grid,
                                  latent shape and scale, label classes, sampling defaults, version
      autoencoder/  config.json, model.safetensors
      unet/         config.json, model.safetensors
      scheduler/    config.json
      covariates/   covariates.json (schema), distribution.json (training covariates' density, optional)

``from_pretrained`` checks every hash before loading and loads strictly: unknown or missing keys in
the index or any config, missing or unexpected weights and a latent shape that the components do
not give are errors naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthbrain import __version__, _io
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.cohort.covariates import CovariateSchema, is_missing
from synthbrain.cohort.distribution import CovariateDistribution
from synthbrain.components import WEIGHTS, load_component, save_component
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
from synthbrain.preprocessing.template import Grid
from synthbrain.samplers import get_sampler, sample
from synthbrain.samplers.schedule import NoiseSchedule

INDEX = "synthbrain_generator.json"
# The embedded default model (trained on IXI-HH by examples/train_default_model.sh; model card beside it).
DEFAULT_MODEL = Path(__file__).parent / "models" / "default"
INDEX_KEYS = {"class", "synthbrain_version", "components", "image_grid", "latent_shape", "latent_scale", "label_classes", "defaults"}
COMPONENTS = ("autoencoder", "unet")
DEFAULT_KEYS = ("sampler", "steps", "guidance_scale")
# Precisions ``BrainGenerator.to`` takes: float32 and float64 cast the weights; bfloat16 and float16 keep float32 weights and
# run under torch.autocast (MONAI's networks upcast attention and normalisation to float32, which only autocast reconciles).
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass
class GeneratedBrains:
    images: torch.Tensor  # (B, 1, D, H, W) float in [0, 1]
    labels: torch.Tensor | None  # (B, D, H, W) uint8 class indices
    covariates: pd.DataFrame  # the physical covariates used, one row per volume, with the seed
    affine: np.ndarray  # voxel -> MNI mm (RAS), shared by every volume
    label_classes: tuple[str, ...] | None = None
    provenance: dict[str, Any] | None = None  # model hashes, sampler, steps, guidance scale

    def save(self, folder: str | os.PathLike, *, prefix: str = "synth", overwrite: bool = False) -> Path:
        """Write a BIDS-like dataset: ``sub-<prefix><i>/anat/..._T1w.nii.gz`` and ``..._dseg.nii.gz``,
        ``participants.tsv``, ``dseg.tsv``, ``provenance.json``, ``dataset_description.json`` and
        ``preview.png``.

        An existing non-empty folder is refused unless ``overwrite=True``, and even then only when
        it holds a previous synthbrain dataset (so a mistyped path never deletes other files). The
        dataset is written into a hidden folder beside ``folder`` and moved into place when complete:
        an interrupted or failed save leaves the previous state (no folder, or the previous dataset)
        and at most that hidden folder, which the next save beside it removes."""
        from synthbrain.preprocessing import qc

        if not (isinstance(prefix, str) and prefix.isalnum()):
            raise ValueError(f"prefix={prefix!r}; allowed: letters and digits only (it becomes part of BIDS subject labels)")
        check_output_folder(folder, overwrite)
        target = Path(os.path.realpath(folder))
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(target)
        staging = target.parent / f"{_io.TMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}"
        try:
            staging.mkdir()
            self._write(staging, prefix, qc)
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Path(folder)

    def _write(self, folder: Path, prefix: str, qc) -> None:
        ids = [f"sub-{prefix}{i:05d}" for i in range(len(self.images))]
        for i, sid in enumerate(ids):
            anat = folder / sid / "anat"
            _io.save_nifti(anat / f"{sid}_T1w.nii.gz", self.images[i, 0].numpy().astype(np.float32), self.affine)
            if self.labels is not None:
                _io.save_nifti(anat / f"{sid}_dseg.nii.gz", self.labels[i].numpy().astype(np.uint8), self.affine)
        _io.write_table(
            folder / "participants.tsv", self.covariates.assign(participant_id=ids)[["participant_id", *self.covariates.columns]]
        )
        if self.label_classes:
            _io.write_table(folder / "dseg.tsv", pd.DataFrame({"index": range(len(self.label_classes)), "name": self.label_classes}))
        _io.write_json(
            folder / "provenance.json", {**(self.provenance or {}), "subjects": dict(zip(ids, self.covariates["seed"].tolist()))}
        )
        _io.write_json(
            folder / "dataset_description.json",
            {
                "Name": "synthbrain synthetic T1w volumes",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "synthbrain", "Version": __version__}],
            },
        )
        shown = min(len(ids), 8)
        qc.montage(
            folder / "preview.png",
            [self.images[i, 0].numpy() for i in range(shown)],
            [self.labels[i].numpy() if self.labels is not None else None for i in range(shown)],
            [
                f"{ids[i]}  "
                + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.covariates.iloc[i].items())
                for i in range(shown)
            ],
            len(self.label_classes) if self.label_classes else None,
        )


def check_output_folder(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output folder that :meth:`GeneratedBrains.save` could not or must
    not write: a file, a non-empty folder without ``overwrite``, a non-empty folder that is not a
    previous synthbrain dataset, or a place without write permission."""
    path = Path(folder)
    shown = str(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"folder={shown!r} is a file; allowed: a new or empty folder, or a previous output with overwrite=True")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(
                f"folder={shown!r} exists and is not empty; pass overwrite=True (--overwrite) to replace a previous output, "
                "or choose another folder"
            )
        if not _is_generated_dataset(path):
            raise ValueError(
                f"folder={shown!r} holds files that synthbrain did not write (no provenance.json and dataset_description.json "
                "from synthbrain); overwrite=True only replaces a previous synthbrain dataset, so choose another folder"
            )
    ancestor = Path(os.path.realpath(path)).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"folder={shown!r}: {str(ancestor)!r} is a file, not a folder; choose another output folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"folder={shown!r}: no permission to write in {str(ancestor)!r}; choose a writable folder")
    return path


def _is_generated_dataset(folder: Path) -> bool:
    try:
        description = json.loads((folder / "dataset_description.json").read_text(encoding="utf-8"))
        return (folder / "provenance.json").is_file() and description["GeneratedBy"][0]["Name"] == "synthbrain"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def _remove_stale_staging(target: Path) -> None:
    """Hidden folders left beside ``target`` by a save that was killed (the only way one stays)."""
    pattern = re.compile(rf"{re.escape(_io.TMP_PREFIX)}[0-9a-f]{{12}}-(old-)?{re.escape(target.name)}")
    for path in target.parent.iterdir():
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` folder to ``target``; a previous dataset there is moved aside
    first and deleted only once the new one is in place (restored if the rename fails)."""
    if target.is_dir() and any(target.iterdir()):
        old = target.parent / f"{_io.TMP_PREFIX}{uuid.uuid4().hex[:12]}-old-{target.name}"
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old)
        return
    if target.is_dir():
        target.rmdir()
    os.replace(staging, target)


class BrainGenerator:
    def __init__(
        self,
        autoencoder: BrainAutoencoder,
        unet: ConditionalUNet,
        schedule: NoiseSchedule,
        schema: CovariateSchema,
        image_grid: Grid,
        latent_scale: float,
        label_classes: Sequence[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        distribution: CovariateDistribution | None = None,
    ):
        if not schema.fitted:
            raise ValueError("schema: the covariate schema must be fitted on the training cohort")
        if unet.config.condition_dim != schema.width:
            raise ValueError(f"unet.config.condition_dim={unet.config.condition_dim} differs from the schema's width {schema.width}")
        unknown = sorted(set(defaults or {}) - set(DEFAULT_KEYS))
        if unknown:
            raise ValueError(f"defaults: unknown keys {unknown}; allowed: {list(DEFAULT_KEYS)}")
        self.autoencoder, self.unet = autoencoder.eval(), unet.eval()
        self.schedule, self.schema, self.image_grid = schedule, schema, image_grid
        self.latent_scale = float(latent_scale)
        self.label_classes = tuple(label_classes) if label_classes else None
        factor = autoencoder.config.downsample
        self.latent_shape = (autoencoder.config.latent_channels, *(n // factor for n in image_grid.shape))
        self.defaults = {"sampler": "ddim", "steps": 50, "guidance_scale": 1.0, **(defaults or {})}
        _check_sampling(self.defaults["sampler"], self.defaults["steps"], self.defaults["guidance_scale"], "defaults: ")
        self.source: dict[str, Any] = {"path": None, "sha256": None}  # set when loaded from disk
        self.distribution = distribution  # the training covariates' density, to draw what a caller leaves out
        self._autocast: torch.dtype | None = None  # bfloat16 / float16 after .to(dtype=...): autocast over float32 weights

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the model folder (see the module docstring). Over an existing model folder the index
        is removed first and written last, so an interrupted save leaves a folder that loading
        refuses (no index) rather than one that mixes old and new files."""
        folder = Path(folder)
        if (folder / INDEX).is_file():
            (folder / INDEX).unlink()
        save_component(self.autoencoder, folder / "autoencoder")
        save_component(self.unet, folder / "unet")
        _io.write_json(folder / "scheduler" / "config.json", {"class": "NoiseSchedule", **self.schedule.to_dict()})
        self.schema.save(folder / "covariates" / "covariates.json")
        if self.distribution is not None:
            _io.write_json(folder / "covariates" / "distribution.json", self.distribution.to_dict())
        elif (folder / "covariates" / "distribution.json").is_file():  # a previous model's density must not load with this one
            (folder / "covariates" / "distribution.json").unlink()
        _io.write_json(
            folder / INDEX,
            {
                "class": "BrainGenerator",
                "synthbrain_version": __version__,
                "components": {name: {"path": name, "sha256": _io.sha256_file(folder / name / WEIGHTS)} for name in COMPONENTS},
                "image_grid": self.image_grid.to_dict(),
                "latent_shape": list(self.latent_shape),
                "latent_scale": self.latent_scale,
                "label_classes": list(self.label_classes) if self.label_classes else None,
                "defaults": self.defaults,
            },
        )
        return folder

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
    ) -> BrainGenerator:
        """Load ``"default"`` (the model embedded in the package, see ``synthbrain/models/default/README.md``),
        a local folder, or a Hugging Face Hub repository id (downloaded once into the local cache, at
        ``revision`` if given; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` reads the cache only).

        A MONAI bundle (a folder with ``configs/`` and ``models/``, such as the reference model
        ``"MONAI/brain_image_synthesis_latent_diffusion_model"``) is read by :mod:`synthbrain.monai_bundle`."""
        if str(name_or_path) == "default":
            if not (DEFAULT_MODEL / INDEX).is_file():
                raise ValueError(f"name_or_path='default': the embedded model is missing from this installation ({DEFAULT_MODEL})")
            return cls._load_folder(DEFAULT_MODEL)
        folder = resolve_folder(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        if not (folder / INDEX).is_file():
            from synthbrain import monai_bundle

            if monai_bundle.is_bundle(folder):
                return monai_bundle.load_bundle(folder)
        return cls._load_folder(folder)

    @classmethod
    def _load_folder(cls, folder: Path) -> BrainGenerator:
        if not (folder / INDEX).is_file():
            raise ValueError(f"{folder}: no {INDEX}; not a synthbrain generator folder")
        index = _read_json(folder / INDEX)
        unknown, absent = sorted(set(index) - INDEX_KEYS), sorted(INDEX_KEYS - set(index))
        if unknown or absent or index.get("class") != "BrainGenerator":
            raise ValueError(
                f"{folder / INDEX}: unknown keys {unknown}, missing keys {absent}, class {index.get('class')!r}; "
                f"expected exactly {sorted(INDEX_KEYS)} and class 'BrainGenerator'"
            )
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
        autoencoder = load_component(BrainAutoencoder, AutoencoderConfig, folder / components["autoencoder"]["path"])
        unet = load_component(ConditionalUNet, DiffusionConfig, folder / components["unet"]["path"])
        scheduler_file = folder / "scheduler" / "config.json"
        scheduler = _read_json(scheduler_file)
        if scheduler.pop("class", None) != "NoiseSchedule":
            raise ValueError(f"{scheduler_file}: not a NoiseSchedule")
        schema_file, distribution_file = folder / "covariates" / "covariates.json", folder / "covariates" / "distribution.json"
        with _about(scheduler_file):
            schedule = NoiseSchedule.from_dict(scheduler)
        with _about(schema_file):
            schema = CovariateSchema.from_dict(_read_json(schema_file))
        distribution = None
        if distribution_file.is_file():
            with _about(distribution_file):
                distribution = CovariateDistribution.from_dict(_read_json(distribution_file), schema)
        with _about(folder / INDEX):
            generator = cls(
                autoencoder,
                unet,
                schedule,
                schema,
                Grid.from_dict(index["image_grid"]),
                index["latent_scale"],
                index["label_classes"],
                index["defaults"],
                distribution,
            )
        if list(generator.latent_shape) != list(index["latent_shape"]):
            raise ValueError(
                f"{folder / INDEX}: latent_shape {index['latent_shape']} differs from {list(generator.latent_shape)}, "
                "which the autoencoder and image grid give; the folder mixes files of different models"
            )
        generator.source = {"path": str(folder.resolve()), "sha256": {k: v["sha256"] for k, v in components.items()}}
        return generator

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BrainGenerator:
        """Move to ``device`` and, with ``dtype``, change the precision: float32 or float64 weights, or
        bfloat16 / float16 computation (torch.autocast over float32 weights, since MONAI's networks
        keep attention and normalisation in float32). Images come back as float32 in every case."""
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; allowed: {[str(d) for d in DTYPES]}")
        weights = None if dtype is None else (torch.float64 if dtype == torch.float64 else torch.float32)
        for module in (self.autoencoder, self.unet):
            module.to(device=device, dtype=weights)
            if weights is not None:
                # MONAI attention built with upcast_attention computes q.k in attention_dtype (float32) and multiplies by v
                # in the weights' dtype; in a float64 model that mixes dtypes, so it computes in float64 there.
                for block in module.modules():
                    if getattr(block, "attention_dtype", None) is not None:
                        block.attention_dtype = weights
        if dtype is not None:
            self._autocast = dtype if dtype in (torch.bfloat16, torch.float16) else None
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the computation: the weights' dtype, or the autocast dtype set by ``.to``."""
        return self._autocast or next(self.unet.parameters()).dtype

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        covariates: pd.DataFrame | Mapping[str, Any] | None = None,
        *,
        n: int | None = None,
        cond_sampler: Callable[[np.random.Generator], Mapping[str, Any]] | None = None,
        seed: int | Sequence[int] = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        batch_size: int = 4,
        extrapolate: bool = False,
        progress: bool = False,
    ) -> GeneratedBrains:
        """Generate one volume per row of ``covariates`` (physical units: years, "F"/"M", mL).

        ``covariates`` is a DataFrame or a mapping of name to scalar or list (scalars are repeated
        to the length of the lists). Or ``cond_sampler`` draws each volume's covariates: a callable
        ``rng -> dict`` such as :class:`synthbrain.datasets.Uniform` or ``Fixed`` (see
        :mod:`synthbrain.datasets.conditions`), called once per volume with a numpy generator
        derived from that volume's seed, for ``n`` volumes. ``seed`` is an int (volume i gets
        seed + i) or one seed per volume; each volume's starting noise comes from its own seed, so
        with a deterministic sampler (``ddim`` with eta 0, ``dpm++2m``) a volume does not depend on
        the batch it was in.

        Covariates left out (all of them with ``covariates=None`` and ``n`` volumes, or those a
        sampler does not return) are drawn from the training cohort's distribution, conditionally
        on those given, from each volume's seed. A given value that is missing (None, NaN, empty),
        of the wrong type, or outside the training range (unless ``extrapolate=True``) is an error.
        """
        if n is not None and not (_is_int(n) and n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        if cond_sampler is not None:
            if covariates is not None:
                raise ValueError("covariates and cond_sampler: give one or the other (a sampler can fix values, e.g. Fixed(sex='F'))")
            rows = [{} for _ in range(n or 1)]
        else:
            rows = self._given_rows(_covariate_table(covariates if covariates is not None else {}, n))
        n = len(rows)
        seeds = _seeds(seed, n)
        steps = self.defaults["steps"] if steps is None else steps
        sampler = self.defaults["sampler"] if sampler is None else sampler
        guidance_scale = self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        _check_sampling(sampler, steps, guidance_scale)
        if not (_is_int(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        if cond_sampler is not None:
            rows = self._sampled_rows(cond_sampler, seeds, extrapolate)
        table, drawn = self._complete(rows, seeds, extrapolate)
        condition = torch.from_numpy(self.schema.normalize(table, extrapolate=extrapolate))
        weights = next(self.unet.parameters()).dtype
        autocast = torch.autocast(self.device.type, dtype=self._autocast) if self._autocast else contextlib.nullcontext()
        images, labels = [], []
        for start in range(0, n, batch_size):
            part = slice(start, min(start + batch_size, n))
            noise = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds[part]])
            noise = noise.to(self.device, weights)
            cond = condition[part].to(self.device, weights)
            generator = torch.Generator().manual_seed(seeds[part][0])  # stochastic samplers only

            def model_fn(x, t, cond=cond):
                return self.unet.guided(x, t, cond, guidance_scale)

            with autocast:
                z = sample(model_fn, noise, self.schedule, sampler, steps, generator=generator, progress=progress) / self.latent_scale
                image, logits = self.autoencoder.decode(z)
            images.append(image.float().clamp(0, 1).cpu())
            if logits is not None:
                labels.append(logits.argmax(dim=1).to(torch.uint8).cpu())
        used = table.copy()
        used["seed"] = seeds
        provenance = {
            "synthbrain_version": __version__,
            "model": self.source,
            "sampler": sampler,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "extrapolate": bool(extrapolate),
            "cond_sampler": _describe(cond_sampler),
            "drawn_from_training_distribution": drawn,
            "dtype": str(self.dtype).removeprefix("torch."),
            "space": "MNI152NLin2009aSym",
            "grid": self.image_grid.to_dict(),
        }
        return GeneratedBrains(
            torch.cat(images), torch.cat(labels) if labels else None, used, self.image_grid.affine, self.label_classes, provenance
        )

    def _given_rows(self, table: pd.DataFrame) -> list[dict[str, Any]]:
        """The caller's covariates, one dict per volume; unknown names and missing values are errors."""
        unknown = [name for name in table.columns if name not in self.schema.names]
        if unknown:
            raise ValueError(f"covariates: unknown {unknown}; the model knows {self.schema.names}")
        for name in table.columns:
            for i, value in enumerate(table[name]):
                if is_missing(value):
                    leave_out = f"; leave {name!r} out to draw it from the training distribution" if self.distribution else ""
                    raise ValueError(
                        f"covariates: {name}={value!r} for volume {i} is missing; allowed: {self.schema[name].allowed}{leave_out}"
                    )
        return table.to_dict("records")

    def _sampled_rows(self, cond_sampler, seeds: list[int], extrapolate: bool) -> list[dict[str, Any]]:
        """One draw of ``cond_sampler`` per volume, from a generator derived from the volume's seed
        (a stream apart from the one the training density draws from); missing values are left out."""
        from synthbrain.datasets.conditions import check_sampler

        check_sampler(cond_sampler, self.schema, extrapolate, complete=self.distribution is None)
        rows = []
        for i, s in enumerate(seeds):
            row = cond_sampler(np.random.default_rng(np.random.SeedSequence(s, spawn_key=(1,))))
            if not isinstance(row, Mapping):
                raise ValueError(f"cond_sampler returned {type(row).__name__} for volume {i}; allowed: a dict of covariate name to value")
            unknown = [k for k in row if k not in self.schema.names]
            if unknown:  # not silently dropped: the sampler means something the model cannot condition on
                raise ValueError(f"cond_sampler gave unknown covariates {unknown} for volume {i}; the model knows {self.schema.names}")
            rows.append({k: v for k, v in row.items() if not is_missing(v)})
        return rows

    def _complete(self, rows: list[dict[str, Any]], seeds: list[int], extrapolate: bool) -> tuple[pd.DataFrame, list[str]]:
        """Every covariate of every volume: given values checked (type, unit range) first, the rest
        drawn from the training density with the volume's seed."""
        names = self.schema.names
        for name in names:
            values = [row[name] for row in rows if name in row]
            if values:
                self.schema[name].check_range(self.schema[name].parse(values), extrapolate)
        missing = [name for name in names if any(name not in row for row in rows)]
        if missing and self.distribution is None:
            raise ValueError(f"covariates: missing {missing}, and this model has no covariate distribution to draw them from")
        complete = [
            row if all(name in row for name in names) else self.distribution.sample(1, row, seed=s).iloc[0].to_dict()
            for row, s in zip(rows, seeds)
        ]
        return pd.DataFrame(complete, index=range(len(complete)))[names], missing


def assemble_generator(
    latents: str | os.PathLike, diffusion_run: str | os.PathLike, *, defaults: Mapping[str, Any] | None = None
) -> BrainGenerator:
    """A generator from training outputs: the latent cache (which names its autoencoder, covariate
    schema, latent scale and image grid) and a diffusion run folder (``unet/``, ``scheduler.json``)."""
    meta = json.loads((Path(latents) / "latents.json").read_text())
    autoencoder = load_component(BrainAutoencoder, AutoencoderConfig, meta["autoencoder"])
    if _io.sha256_file(Path(meta["autoencoder"]) / WEIGHTS) != meta["autoencoder_sha256"]:
        raise ValueError(f"{meta['autoencoder']}: the autoencoder changed after these latents were cached; cache them again")
    unet = load_component(ConditionalUNet, DiffusionConfig, Path(diffusion_run) / "unet")
    from synthbrain.components import load_config

    schedule = load_config(NoiseSchedule, Path(diffusion_run) / "scheduler")
    scheme_file = Path(meta["prepared"]) / "label_scheme.json"
    classes = [c["name"] for c in json.loads(scheme_file.read_text())["classes"]] if scheme_file.is_file() else None
    schema = CovariateSchema.from_dict(meta["schema"])
    table = pd.read_csv(Path(meta["prepared"]) / "participants.tsv", sep="\t", na_values=["n/a"])
    distribution = CovariateDistribution.fit(table, schema, components=1)  # the training cohort's covariates, as a density
    return BrainGenerator(
        autoencoder,
        unet,
        schedule,
        schema,
        Grid.from_dict(meta["image_grid"]),
        meta["scale"],
        classes,
        defaults,
        distribution,
    )


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder as it is, or a Hub id ('owner/name') as its snapshot folder in the local cache."""
    folder = Path(name_or_path)
    if folder.is_dir():
        return folder
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise ValueError(f"name_or_path={str(name_or_path)!r}: not a folder, and not a Hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    name = str(name_or_path)
    try:
        folder = snapshot_download(repo_id=name, revision=revision, cache_dir=cache_dir, local_files_only=bool(local_files_only))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"name_or_path={name!r}: not found in the local Hub cache ({cache_dir or 'the default cache'}), and the Hub was not "
            "asked (offline: HF_HUB_OFFLINE=1 or local_files_only=True) or could not be reached; download it once online, "
            "or pass a local folder"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"name_or_path={name!r}: revision={revision!r} not on the Hub; allowed: a branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise ValueError(f"name_or_path={name!r}: no such repository on the Hub, or it is private or gated (log in first)") from None
    except OSError as err:  # network and HTTP errors: one line, not a traceback
        raise ValueError(f"name_or_path={name!r}: could not be downloaded from the Hub ({str(err).splitlines()[0]})") from None
    return Path(folder)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One non-negative integer seed per volume, from an int (seed + i) or a sequence."""
    if _is_int(seed):
        if seed < 0:
            raise ValueError(f"seed={seed!r}; allowed: an integer >= 0, or one per volume")
        return [int(seed) + i for i in range(n)]
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray, pd.Series)):
        raise ValueError(f"seed={seed!r}; allowed: an integer >= 0, or a list of one per volume")
    bad = [s for s in seed if not (_is_int(s) and s >= 0)]
    if bad:
        raise ValueError(f"seed: values {bad[:10]}; allowed: integers >= 0")
    if len(seed) != n:
        raise ValueError(f"seed: {len(seed)} seeds for {n} volumes; give one per volume or a single int")
    return [int(s) for s in seed]


def _check_sampling(sampler: Any, steps: Any, guidance_scale: Any, where: str = "") -> None:
    if not isinstance(sampler, str):
        raise ValueError(f"{where}sampler={sampler!r}; allowed: a sampler name")
    get_sampler(sampler)
    if not (_is_int(steps) and steps >= 1):
        raise ValueError(f"{where}steps={steps!r}; allowed: an integer >= 1")
    if not (isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool) and math.isfinite(guidance_scale)):
        raise ValueError(f"{where}guidance_scale={guidance_scale!r}; allowed: a finite number >= 0")
    if guidance_scale < 0:
        raise ValueError(f"{where}guidance_scale={guidance_scale}; allowed: >= 0")


def _describe(cond_sampler: Any) -> str | None:
    if cond_sampler is None:
        return None
    from synthbrain.datasets.conditions import describe

    return describe(cond_sampler)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder, or a clear error naming the file."""
    if not path.is_file():
        raise ValueError(f"{path}: missing; a generator folder holds {INDEX}, autoencoder/, unet/, scheduler/config.json and covariates/")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON {type(data).__name__}; expected an object")
    return data


@contextlib.contextmanager
def _about(path: Path):
    """Errors from reading ``path``'s content, prefixed with the file, as ``ValueError``."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{path}: {detail}") from None


def _covariate_table(covariates: pd.DataFrame | Mapping[str, Any], n: int | None = None) -> pd.DataFrame:
    if isinstance(covariates, pd.DataFrame):
        if n is not None and n != len(covariates):
            raise ValueError(f"n={n}: the covariates table has {len(covariates)} rows; give n=None or a table of n rows")
        table = covariates.reset_index(drop=True)
    elif isinstance(covariates, Mapping):
        lengths = {len(v) for v in covariates.values() if isinstance(v, (list, tuple, np.ndarray, pd.Series))}
        if n is not None:
            lengths.add(n)
        if len(lengths) > 1:
            raise ValueError(f"covariates: lists of different lengths, or not of n={n}: {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        table = pd.DataFrame(
            {k: list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v] * n for k, v in covariates.items()},
            index=range(n),
        )
    elif callable(covariates):
        raise ValueError(f"covariates={covariates!r}: a condition sampler; pass it as cond_sampler= (with n volumes)")
    else:
        raise ValueError(f"covariates: {type(covariates).__name__}; allowed: a DataFrame or a mapping of name to value(s)")
    if len(table) == 0:
        raise ValueError("covariates: no rows; need at least one volume to generate")
    return table
