"""Every seed the package derives from another, in one place.

A user gives one integer seed. Where the package needs more than one stream from it (one per
volume, per purpose, per training rank, per epoch, per item of a series), the stream's seed is
derived here by a named function, so that the schemes can be read (and pinned by tests) in one file;
a draw from the user's seed itself (``numpy.random.default_rng(seed)``, ``torch.manual_seed(seed)``)
needs nothing from here.
No module outside this one derives a seed by hand (``tests/test_seeding.py`` looks for ``SeedSequence``,
``default_rng`` of a list and arithmetic on a name that says "seed").

Generation (the *volume seed* scheme, shared by :meth:`BrainGenerator.generate
<synthbrain.BrainGenerator.generate>` and :class:`~synthbrain.SyntheticBrainDataset`)
------------------------------------------------------------------------------------------------
A call ``generate(n=N, seed=s)`` and a dataset ``SyntheticBrainDataset(seed=s)`` give volume ``i``
the volume seed :func:`volume_seed` ``(s, i)``: 63 bits of the ``i``-th child of numpy's
``SeedSequence(s)`` (``SeedSequence(s, spawn_key=(i,))``, the scheme numpy recommends for
independent parallel streams). So dataset item ``i`` is volume ``i`` of ``generate`` with the same
seed; ``generate(seed=[v])`` (a list gives each volume's seed as it is) reproduces a volume of
seed ``v`` alone, whatever batch or position it was made in; and different ``(s, i)`` never share
a stream (``seed + i`` would: ``s=1`` would repeat volumes 1, 2, ... of ``s=0``).

From a volume seed ``v`` come independent streams, one per purpose (:func:`stream`: children of
``SeedSequence(v)``; the starting noise uses ``v`` itself, :func:`initial_noise`):

* :data:`CONDITION`: the numpy generator a condition sampler (``cond_sampler``) is called with;
* :data:`DENSITY`: the draws of covariates left out, from the model's training density;
* :data:`SAMPLER`: the noise of stochastic diffusion samplers (DDPM, DDIM with eta > 0);
* :data:`APPEARANCE`: the randomised appearance of a dataset item (label-to-image synthesis),
  whose randomiser seed is :func:`appearance_seed`;
* a volume rejected by quality control is drawn again with the seed ``volume_seed(v, attempt)``.

Training (``synthbrain train``, :mod:`synthbrain.training`)
-------------------------------------------------------------
The initial weights come from ``torch.manual_seed(seed)`` (the same on every rank); the data order
from torch's ``DistributedSampler(seed=seed)``; each rank's own draws (posterior noise, timesteps,
patch corners) from :func:`training_seed` ``(seed, rank, stream)``, ``seed * 1000 + rank`` plus
the stream's offset. These generators' states are kept in checkpoints, so the formula must not
change: a run resumed from an older checkpoint continues with the states it saved, but a new run
must draw what the same settings drew before.

Elsewhere
---------
* :func:`epoch_rng`: the real subjects' order of an epoch of :class:`~synthbrain.datasets.mixing.MixedBatchSampler`;
* :func:`child_seed`: one seed per item of a series or cell of a grid (the shifted test sets of
  :mod:`synthbrain.evaluation.shifts`, the downstream benchmark's runs);
* :func:`keyed_rng`: a numpy generator seeded by a list of integers (the keys, in order);
* :func:`itk_seed`: the seed handed to ITK (SimpleITK registration), where 0 means the wall clock.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

CONDITION, DENSITY, SAMPLER, APPEARANCE = 1, 2, 3, 4  # stream purposes (spawn keys)
SEED_BITS = 63
TRAINING_STREAMS = {"main": 0, "crops": 500}  # offsets of training_seed; ranks below 500 keep them apart


def is_int(value: Any) -> bool:
    """An integer that is not a bool (numpy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_natural(name: str, value: Any) -> None:
    if not (is_int(value) and value >= 0):
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")


# ---------------------------------------------------------------------------------------------- generation


def volume_seed(seed: int, index: int) -> int:
    """The volume seed of volume (or dataset item) ``index`` of a call or dataset seeded ``seed``:
    an int in [0, 2**63). Raises ``ValueError`` for a negative or non-integer ``seed`` or ``index``."""
    _check_natural("seed", seed)
    _check_natural("index", index)
    state = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(1, np.uint64)[0]
    return int(state) >> (64 - SEED_BITS)


def volume_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One volume seed per volume: ``volume_seed(seed, i)`` for i < n from an int, or a sequence of
    ``n`` seeds taken as they are (each volume's own seed, as the provenance records them)."""
    if is_int(seed):
        return [volume_seed(seed, i) for i in range(n)]
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray, pd.Series)):
        raise ValueError(f"seed={seed!r}; allowed: an integer >= 0, or a list of one seed per volume")
    bad = [s for s in seed if not (is_int(s) and 0 <= s < 2**SEED_BITS)]
    if bad:
        raise ValueError(f"seed: values {bad[:10]}; allowed: integers >= 0 (and below 2**{SEED_BITS})")
    if len(seed) != n:
        raise ValueError(f"seed: {len(seed)} seeds for {n} volumes; give one per volume or a single int")
    return [int(s) for s in seed]


def stream(seed: int, purpose: int) -> np.random.Generator:
    """The numpy generator of one purpose (:data:`CONDITION`, :data:`DENSITY`, ...) of a volume seed."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(purpose,)))


def torch_stream(seed: int, purpose: int) -> torch.Generator:
    """A CPU torch generator for one purpose of a volume seed (seeded from :func:`stream`)."""
    return torch.Generator().manual_seed(int(stream(seed, purpose).integers(2**SEED_BITS)))


def appearance_seed(seed: int) -> int:
    """The seed of a randomised appearance of the item of volume seed ``seed``: the first draw of its
    :data:`APPEARANCE` stream, an int in [2**62, 2**63) (the range keeps it apart from the stream's
    coin, ``stream(seed, APPEARANCE).random()``, that decides whether an item is randomised)."""
    return int(stream(seed, APPEARANCE).integers(2**62, 2**63))


def initial_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """The starting latents (len(seeds), *shape), float32 on the CPU: one standard normal draw per volume seed."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


# ---------------------------------------------------------------------------------------------- training


def training_seed(seed: int, rank: int, stream: str = "main") -> int:
    """The seed of one of a training rank's own random generators: ``seed * 1000 + rank`` plus the
    stream's offset in :data:`TRAINING_STREAMS` (``"main"``: 0, the autoencoder's posterior noise
    and the diffusion stage's timesteps, noise and condition dropout; ``"crops"``: 500, the
    autoencoder's patch corners). Raises ``ValueError`` for a negative or non-integer ``seed``, a
    rank outside [0, 500) (where two streams would share a seed) or an unknown stream."""
    _check_natural("seed", seed)
    if not (is_int(rank) and 0 <= rank < TRAINING_STREAMS["crops"]):
        raise ValueError(f"rank={rank!r}; allowed: an integer in [0, {TRAINING_STREAMS['crops']})")
    if stream not in TRAINING_STREAMS:
        raise ValueError(f"stream={stream!r}; allowed: {list(TRAINING_STREAMS)}")
    return int(seed) * 1000 + int(rank) + TRAINING_STREAMS[stream]


# ---------------------------------------------------------------------------------------------- elsewhere


def keyed_rng(*keys: int) -> np.random.Generator:
    """A numpy generator seeded by the integers ``keys`` in order (``numpy.random.default_rng(list(keys))``,
    a ``SeedSequence`` of the list). Raises ``ValueError`` for no key or a negative or non-integer key."""
    if not keys:
        raise ValueError("keys: none given; allowed: one or more integers >= 0")
    for key in keys:
        _check_natural("key", key)
    return np.random.default_rng([int(k) for k in keys])


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The numpy generator of one epoch of a seeded run: :func:`keyed_rng` ``(seed, epoch)``.
    Raises ``ValueError`` for a negative or non-integer ``seed`` or ``epoch``."""
    _check_natural("seed", seed)
    _check_natural("epoch", epoch)
    return keyed_rng(seed, epoch)


def child_seed(seed: int, *keys: int) -> int:
    """One seed (an int in [0, 2**32)) per ``keys`` under ``seed``: the first 32-bit word of
    ``SeedSequence([seed, *keys])``. Different keys give unrelated seeds (unlike ``seed + i``).
    Raises ``ValueError`` for a negative or non-integer seed or key."""
    _check_natural("seed", seed)
    for key in keys:
        _check_natural("key", key)
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


def itk_seed(seed: int) -> int:
    """The seed to hand ITK for ``seed``: ``seed + 1``, since ITK takes 0 to mean "seed from the wall
    clock". Raises ``ValueError`` for a negative or non-integer ``seed``."""
    _check_natural("seed", seed)
    return int(seed) + 1
