"""Stage 7, datasets: synthetic subjects into a training loop.

``synthetic`` (``SyntheticBrainDataset``: generated on the fly, reproducible per index, optionally
cached or sharded to disk) → ``mixing`` (real and synthetic subjects in one loader at an exact
fraction per batch). Items (:mod:`~synthbrain.datasets.items`) are dicts with ``image``, ``label``
(1, D, H, W) and ``affine`` that MONAI and ``default_collate`` take, or torchio Subjects;
:class:`~synthbrain.datasets.appearance.AppearanceRandomizer` is a torchio transform. Where
covariates come from (condition samplers) is part of generation: :mod:`synthbrain.generator.conditions`,
re-exported here.
"""

from synthbrain.datasets.mixing import (
    MixedBatchSampler,
    MixedDataset,
    constant_share,
    cosine_decay,
    linear_decay,
    synthetic_then_real,
)
from synthbrain.datasets.synthetic import SyntheticBrainDataset
from synthbrain.generator.conditions import Density, Empirical, Fixed, Uniform, check_sampler
from synthbrain.generator.draws import volume_seed

__all__ = [
    "Density",
    "Empirical",
    "Fixed",
    "MixedBatchSampler",
    "MixedDataset",
    "SyntheticBrainDataset",
    "Uniform",
    "check_sampler",
    "constant_share",
    "cosine_decay",
    "linear_decay",
    "synthetic_then_real",
    "volume_seed",
]
