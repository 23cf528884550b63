"""``SyntheticBrainDataset``: conditioned synthetic brains generated on the fly, as a torch Dataset.

Index i is a pure function of (seed, i): its covariates come from ``cond_sampler`` called with a
random generator seeded by (seed, i), and its starting noise from a seed derived from (seed, i).
With a deterministic sampler (DDIM with eta 0, DPM-Solver++), volume i is therefore the same
whatever the access order, the number of DataLoader workers, or how indices were batched for
generation (equal within floating-point tolerance).

Volumes are generated in chunks of ``chunk_size`` consecutive indices, in one batched call on
the generator's device. Generated chunks are kept in a bounded in-memory cache (``cache_mb``);
while the consumer works on chunk c, chunk c + 1 is generated in a background thread. With
``shards=FOLDER`` every chunk is also written there once and reloaded memory-mapped afterwards,
for reuse across epochs and runs (``pregenerate`` fills the folder ahead of time).

DataLoader workers: on CPU, workers (forked or spawned) each generate their own chunks. A CUDA
generator cannot be used in forked workers (CUDA does not survive fork): use ``num_workers=0``
(generation is already batched on the GPU and overlapped by the prefetch thread), or
``multiprocessing_context="spawn"``; a forked worker with a CUDA generator raises an error.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from synthbrain import _io
from synthbrain.datasets.conditions import ConditionSampler, check_sampler, describe
from synthbrain.generator import BrainGenerator

DETERMINISTIC_SAMPLERS = ("ddim", "dpm++2m")


def volume_seed(seed: int, index: int) -> int:
    """The noise seed of volume ``index`` of a dataset seeded ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


class SyntheticBrainDataset(torch.utils.data.Dataset):
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
        extrapolate: bool = False,
        chunk_size: int = 8,
        cache_mb: float = 1024,
        prefetch: bool = True,
        shards: str | Path | None = None,
    ):
        """``n`` synthetic subjects. ``cond_sampler`` (a callable ``rng -> dict``, see
        :mod:`synthbrain.datasets.conditions`) gives each subject's covariates; those it leaves
        out, or all of them when it is None, are drawn from the model's training distribution.
        ``generator`` is a :class:`BrainGenerator` or anything ``BrainGenerator.from_pretrained``
        takes (default: the embedded model). ``device`` defaults to CUDA when available."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ValueError(f"chunk_size={chunk_size!r}; allowed: an integer >= 1")
        if cache_mb < 0:
            raise ValueError(f"cache_mb={cache_mb}; allowed: >= 0")
        if not isinstance(generator, BrainGenerator):
            generator = BrainGenerator.from_pretrained(generator)
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}: CUDA is not available on this machine; allowed: 'cpu'")
        self.generator = generator.to(device)
        sampler = sampler or generator.defaults["sampler"]
        if sampler not in DETERMINISTIC_SAMPLERS:
            raise ValueError(
                f"sampler={sampler!r} draws fresh noise per generation batch, so a volume would depend on its batch; "
                f"allowed: {list(DETERMINISTIC_SAMPLERS)}"
            )
        if cond_sampler is not None:
            check_sampler(cond_sampler, generator.schema, extrapolate)
        self.n, self.cond_sampler, self.seed = n, cond_sampler, int(seed)
        self.transform, self.with_labels, self.as_subject = transform, with_labels, as_subject
        self.sampling = {
            "steps": steps if steps is not None else generator.defaults["steps"],
            "sampler": sampler,
            "guidance_scale": guidance_scale if guidance_scale is not None else generator.defaults["guidance_scale"],
            "extrapolate": extrapolate,
        }
        self.chunk_size, self.prefetch = chunk_size, prefetch
        volume_mb = np.prod(generator.image_grid.shape) * (4 + 1) / 2**20
        self.cache_chunks = int(cache_mb // (volume_mb * chunk_size))
        self.shards = Path(shards) if shards is not None else None
        if self.shards is not None:
            self._claim_shards()
        self._reset_runtime()

    # ------------------------------------------------------------------ runtime state (not pickled)

    def _reset_runtime(self) -> None:
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._executor: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock", "_pending", "_executor")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def __len__(self) -> int:
        return self.n

    @property
    def num_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    # ------------------------------------------------------------------ what index i is

    def covariates(self, index: int) -> dict[str, Any]:
        """Covariates the sampler gives subject ``index`` (before the model draws the rest)."""
        if self.cond_sampler is None:
            return {}
        return dict(self.cond_sampler(np.random.default_rng([self.seed, index])))

    def _chunk_indices(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n))

    def _generate_chunk(self, chunk: int) -> dict:
        indices = self._chunk_indices(chunk)
        table = pd.DataFrame([self.covariates(i) for i in indices], index=range(len(indices)))
        names = [c for c in self.generator.schema.names if c in table.columns]
        out = self.generator.generate(
            table[names] if names else None,
            n=None if names else len(indices),
            seed=[volume_seed(self.seed, i) for i in indices],
            batch_size=len(indices),
            **self.sampling,
        )
        data = {"images": out.images.numpy(), "covariates": out.covariates}
        if out.labels is not None:
            data["labels"] = out.labels.numpy()
        return data

    def _load_chunk(self, chunk: int) -> dict:
        if self.shards is not None:
            folder = self.shards / f"chunk-{chunk:06d}"
            if (folder / "done.json").is_file():
                return _read_shard(folder)
            data = self._generate_chunk(chunk)
            _write_shard(folder, data)
            return _read_shard(folder)
        return self._generate_chunk(chunk)

    def _chunk(self, chunk: int) -> dict:
        with self._lock:
            if chunk in self._cache:
                self._cache.move_to_end(chunk)
                return self._cache[chunk]
            future = self._pending.pop(chunk, None)
        data = future.result() if future is not None else self._load_chunk(chunk)
        with self._lock:
            if self.cache_chunks:
                self._cache[chunk] = data
                while len(self._cache) > self.cache_chunks:
                    self._cache.popitem(last=False)
            following = chunk + 1
            if self.prefetch and self.cache_chunks and following < self.num_chunks:
                if following not in self._cache and following not in self._pending:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthbrain-prefetch")
                    self._pending[following] = self._executor.submit(self._load_chunk, following)
        return data

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < self.n:
            raise IndexError(f"index={index}; allowed: 0..{self.n - 1}")
        self._check_worker()
        chunk, offset = divmod(index, self.chunk_size)
        data = self._chunk(chunk)
        image = torch.from_numpy(np.array(data["images"][offset]))
        row = data["covariates"].iloc[offset].to_dict()
        row.pop("seed", None)
        labels = torch.from_numpy(np.array(data["labels"][offset])).long() if self.with_labels and "labels" in data else None
        if self.as_subject:
            import torchio as tio

            affine = self.generator.image_grid.affine
            parts = {"image": tio.ScalarImage(tensor=image, affine=affine)}
            if labels is not None:
                parts["labels"] = tio.LabelMap(tensor=labels[None], affine=affine)
            item = tio.Subject(**parts, **row, index=index, is_synthetic=True)
        else:
            item = {"image": image, "covariates": row, "index": index, "is_synthetic": True}
            if labels is not None:
                item["labels"] = labels
        return self.transform(item) if self.transform is not None else item

    def _check_worker(self) -> None:
        if self.generator.device.type == "cuda" and torch.cuda._is_in_bad_fork():
            raise RuntimeError(
                "SyntheticBrainDataset on a CUDA device inside a forked DataLoader worker: CUDA does not survive fork. "
                "Use num_workers=0 (generation is batched on the GPU and prefetched in a thread), "
                "or DataLoader(..., multiprocessing_context='spawn')"
            )

    # ------------------------------------------------------------------ pre-generation

    def _claim_shards(self) -> None:
        """A shard folder belongs to one dataset definition; reusing it with another is refused."""
        definition = {
            "n": self.n,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "cond_sampler": describe(self.cond_sampler),
            "model": self.generator.source,
            **self.sampling,
        }
        definition = json.loads(json.dumps(definition, default=str))
        path = self.shards / "dataset.json"
        if path.is_file():
            previous = json.loads(path.read_text())
            if previous != definition:
                changed = sorted(k for k in definition if previous.get(k) != definition.get(k))
                raise ValueError(f"shards={str(self.shards)!r} holds another dataset (differing: {changed}); choose another folder")
        else:
            _io.write_json(path, definition)

    def pregenerate(self, rank: int = 0, world_size: int = 1, progress: bool = True) -> None:
        """Write every chunk (this rank's share: chunks c with c % world_size == rank) to ``shards``;
        chunks already written are kept, so an interrupted run resumes."""
        if self.shards is None:
            raise ValueError("pregenerate needs shards=FOLDER")
        from tqdm.auto import tqdm

        _io.remove_stale_temporaries(self.shards)
        mine = range(rank, self.num_chunks, world_size)
        for chunk in tqdm(mine, desc="pregenerate", unit="chunk", disable=not progress):
            if not (self.shards / f"chunk-{chunk:06d}" / "done.json").is_file():
                self._load_chunk(chunk)

    def write_manifest(self) -> Path:
        """After every chunk is written (by all ranks): ``participants.tsv`` with one row per
        volume (index, noise seed, covariates, chunk) and ``manifest.json`` describing the set."""
        missing = [c for c in range(self.num_chunks) if not (self.shards / f"chunk-{c:06d}" / "done.json").is_file()]
        if missing:
            raise RuntimeError(f"shards={str(self.shards)!r}: chunks {missing[:10]} are not written yet; run pregenerate for every rank")
        tables = []
        for chunk in range(self.num_chunks):
            table = _read_shard(self.shards / f"chunk-{chunk:06d}")["covariates"]
            indices = list(self._chunk_indices(chunk))
            if len(table) != len(indices):
                raise RuntimeError(f"chunk {chunk}: {len(table)} volumes, expected {len(indices)}")
            tables.append(table.assign(index=indices, chunk=chunk))
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "index", table.pop("index"))
        _io.write_table(self.shards / "participants.tsv", table)
        definition = json.loads((self.shards / "dataset.json").read_text())
        _io.write_json(
            self.shards / "manifest.json",
            {
                **definition,
                "volumes": len(table),
                "chunks": self.num_chunks,
                "image_grid": self.generator.image_grid.to_dict(),
                "label_classes": list(self.generator.label_classes or []),
                "layout": "chunk-NNNNNN/{images,labels}.npy (float32 (B,1,D,H,W), uint8 (B,D,H,W)), covariates.tsv",
            },
        )
        return self.shards / "manifest.json"


def _write_shard(folder: Path, data: dict) -> None:
    """One chunk as memory-mappable .npy files plus a covariates table; ``done.json`` last, so a
    chunk without it is incomplete and is generated again."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("images", "labels"):
        if key in data:
            with _io.atomic_path(folder / f"{key}.npy") as tmp:
                np.save(tmp, data[key])
    _io.write_table(folder / "covariates.tsv", data["covariates"])
    _io.write_json(folder / "done.json", {"volumes": int(len(data["images"]))})


def _read_shard(folder: Path) -> dict:
    data = {"images": np.load(folder / "images.npy", mmap_mode="r")}
    if (folder / "labels.npy").is_file():
        data["labels"] = np.load(folder / "labels.npy", mmap_mode="r")
    data["covariates"] = pd.read_csv(folder / "covariates.tsv", sep="\t", na_values=["n/a"], keep_default_na=False)
    return data
