"""synthbrain: synthetic 3D brain MRI from latent diffusion models, for data augmentation.

The package is laid out in the order data moves: ``cohort`` (real data in) → ``preprocessing``
(template space) → models, samplers and generation → datasets.
"""

__version__ = "0.1.0"

from synthbrain.generator import BrainGenerator, GeneratedBrains  # noqa: E402

__all__ = ["BrainGenerator", "GeneratedBrains", "__version__"]
