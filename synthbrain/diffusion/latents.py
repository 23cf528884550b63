"""Encode a prepared cohort once with a trained autoencoder, so diffusion training never re-encodes.

Writes ``latents.safetensors`` (posterior means, (N, C, d, h, w), and normalised covariates,
(N, width), NaN rows where a covariate is missing) and ``latents.json`` (subject order, the
latent scale 1/std that diffusion training multiplies by, the covariate schema, the grid that the
decoder's images lie on, provenance).

``mirror=True`` also encodes every subject mirrored left-right about the MNI midline (the grids
are centred on it) and stores it as an extra subject ``<id>:mirrored`` with the same covariates:
brains are near-symmetric, and the coarse label classes have no left/right, so this doubles the
diffusion stage's training set at the cost of one more encoding pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from synthbrain import _io
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.cohort.covariates import CovariateSchema
from synthbrain.components import WEIGHTS, load_component
from synthbrain.preprocessing.prepared import PreparedCohort

# How latents are brought to unit variance for diffusion training (LatentCache.scaling).
LATENT_SCALINGS = ("global", "per_channel")


@dataclass
class LatentCache:
    """A latent cache folder written by :func:`cache_latents`, in memory.

    ``latents``: float32 posterior means (N, C, d, h, w), unscaled (diffusion training multiplies them by
    ``scale``); ``conditions``: float32 normalised covariates (N, schema.width), a NaN row where a subject
    lacks a covariate; ``subject_ids``: N ids in row order (mirrored copies as ``<id>:mirrored``);
    ``scale``: 1 / standard deviation of all latent elements; ``schema``: the covariate schema;
    ``meta``: the whole ``latents.json`` (autoencoder path and sha256, prepared cohort, image grid,
    downsampling, mirroring, latent shape).
    """

    latents: torch.Tensor  # (N, C, d, h, w), unscaled
    conditions: torch.Tensor  # (N, width); NaN rows where covariates are missing
    subject_ids: list[str]
    scale: float
    schema: CovariateSchema
    meta: dict  # latents.json: autoencoder path and sha256, prepared cohort, image grid, downsampling, mirroring

    @classmethod
    def load(cls, folder: str | Path) -> LatentCache:
        """Read ``latents.json`` and ``latents.safetensors`` from ``folder``. Raises ``ValueError`` when
        ``folder`` has no ``latents.json``."""
        folder = Path(folder)
        if not (folder / "latents.json").is_file():
            raise ValueError(f"latents={str(folder)!r}: no latents.json (run the latent caching step first)")
        meta = _io.read_json(folder / "latents.json", "run the latent caching step first")
        tensors = load_file(folder / "latents.safetensors")
        schema = CovariateSchema.from_dict(meta["schema"])
        return cls(tensors["latents"], tensors["conditions"], meta["subject_ids"], meta["scale"], schema, meta)

    def scaling(self, kind: str = "global") -> tuple[float | list[float], float | list[float]]:
        """The affine map into the space the diffusion model is trained in, ``(latents - shift) * scale``,
        as ``(scale, shift)``. ``"global"``: ``scale`` is the cache's one factor, 1 / the standard deviation
        of all latent elements, and ``shift`` 0 (Rombach et al. 2022's scale factor). ``"per_channel"``:
        lists of C values, 1 / each channel's standard deviation and each channel's mean over every cached
        latent (subjects and voxels), so that every channel has mean 0 and variance 1 before noise of
        variance 1 is added. Raises ``ValueError`` for another ``kind`` or a channel that is constant."""
        if kind == "global":
            return self.scale, 0.0
        if kind != "per_channel":
            raise ValueError(f"latent_scaling={kind!r}; allowed: {list(LATENT_SCALINGS)}")
        per_channel = self.latents.double().transpose(0, 1).flatten(1)
        std, mean = per_channel.std(dim=1), per_channel.mean(dim=1)
        if not bool((std > 0).all()):
            raise ValueError(f"latent_scaling='per_channel': latent channels {torch.nonzero(std == 0).flatten().tolist()} are constant")
        return (1.0 / std).tolist(), mean.tolist()

    def complete(self) -> torch.Tensor:
        """Row indices (K,) int64 of the subjects with every covariate present (no NaN in ``conditions``)."""
        return torch.nonzero(~torch.isnan(self.conditions).any(dim=1)).flatten()


def autoencoder_folder(latents: str | Path, meta: dict) -> Path:
    """The autoencoder folder whose posterior means the latent cache ``latents`` holds (``meta``: its
    ``latents.json``): the folder the cache names, or, where that folder is gone (a run folder moved or
    copied as a whole), the ``autoencoder/`` beside the cache, as ``synthbrain train autoencoder`` writes
    them (``RUN/autoencoder``, ``RUN/latents``). Either must hold weights with the recorded sha256 (an
    integrity check against a retrained or replaced autoencoder, not a signature). Raises ``ValueError``
    naming the cache, the folder and what differs."""
    recorded = Path(meta["autoencoder"])
    beside = Path(latents).resolve().parent / "autoencoder"
    folder = recorded if recorded.is_dir() else beside
    if not folder.is_dir():
        raise ValueError(f"latents={str(latents)!r}: its autoencoder {str(recorded)!r} is gone, and none is beside it ({str(beside)!r})")
    weights = folder / WEIGHTS
    found = _io.sha256_file(weights) if weights.is_file() else f"none (no {WEIGHTS})"
    if found != meta["autoencoder_sha256"]:
        raise ValueError(
            f"latents={str(latents)!r}: {str(folder)!r} does not hold the autoencoder these latents were cached with "
            f"(sha256 {found[:16]}; recorded {meta['autoencoder_sha256'][:16]}); cache them again"
        )
    return folder


@torch.no_grad()
@_io.writes_folder("out")
def cache_latents(
    autoencoder: str | Path,
    prepared: str | Path,
    out: str | Path,
    *,
    downsample: int = 1,
    device: str = "cpu",
    batch_size: int = 2,
    mirror: bool = False,
    progress: bool = True,
) -> Path:
    """Encode every subject of the prepared cohort ``prepared`` with the autoencoder model folder
    ``autoencoder`` and write the cache (see the module docstring) to the folder ``out``; returns ``out``.

    Images are averaged over ``downsample``-voxel blocks as in autoencoder training (labels become class
    fractions); with ``mirror`` each subject's left-right mirror image is encoded too and appended after
    all the originals. The latents kept are the posterior means, not samples. Raises ``ValueError`` as
    :meth:`PreparedCohort.load <synthbrain.preprocessing.prepared.PreparedCohort.load>` and
    :func:`~synthbrain.components.load_component` do (no prepared cohort or model folder, bad ``downsample``).
    """
    model = load_component(BrainAutoencoder, AutoencoderConfig, autoencoder).to(device).eval()
    cohort = PreparedCohort.load(prepared, downsample)
    loader = torch.utils.data.DataLoader(cohort, batch_size=batch_size)
    latents, mirrored = [], []
    for batch in tqdm(loader, desc="encode", unit="batch", disable=not progress):
        image = batch["image"].to(device)
        labels = batch["labels"].to(device) if model.config.num_classes else None
        latents.append(model.encode(image, labels)[0].float().cpu())
        if mirror:  # axis 0 of the RAS grid is left-right; labels are class indices (B, x, y, z) or fractions (B, C, x, y, z)
            flipped = None if labels is None else labels.flip(1 if labels.ndim == 4 else 2)
            mirrored.append(model.encode(image.flip(2), flipped)[0].float().cpu())
    latents = torch.cat(latents + mirrored)
    conditions = np.full((len(cohort), cohort.schema.width), np.nan, dtype=np.float32)
    complete = ~cohort.table[cohort.schema.names].isna().any(axis=1).to_numpy()
    if complete.any():
        conditions[complete] = cohort.schema.normalize(cohort.table.loc[complete, cohort.schema.names])
    subject_ids = list(cohort.subject_ids)
    if mirror:
        conditions = np.concatenate([conditions, conditions])
        subject_ids += [f"{sid}:mirrored" for sid in cohort.subject_ids]
    out = Path(out)
    with _io.atomic_path(out / "latents.safetensors") as tmp:
        save_file({"latents": latents.contiguous(), "conditions": torch.from_numpy(conditions)}, str(tmp))
    _io.write_json(
        out / "latents.json",
        {
            "subject_ids": subject_ids,
            "mirrored": mirror,
            "scale": float(1.0 / latents.std()),
            "schema": cohort.schema.to_dict(),
            "autoencoder": str(Path(autoencoder).resolve()),
            "autoencoder_sha256": _io.sha256_file(Path(autoencoder) / WEIGHTS),
            "prepared": str(Path(prepared).resolve()),
            "downsample": downsample,
            "image_grid": cohort.output_grid.to_dict(),
            "shape": list(latents.shape[1:]),
        },
    )
    return out
