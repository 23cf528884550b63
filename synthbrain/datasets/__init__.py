"""Stage 7, datasets: synthetic subjects into a training loop.

``conditions`` (where covariates come from) → ``synthetic`` (``SyntheticBrainDataset``: generated
on the fly, reproducible per index, cached, optionally sharded to disk).
"""

from synthbrain.datasets.conditions import Empirical, Fixed, Uniform, check_sampler
from synthbrain.datasets.synthetic import SyntheticBrainDataset, volume_seed

__all__ = ["Empirical", "Fixed", "SyntheticBrainDataset", "Uniform", "check_sampler", "volume_seed"]
