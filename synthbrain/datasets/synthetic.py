"""``SyntheticBrainDataset``: conditioned synthetic brains generated on the fly, as a torch Dataset.

Index i is volume i of ``generator.generate(n=..., seed=seed, cond_sampler=...)``: its volume seed is
``volume_seed(seed, i)`` (:mod:`synthbrain.seeding`; how covariates are drawn is :mod:`synthbrain.generator.draws`'s),
so ``generator.generate(cond_sampler=..., seed=[dataset.item_seed(i)])`` reproduces item i alone.
Volume i is therefore the same whatever the access order, the number of DataLoader workers, or how
indices were batched for generation (equal within floating-point tolerance).

Generation is batched on the generator's device, in one of two ways:

* exactly what is asked (the default, ``cache_mb=0``, no shards): each ``dataset[i]`` generates
  volume i, and each DataLoader batch (through ``__getitems__``) its own indices in one call. No
  volume is generated that is not returned, whatever the order (shuffled, in order, a
  ``DistributedSampler`` rank) or the number of workers.
* chunks (``cache_mb`` holding at least one chunk, or ``shards``): the ``chunk_size`` consecutive
  indices around the one asked for are generated in one call and kept in a bounded in-memory cache
  (``cache_mb``, counting the chunk being prefetched); while the consumer works on chunk c, chunk
  c + 1 is generated in a background thread. This only pays when reading in index order; shuffled
  access would generate whole chunks for one volume each (``benchmarks/dataset_throughput.py``
  measures both).

With ``shards=FOLDER`` every chunk is also written there once (atomically, ``done.json`` last) and
reloaded memory-mapped afterwards, for reuse across epochs and runs (``pregenerate`` fills the
folder ahead of time, split over processes; ``write_manifest`` then describes the whole set).
Over several machines the folder must be on a filesystem they share: rank 0 reads every chunk's
table to write the manifest, and refuses while any chunk is missing.

The parts, each readable alone: :mod:`~synthbrain.datasets.cache` (the bounded chunk cache and its
prefetch thread), :mod:`~synthbrain.datasets.shards` (the shard folder, its definition and manifest,
the model fingerprint), :mod:`~synthbrain.datasets.items` (what an item is), and
:class:`~synthbrain.sampling.SamplingSettings` (the sampling settings, checked before the model loads).

DataLoader workers: on CPU, workers (forked or spawned) each generate their own chunks, with their
own cache (a forked worker starts with an empty cache and its own prefetch thread). A CUDA
generator cannot be used in forked workers (CUDA does not survive fork): use ``num_workers=0``
(generation is already batched on the GPU and overlapped by the prefetch thread), or
``DataLoader(..., multiprocessing_context="spawn")`` (each worker then holds a copy of the model on
the GPU); a forked worker with a CUDA generator raises a clear error instead of failing inside CUDA.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import torch

from synthbrain.datasets.cache import ChunkCache
from synthbrain.datasets.items import Item, make_item, make_subject
from synthbrain.datasets.shards import ShardStore, model_fingerprint
from synthbrain.device import resolve_device
from synthbrain.generator import BrainGenerator, GeneratedBrains, draws
from synthbrain.generator.conditions import ConditionSampler, check_sampler, describe
from synthbrain.sampling import SamplingSettings

if TYPE_CHECKING:  # torchio is imported only where a randomised appearance is asked for (the GPU machine has none)
    from synthbrain.datasets.appearance import AppearanceRandomizer

__all__ = ["SyntheticBrainDataset"]

_is_int = draws.is_int


class SyntheticBrainDataset(torch.utils.data.Dataset):
    """``n`` synthetic subjects generated on the fly, item i always the same subject.

    ``cond_sampler`` (a callable ``rng -> dict``, see :mod:`synthbrain.generator.conditions`) gives
    each subject's covariates; those it leaves out, or all of them when it is None, are drawn from the
    model's training distribution. ``generator`` is a :class:`BrainGenerator` or anything
    ``BrainGenerator.from_pretrained`` takes (default: the embedded model); it is moved to ``device``
    (default: CUDA when available). ``steps``, ``sampler``, ``guidance_scale``, ``timestep_spacing``
    and ``qc`` (a :class:`~synthbrain.sampling.SamplingSettings`) default to the model's;
    ``qc="reject"`` draws subjects failing quality control again and
    ``raw=True`` keeps the decoder's output outside the brain (see :meth:`BrainGenerator.generate`).
    ``cache_mb`` bounds the memory of generated chunks kept (0, the default: no cache, each request
    generates exactly its indices; :class:`~synthbrain.datasets.cache.ChunkCache`); ``shards`` is a
    folder where chunks are written once and reloaded (:class:`~synthbrain.datasets.shards.ShardStore`).
    ``transform`` is applied to each item (a dict, or a torchio
    ``Subject`` with ``as_subject=True``). ``appearance``: ``"generated"`` (the model's images),
    ``"randomized"`` (each image synthesised again from its generated label map with a random
    contrast, bias field, resolution and noise by ``randomizer``, an
    :class:`~synthbrain.datasets.appearance.AppearanceRandomizer`; SynthSeg-style), or a probability
    in [0, 1] of a randomised item (decided from the item's seed, so always the same for an index).

    An item (:mod:`synthbrain.datasets.items`) is ``{"image": (1, D, H, W) float32 in [0, 1],
    "label": (1, D, H, W) int64 class indices, "affine": (4, 4) float64 (the model's image grid),
    "covariates": dict, "index": int, "is_synthetic": True, "appearance": "generated" or "randomized"}``,
    which MONAI dictionary transforms and ``default_collate`` take as it is; with ``as_subject=True``
    a torchio ``Subject`` with ``"image"`` and ``"label"`` on the affine, and the other entries.
    ``"labels"`` ((D, H, W)) is deprecated: reading it warns (``FutureWarning``) and gives
    ``item["label"][0]``. Raises ``ValueError`` naming the argument for bad sizes, seeds, sampling
    settings, appearance settings or a condition sampler the model cannot take.
    """

    def __init__(
        self,
        n: int,
        cond_sampler: ConditionSampler | None = None,
        generator: BrainGenerator | str = "default",
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
        transform: Callable[[Any], Any] | None = None,
        with_labels: bool = True,
        as_subject: bool = False,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        timestep_spacing: str | None = None,
        extrapolate: bool = False,
        qc: str | None = None,
        raw: bool = False,
        appearance: str | float = "generated",
        randomizer: AppearanceRandomizer | None = None,
        chunk_size: int = 8,
        cache_mb: float = 0,
        prefetch: bool = True,
        shards: str | Path | None = None,
    ):
        if not (_is_int(n) and n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        if not (_is_int(seed) and seed >= 0):
            raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
        if not (_is_int(chunk_size) and chunk_size >= 1):
            raise ValueError(f"chunk_size={chunk_size!r}; allowed: an integer >= 1")
        if not (isinstance(cache_mb, numbers.Real) and not isinstance(cache_mb, bool) and cache_mb >= 0):
            raise ValueError(f"cache_mb={cache_mb!r}; allowed: a number of megabytes >= 0 (math.inf: no bound)")
        settings = SamplingSettings(sampler=sampler, steps=steps, guidance_scale=guidance_scale, timestep_spacing=timestep_spacing, qc=qc)
        if not isinstance(generator, BrainGenerator):
            generator = BrainGenerator.from_pretrained(generator)
        self.generator = generator.to(resolve_device(device))
        self.sampling = _sampling(generator, settings, extrapolate, raw)
        if cond_sampler is None and generator.distribution is None:
            raise ValueError(
                f"cond_sampler=None: this generator has no covariate distribution to draw covariates from; "
                f"give a cond_sampler that sets all of {generator.schema.names}"
            )
        if cond_sampler is not None:
            check_sampler(cond_sampler, generator.schema, extrapolate, complete=generator.distribution is None)
        self.n, self.cond_sampler, self.seed = int(n), cond_sampler, int(seed)
        self.transform, self.with_labels, self.as_subject = transform, with_labels, as_subject
        self.appearance, self.randomizer = _appearance(appearance, randomizer, generator)
        self.chunk_size = int(chunk_size)
        bytes_per_voxel = 4 + (1 if generator.label_classes else 0)  # float32 image, uint8 labels
        chunk_mb = float(np.prod(generator.image_grid.shape)) * bytes_per_voxel * self.chunk_size / 2**20
        self.cache_chunks = self.num_chunks if math.isinf(cache_mb) else min(self.num_chunks, int(cache_mb // chunk_mb))
        self.cache = ChunkCache(self.cache_chunks, self.num_chunks, prefetch)
        self.generated = 0  # volumes generated by this process (a DataLoader worker counts its own)
        # a shard folder belongs to one dataset definition; reusing it with another is refused
        self.shards = ShardStore(shards, self.definition()) if shards is not None else None

    def close(self) -> None:
        """Wait for a chunk being prefetched and stop the prefetch thread; the cache is kept and a
        later access starts another thread. Call it before timing something else on the machine."""
        self.cache.close()

    def __len__(self) -> int:
        return self.n

    @property
    def num_chunks(self) -> int:
        """Number of chunks of ``chunk_size`` volumes generated together (the last may be shorter)."""
        return -(-self.n // self.chunk_size)

    @property
    def generates_chunks(self) -> bool:
        """True when requests are served by whole chunks (cache or shards), False when each request
        generates exactly its own indices (``cache_mb`` below one chunk and no shards)."""
        return self.shards is not None or self.cache_chunks > 0

    # ------------------------------------------------------------------ what index i is

    def item_seed(self, index: int) -> int:
        """The volume seed of item ``index``: ``generator.generate(cond_sampler=..., seed=[item_seed(i)])``
        with this dataset's sampling settings gives item ``index`` alone."""
        return draws.volume_seed(self.seed, self._check_index(index))

    def covariates(self, index: int) -> dict[str, Any]:
        """Covariates the condition sampler gives item ``index`` (before the model draws the rest)."""
        if self.cond_sampler is None:
            return {}
        return draws.sampled_covariates(self.cond_sampler, self.item_seed(index))

    def randomized(self, index: int) -> bool:
        """Whether item ``index`` has a randomised appearance (always, never, or drawn from its seed)."""
        if self.appearance in ("generated", "randomized"):
            return self.appearance == "randomized"
        return bool(draws.stream(self.item_seed(index), draws.APPEARANCE).random() < self.appearance)

    def _check_index(self, index: Any) -> int:
        if not _is_int(index) or not 0 <= index < self.n:
            raise IndexError(f"index={index!r}; allowed: 0..{self.n - 1}")
        return int(index)

    # ------------------------------------------------------------------ generating volumes, a chunk at a time

    def _chunk_indices(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n))

    def _generate(self, indices: Sequence[int], progress: bool = False) -> dict:
        seeds = [draws.volume_seed(self.seed, i) for i in indices]
        try:
            out = self.generator.generate(
                cond_sampler=self.cond_sampler, seed=seeds, n=len(seeds), batch_size=len(seeds), progress=progress, **self.sampling
            )
        except ValueError as err:  # name the dataset's indices, not the positions in this call
            raise ValueError(f"{err} (dataset indices {list(indices)}, volumes numbered from 0 in that order)") from None
        self.generated += len(indices)
        data = {"images": out.images.numpy(), "covariates": out.covariates, "provenance": out.provenance}
        if out.labels is not None:
            data["labels"] = out.labels.numpy()
        return data

    def _load_chunk(self, chunk: int, progress: bool = False) -> dict:
        """Chunk ``chunk`` generated, or read from (after being written once to) the shard store."""
        indices = self._chunk_indices(chunk)
        if self.shards is None:
            return self._generate(indices)
        return self.shards.load(chunk, lambda: self._generate(indices, progress))

    # ------------------------------------------------------------------ items

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list:
        """Items for several indices at once (the DataLoader calls this for each batch): without
        chunks, all indices not yet generated are generated in one batched call."""
        indices = [self._check_index(i) for i in indices]
        self._check_worker()
        if not self.generates_chunks:
            unique = list(dict.fromkeys(indices))
            data, where = self._generate(unique), {index: k for k, index in enumerate(unique)}
            return [self._item(data, where[index], index) for index in indices]
        items = []
        for index in indices:
            chunk, offset = divmod(index, self.chunk_size)
            items.append(self._item(self.cache.get(chunk, self._load_chunk), offset, index))
        return items

    def _item(self, data: dict, offset: int, index: int):
        image = torch.from_numpy(np.array(data["images"][offset]))
        row = {k: v for k, v in data["covariates"].iloc[offset].to_dict().items() if k in self.generator.schema.names}
        labels = torch.from_numpy(np.array(data["labels"][offset])).long() if "labels" in data else None
        affine = self.generator.image_grid.affine
        randomized = self.randomized(index)
        if randomized:
            seed = draws.appearance_seed(self.item_seed(index))  # apart from the coin above
            image, labels = self.randomizer(labels, len(self.generator.label_classes), affine, seed)
        label = labels if self.with_labels else None
        appearance = "randomized" if randomized else "generated"
        if self.as_subject:
            item = make_subject(image, label, affine, **row, index=index, is_synthetic=True, appearance=appearance)
        else:
            item = make_item(image, label, affine, covariates=row, index=index, is_synthetic=True, appearance=appearance)
        if self.transform is None:
            return item
        out = self.transform(item)
        # MONAI's dictionary transforms return a plain dict (dict(data)): an Item again, so that "labels" still reads, with its warning
        return Item(out) if type(out) is dict and not self.as_subject else out

    def _check_worker(self) -> None:
        if self.generator.device.type == "cuda" and torch.cuda._is_in_bad_fork():
            raise RuntimeError(
                "SyntheticBrainDataset on a CUDA device inside a forked DataLoader worker: CUDA does not survive fork. "
                "Use num_workers=0 (generation is batched on the GPU and prefetched in a thread), "
                "or DataLoader(..., multiprocessing_context='spawn')"
            )

    # ------------------------------------------------------------------ pre-generation into the shard store

    def definition(self) -> dict[str, Any]:
        """What decides every volume of this dataset; a shard folder holds one definition."""
        definition = {
            "n": self.n,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "appearance": self.appearance,
            "randomizer": self.randomizer.to_dict() if self.randomizer else None,
            "cond_sampler": describe(self.cond_sampler),
            "model": model_fingerprint(self.generator),
            **self.sampling,
        }
        return json.loads(json.dumps(definition, default=str))

    def _store(self, method: str) -> ShardStore:
        if self.shards is None:
            raise ValueError(f"{method} needs shards=FOLDER")
        return self.shards

    def pregenerate(self, rank: int = 0, world_size: int = 1, progress: bool = True) -> None:
        """Write every chunk (this rank's share: chunks c with c % world_size == rank) to ``shards``;
        chunks already written are kept, so an interrupted run resumes (with any number of ranks).
        ``progress``: one bar over this rank's volumes (those already written counted at the start),
        with the sampler's steps of the chunk in the making below it."""
        store = self._store("pregenerate")
        if not (_is_int(world_size) and world_size >= 1):
            raise ValueError(f"world_size={world_size!r}; allowed: an integer >= 1")
        if not (_is_int(rank) and 0 <= rank < world_size):
            raise ValueError(f"rank={rank!r}; allowed: 0..{world_size - 1}")
        from tqdm.auto import tqdm

        mine = range(rank, self.num_chunks, world_size)
        done = [c for c in mine if store.is_written(c)]
        total = sum(len(self._chunk_indices(c)) for c in mine)
        with tqdm(
            total=total, initial=sum(len(self._chunk_indices(c)) for c in done), desc="generate", unit="volume", disable=not progress
        ) as bar:
            for chunk in mine:
                if chunk in done:
                    continue
                self._load_chunk(chunk, progress)
                bar.update(len(self._chunk_indices(chunk)))

    def written(self) -> int:
        """How many volumes the shard folder holds complete (0 without ``shards``)."""
        if self.shards is None:
            return 0
        return sum(len(self._chunk_indices(c)) for c in range(self.num_chunks) if self.shards.is_written(c))

    def collect(self) -> GeneratedBrains:
        """Every volume of a complete shard folder, in index order, as one :class:`GeneratedBrains`
        (images (N, 1, D, H, W) float32, label maps, covariates, provenance), as
        ``generator.generate`` would return them; ``RuntimeError`` while a chunk is missing."""
        store = self._store("collect")
        store.require_complete(self.num_chunks, "run pregenerate")
        chunks = [store.read(c) for c in range(self.num_chunks)]
        provenance = dict(chunks[0].get("provenance") or {})
        if provenance:  # a covariate drawn for a volume of any chunk was drawn for the set
            drawn = [
                name
                for name in self.generator.schema.names
                if any(name in (c.get("provenance") or {}).get("drawn_from_training_distribution", []) for c in chunks)
            ]
            provenance["drawn_from_training_distribution"] = drawn
        generator = self.generator
        return GeneratedBrains(
            torch.from_numpy(np.concatenate([np.asarray(c["images"]) for c in chunks])),
            torch.from_numpy(np.concatenate([np.asarray(c["labels"]) for c in chunks])) if "labels" in chunks[0] else None,
            pd.concat([c["covariates"] for c in chunks], ignore_index=True),
            generator.image_grid.affine,
            generator.label_classes,
            provenance or None,
            generator.units,
        )

    def write_manifest(self) -> Path:
        """After every chunk is written (by all ranks): ``participants.tsv`` with one row per
        volume (index, noise seed, covariates, chunk) and ``manifest.json`` describing the set."""
        extra = {"image_grid": self.generator.image_grid.to_dict(), "label_classes": list(self.generator.label_classes or [])}
        return self._store("write_manifest").write_manifest(self._chunk_indices, self.num_chunks, extra)


def _sampling(generator: BrainGenerator, settings: SamplingSettings, extrapolate: bool, raw: bool) -> dict[str, Any]:
    """The settings every volume is generated with: each one ``settings`` gives, else the model's
    (checked against the model by :meth:`BrainGenerator.sampling_settings`), with ``extrapolate``, ``qc``
    and ``raw``. In this order and ``raw`` only when set, as shard folders record them in their definition."""
    sampling = generator.sampling_settings(settings.steps, settings.sampler, settings.guidance_scale, settings.timestep_spacing)
    sampling |= {"extrapolate": bool(extrapolate), "qc": generator.defaults["qc"] if settings.qc is None else settings.qc}
    if raw:  # only when set, so that shard folders written before this option keep their definition
        sampling["raw"] = True
    return sampling


def _appearance(appearance: Any, randomizer: AppearanceRandomizer | None, generator: BrainGenerator):
    """Checked ``appearance`` (``"generated"``, ``"randomized"`` or the probability of randomised) and its randomizer."""
    mixed = isinstance(appearance, numbers.Real) and not isinstance(appearance, bool)
    if not (appearance in ("generated", "randomized") or (mixed and 0.0 <= appearance <= 1.0)):
        raise ValueError(
            f"appearance={appearance!r}; allowed: 'generated', 'randomized', or a probability in [0, 1] of a randomised appearance"
        )
    if appearance == "generated":
        return "generated", None
    if not generator.label_classes:
        raise ValueError(f"appearance={appearance!r}: this generator makes no label maps, which a randomised appearance is made from")
    from synthbrain.datasets.appearance import AppearanceRandomizer  # torchio: only for a randomised appearance

    randomizer = randomizer if randomizer is not None else AppearanceRandomizer()
    if not isinstance(randomizer, AppearanceRandomizer):
        raise ValueError(f"randomizer={randomizer!r}; allowed: an AppearanceRandomizer")
    randomizer.check(len(generator.label_classes))
    return (float(appearance) if mixed else appearance), randomizer
