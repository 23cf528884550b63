"""Stage 6, evaluation: measuring generated volumes against real ones, always beside a
real-versus-real baseline. ``segmenter`` holds a segmenter trained on real labels only, so that
volumes and label faithfulness of generated volumes are measured independently of the
generator's own label maps."""

from synthbrain.evaluation.segmenter import VoxelSegmenter, dice_per_class

__all__ = ["VoxelSegmenter", "dice_per_class"]
