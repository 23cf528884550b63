"""synthbrain: synthetic 3D brain MRI from latent diffusion models, for data augmentation.

The package is laid out in the order data moves: ``cohort`` (real data in) → ``preprocessing``
(template space) → ``autoencoder`` and ``diffusion`` (the two models and their training) →
``samplers`` → ``generator`` (covariates to volumes with label maps) → ``evaluation`` →
``datasets`` (synthetic subjects into training loops) → ``reader_study``.

The public API::

    from synthbrain import BrainGenerator, SyntheticBrainDataset, MixedDataset, MixedBatchSampler
    from synthbrain import Fixed, Uniform, Empirical, Density   # condition samplers
    gen = BrainGenerator.from_pretrained("default")
    out = gen.generate(age=70, sex="F", n=2, seed=0)            # GeneratedBrains
"""

__version__ = "0.2.0"

# Exported names are imported on first use (PEP 562), so that ``import synthbrain`` and the command
# line's ``--help`` do not load torch, MONAI and torchio before they are needed.
_EXPORTS = {
    "BrainGenerator": "synthbrain.generator.model",
    "GeneratedBrains": "synthbrain.generator.output",
    "volume_seed": "synthbrain.generator.draws",
    "SyntheticBrainDataset": "synthbrain.datasets.synthetic",
    "MixedDataset": "synthbrain.datasets.mixing",
    "MixedBatchSampler": "synthbrain.datasets.mixing",
    "Fixed": "synthbrain.generator.conditions",
    "Uniform": "synthbrain.generator.conditions",
    "Empirical": "synthbrain.generator.conditions",
    "Density": "synthbrain.generator.conditions",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synthbrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
