"""Stage 6, evaluation: measuring generated volumes against real ones, always beside a
real-versus-real baseline.

- ``evaluate``: ``synthbrain evaluate``, the whole report (start here);
- ``metrics``: realism, diversity, conditioning and memorisation measures, pure functions on
  arrays of volumes or of any network's features;
- ``features``: the deep features they are computed on (deepbet's TorchScript encoder);
- ``evaluators`` and ``networks``: a segmenter, an age regressor and a sex classifier trained
  on real subjects only, which read generated volumes independently of the generator;
- ``segmenter``: a voxel classifier used by ``benchmarks/generator_quality.py``, and Dice.
"""

from synthbrain.evaluation.metrics import (
    classifier_two_sample_test,
    conditioning_accuracy,
    frechet_distance,
    knn_precision_recall,
    memorisation_report,
    mmd,
    mmd_permutation_test,
    ms_ssim_3d,
    nearest_neighbour_distances,
    nearest_neighbour_ratio,
    pairwise_ms_ssim,
    wilson_interval,
)
from synthbrain.evaluation.segmenter import VoxelSegmenter
from synthbrain.overlap import dice_per_class

__all__ = [
    "VoxelSegmenter",
    "classifier_two_sample_test",
    "conditioning_accuracy",
    "dice_per_class",
    "frechet_distance",
    "knn_precision_recall",
    "memorisation_report",
    "mmd",
    "mmd_permutation_test",
    "ms_ssim_3d",
    "nearest_neighbour_distances",
    "nearest_neighbour_ratio",
    "nearest_neighbour_ratio",
    "pairwise_ms_ssim",
    "wilson_interval",
]
