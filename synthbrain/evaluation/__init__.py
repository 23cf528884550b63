"""Stage 6, evaluation: measuring generated volumes against real ones, always beside a
real-versus-real baseline. ``segmenter`` holds a segmenter trained on real labels only, so that
volumes and label faithfulness of generated volumes are measured independently of the
generator's own label maps; ``metrics`` holds the realism, diversity, conditioning and
memorisation measures, as pure functions on arrays of volumes or of any network's features."""

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
from synthbrain.evaluation.segmenter import VoxelSegmenter, dice_per_class

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
