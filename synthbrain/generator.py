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
      covariates/   covariates.json

``from_pretrained`` checks every hash before loading and loads strictly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
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
        ``preview.png``. An existing non-empty folder is refused unless ``overwrite=True``."""
        from synthbrain.preprocessing import qc

        folder = Path(folder)
        if not prefix.isalnum():
            raise ValueError(f"prefix={prefix!r}; allowed: letters and digits only (it becomes part of BIDS subject labels)")
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise ValueError(f"folder={str(folder)!r} exists and is not empty; pass overwrite=True or choose another folder")
            for previous in folder.glob(f"sub-{prefix}*"):  # a previous set, possibly larger: no stale subjects stay
                shutil.rmtree(previous)
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
        return folder


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
        self.autoencoder, self.unet = autoencoder.eval(), unet.eval()
        self.schedule, self.schema, self.image_grid = schedule, schema, image_grid
        self.latent_scale = float(latent_scale)
        self.label_classes = tuple(label_classes) if label_classes else None
        factor = autoencoder.config.downsample
        self.latent_shape = (autoencoder.config.latent_channels, *(n // factor for n in image_grid.shape))
        self.defaults = {"sampler": "ddim", "steps": 50, "guidance_scale": 1.0, **(defaults or {})}
        self.source: dict[str, Any] = {"path": None, "sha256": None}  # set when loaded from disk
        self.distribution = distribution  # the training covariates' density, to draw what a caller leaves out

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        save_component(self.autoencoder, folder / "autoencoder")
        save_component(self.unet, folder / "unet")
        _io.write_json(folder / "scheduler" / "config.json", {"class": "NoiseSchedule", **self.schedule.to_dict()})
        self.schema.save(folder / "covariates" / "covariates.json")
        if self.distribution is not None:
            _io.write_json(folder / "covariates" / "distribution.json", self.distribution.to_dict())
        _io.write_json(
            folder / INDEX,
            {
                "class": "BrainGenerator",
                "synthbrain_version": __version__,
                "components": {
                    name: {"path": name, "sha256": _io.sha256_file(folder / name / WEIGHTS)} for name in ("autoencoder", "unet")
                },
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
        index = json.loads((folder / INDEX).read_text())
        unknown = sorted(set(index) - INDEX_KEYS)
        if unknown or index.get("class") != "BrainGenerator":
            raise ValueError(f"{folder / INDEX}: unknown keys {unknown} or class {index.get('class')!r}; expected class 'BrainGenerator'")
        for name, entry in index["components"].items():
            weights = folder / entry["path"] / WEIGHTS
            if not weights.is_file():
                raise ValueError(f"{weights}: missing")
            found = _io.sha256_file(weights)
            if found != entry["sha256"]:
                raise ValueError(
                    f"{weights}: sha256 {found[:12]}... differs from the index's {entry['sha256'][:12]}...; "
                    "the file is truncated or was modified"
                )
        autoencoder = load_component(BrainAutoencoder, AutoencoderConfig, folder / index["components"]["autoencoder"]["path"])
        unet = load_component(ConditionalUNet, DiffusionConfig, folder / index["components"]["unet"]["path"])
        scheduler = json.loads((folder / "scheduler" / "config.json").read_text())
        if scheduler.pop("class", None) != "NoiseSchedule":
            raise ValueError(f"{folder / 'scheduler' / 'config.json'}: not a NoiseSchedule")
        schema = CovariateSchema.load(folder / "covariates" / "covariates.json")
        distribution_file = folder / "covariates" / "distribution.json"
        distribution = None
        if distribution_file.is_file():
            distribution = CovariateDistribution.from_dict(json.loads(distribution_file.read_text()), schema)
        generator = cls(
            autoencoder,
            unet,
            NoiseSchedule.from_dict(scheduler),
            schema,
            Grid.from_dict(index["image_grid"]),
            index["latent_scale"],
            index["label_classes"],
            index["defaults"],
            distribution,
        )
        generator.source = {"path": str(folder.resolve()), "sha256": {k: v["sha256"] for k, v in index["components"].items()}}
        return generator

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BrainGenerator:
        self.autoencoder.to(device=device, dtype=dtype)
        self.unet.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        covariates: pd.DataFrame | Mapping[str, Any] | None = None,
        *,
        n: int | None = None,
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
        to the length of the lists). ``seed`` is an int (volume i gets seed + i) or one seed per
        volume; each volume's starting noise comes from its own seed, so with a deterministic
        sampler (``ddim`` with eta 0, ``dpm++2m``) a volume does not depend on the batch it was in.

        Covariates left out (all of them with ``covariates=None`` and ``n`` volumes) are drawn from
        the training cohort's distribution, conditionally on those given, from each volume's seed.
        """
        table = _covariate_table(covariates if covariates is not None else {}, n)
        n = len(table)
        seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"seed: {len(seeds)} seeds for {n} volumes; give one per volume or a single int")
        missing = [name for name in self.schema.names if name not in table.columns]
        if missing:
            if self.distribution is None:
                raise ValueError(f"covariates: missing {missing}, and this model has no covariate distribution to draw them from")
            drawn = [
                self.distribution.sample(1, {k: v for k, v in row.items() if not is_missing(v)}, seed=s)
                for row, s in zip(table.to_dict("records"), seeds)
            ]
            table = pd.concat(drawn, ignore_index=True)[self.schema.names]
        condition = torch.from_numpy(self.schema.normalize(table, extrapolate=extrapolate))
        steps = self.defaults["steps"] if steps is None else steps
        sampler = sampler or self.defaults["sampler"]
        get_sampler(sampler)
        guidance_scale = self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale={guidance_scale}; allowed: >= 0")
        images, labels = [], []
        for start in range(0, n, batch_size):
            part = slice(start, min(start + batch_size, n))
            noise = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds[part]])
            noise = noise.to(self.device, self.dtype)
            cond = condition[part].to(self.device, self.dtype)
            generator = torch.Generator().manual_seed(seeds[part][0])  # stochastic samplers only

            def model_fn(x, t, cond=cond):
                return self.unet.guided(x, t, cond, guidance_scale)

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
            "space": "MNI152NLin2009aSym",
            "grid": self.image_grid.to_dict(),
        }
        return GeneratedBrains(
            torch.cat(images), torch.cat(labels) if labels else None, used, self.image_grid.affine, self.label_classes, provenance
        )


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
    scheduler = json.loads((Path(diffusion_run) / "scheduler.json").read_text())
    scheduler.pop("class", None)
    scheduler.pop("synthbrain_version", None)
    scheme_file = Path(meta["prepared"]) / "label_scheme.json"
    classes = [c["name"] for c in json.loads(scheme_file.read_text())["classes"]] if scheme_file.is_file() else None
    schema = CovariateSchema.from_dict(meta["schema"])
    table = pd.read_csv(Path(meta["prepared"]) / "participants.tsv", sep="\t", na_values=["n/a"])
    distribution = CovariateDistribution.fit(table, schema, components=1)  # the training cohort's covariates, as a density
    return BrainGenerator(
        autoencoder,
        unet,
        NoiseSchedule.from_dict(scheduler),
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

    folder = snapshot_download(repo_id=str(name_or_path), revision=revision, cache_dir=cache_dir, local_files_only=bool(local_files_only))
    return Path(folder)


def _covariate_table(covariates: pd.DataFrame | Mapping[str, Any], n: int | None = None) -> pd.DataFrame:
    if n is not None and not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n={n!r}; allowed: an integer >= 1")
    if isinstance(covariates, pd.DataFrame):
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
    else:
        raise ValueError(f"covariates: {type(covariates).__name__}; allowed: a DataFrame or a mapping of name to value(s)")
    if len(table) == 0:
        raise ValueError("covariates: no rows; need at least one volume to generate")
    return table
