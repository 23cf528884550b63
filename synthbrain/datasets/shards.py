"""The shard store of a :class:`~synthbrain.datasets.synthetic.SyntheticBrainDataset`: a folder where
each chunk of generated volumes is written once and reloaded memory-mapped afterwards.

Layout (read by :meth:`ShardStore.read`, described in ``manifest.json``)::

    FOLDER/dataset.json                the dataset definition the folder belongs to (claimed once)
    FOLDER/chunk-NNNNNN/images.npy     float32 (B, 1, D, H, W)
    FOLDER/chunk-NNNNNN/labels.npy     uint8 (B, D, H, W), when the model makes label maps
    FOLDER/chunk-NNNNNN/covariates.tsv one row per volume
    FOLDER/chunk-NNNNNN/done.json      written last: a chunk without it is incomplete
    FOLDER/participants.tsv, manifest.json   written by :meth:`ShardStore.write_manifest`

A folder belongs to one dataset definition (``dataset.json``, compared key by key when a dataset
opens the folder again); :func:`model_fingerprint` is the part of it that identifies the model.
Many writers (ranks, reruns, threads) may share a folder: each chunk is written under a lock by one
of them, atomically (:mod:`synthbrain._io`), and waited for by the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthbrain import _io

LAYOUT = "chunk-NNNNNN/{images,labels}.npy (float32 (B,1,D,H,W), uint8 (B,D,H,W)), covariates.tsv"


class ShardsInUse(ValueError):
    """A shard folder that holds the chunks of another dataset definition."""


class ShardStore:
    """The chunks of one dataset definition in ``folder``.

    Opening a store claims the folder for ``definition`` (a JSON-able dict): a folder that holds
    another definition raises :class:`ShardsInUse` naming the keys that differ (the argument is
    called ``shards`` in the messages, as in ``SyntheticBrainDataset(shards=...)``).
    """

    def __init__(self, folder: str | Path, definition: dict[str, Any]):
        self.folder = Path(folder)
        _io.claim_folder(self.folder, "dataset.json", definition, argument="shards", what="another dataset", error=ShardsInUse)

    def chunk_folder(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:06d}"

    def is_written(self, chunk: int) -> bool:
        """Whether ``chunk`` is complete (its ``done.json`` is written)."""
        return (self.chunk_folder(chunk) / "done.json").is_file()

    def missing(self, num_chunks: int) -> list[int]:
        """The chunks among 0..num_chunks-1 not complete yet."""
        return [c for c in range(num_chunks) if not self.is_written(c)]

    def require_complete(self, num_chunks: int, hint: str) -> None:
        """Raise ``RuntimeError`` naming the first missing chunks while any is not written."""
        missing = self.missing(num_chunks)
        if missing:
            raise RuntimeError(f"shards={str(self.folder)!r}: chunks {missing[:10]} are not written yet; {hint}")

    def load(self, chunk: int, make: Callable[[], dict]) -> dict:
        """Chunk ``chunk``, memory-mapped: written first from ``make()`` when it is not complete.
        One writer per chunk (another process or thread writing it is waited for); what a writer
        finds of another's in the chunk under the lock was left by a killed one, and is removed."""
        folder = self.chunk_folder(chunk)
        if not self.is_written(chunk):
            with _io.folder_lock(folder, argument="shards", wait=True):
                if not self.is_written(chunk):
                    if folder.is_dir():
                        _io.remove_stale_temporaries(folder)
                    write_chunk(folder, make())
        return self.read(chunk)

    def read(self, chunk: int) -> dict:
        """A written chunk: ``images`` and ``labels`` memory-mapped arrays, ``covariates`` table and
        ``provenance`` (when recorded)."""
        return read_chunk(self.chunk_folder(chunk))

    def write_manifest(self, chunk_indices: Callable[[int], range], num_chunks: int, extra: dict[str, Any]) -> Path:
        """After every chunk is written: ``participants.tsv`` with one row per volume (index,
        covariates, chunk; ``chunk_indices(c)`` gives chunk c's dataset indices) and
        ``manifest.json``: the definition, the counts, ``extra`` and the layout."""
        self.require_complete(num_chunks, "run pregenerate for every rank")
        tables = []
        for chunk in range(num_chunks):
            table = self.read(chunk)["covariates"]
            indices = list(chunk_indices(chunk))
            if len(table) != len(indices):
                raise RuntimeError(f"chunk {chunk}: {len(table)} volumes, expected {len(indices)}")
            tables.append(table.assign(index=indices, chunk=chunk))
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "index", table.pop("index"))
        _io.write_table(self.folder / "participants.tsv", table)
        definition = _io.read_json(self.folder / "dataset.json", "a shard store written by SyntheticBrainDataset")
        manifest = {**definition, "volumes": len(table), "chunks": num_chunks, **extra, "layout": LAYOUT}
        _io.write_json(self.folder / "manifest.json", manifest)
        return self.folder / "manifest.json"


def model_fingerprint(generator) -> dict[str, Any]:
    """What identifies a generator's output: the sha256 of its weights (from its index when it was
    loaded from disk, else computed from the tensors), latent scale (and shift, when not 0), image grid and schema, and the
    precision it runs in (``"dtype"``) unless float32: a folder loaded in float32 and cast to bfloat16
    keeps its index's sha256 but generates other volumes. (A float32 model records no ``"dtype"``, so
    shard folders written before precisions were stored keep their definition.)"""
    weights = generator.source.get("sha256")
    if not weights:
        digest = hashlib.sha256()
        for name, module in (("autoencoder", generator.autoencoder), ("unet", generator.unet)):
            for key, tensor in module.state_dict().items():
                digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        weights = {"in_memory": digest.hexdigest()}
    return {
        "sha256": weights,
        "latent_scale": generator.latent_scale,
        **({"latent_shift": generator.latent_shift} if generator.latent_shift != 0.0 else {}),
        "image_grid": generator.image_grid.to_dict(),
        "schema": generator.schema.to_dict(),
        **({"dtype": str(generator.dtype).removeprefix("torch.")} if generator.dtype != torch.float32 else {}),
    }


def write_chunk(folder: Path, data: dict) -> None:
    """One chunk (``images``, optional ``labels``, ``covariates``, optional ``provenance``) as
    memory-mappable .npy files plus a covariates table; ``done.json`` last, so a chunk without it
    is incomplete and is generated again."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("images", "labels"):
        if key in data:
            with _io.atomic_path(folder / f"{key}.npy") as tmp:
                np.save(tmp, data[key])
    _io.write_table(folder / "covariates.tsv", data["covariates"])
    done = {"volumes": int(len(data["images"]))}
    if data.get("provenance") is not None:
        done["provenance"] = data["provenance"]
    _io.write_json(folder / "done.json", done)


def read_chunk(folder: Path) -> dict:
    data = {"images": np.load(folder / "images.npy", mmap_mode="r")}
    if (folder / "labels.npy").is_file():
        data["labels"] = np.load(folder / "labels.npy", mmap_mode="r")
    data["covariates"] = pd.read_csv(folder / "covariates.tsv", sep="\t", na_values=["n/a"], keep_default_na=False)
    provenance = _io.read_json(folder / "done.json", "a complete chunk of a shard store").get("provenance")
    if provenance is not None:
        data["provenance"] = provenance
    return data
