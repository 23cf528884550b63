"""Stage 7, datasets: synthetic subjects into a training loop.

``conditions`` (where covariates come from) → ``synthetic`` (``SyntheticBrainDataset``: generated
on the fly, reproducible per index, cached, optionally sharded to disk) → ``mixing`` (real and
synthetic subjects in one loader at an exact fraction per batch).
"""

from synthbrain.datasets.conditions import Density, Empirical, Fixed, Uniform, check_sampler
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from synthbrain.datasets.synthetic import SyntheticBrainDataset, volume_seed

__all__ = [
    "Density",
    "Empirical",
    "Fixed",
    "MixedBatchSampler",
    "MixedDataset",
    "SyntheticBrainDataset",
    "Uniform",
    "check_sampler",
    "volume_seed",
]
