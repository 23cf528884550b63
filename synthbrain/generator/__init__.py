"""Stage 5, generation: from covariates to T1 volumes with matching label maps.

``draws`` (what each volume is: its seed and covariates) -> ``conditions`` (condition samplers:
where covariates come from) -> ``model`` (:class:`BrainGenerator`: sampling and decoding) ->
``qc`` (measured signs of a broken sample) -> ``output`` (:class:`GeneratedBrains` and its writer).
``folder`` is the model format on disk; the embedded models live in ``synthbrain/models/<name>``
(``default``, 4 mm; ``default-2mm``, 2 mm).
"""

# Imported on first use (PEP 562), like the package's own exports: importing the generator loads
# neither MONAI nor scikit-learn until a model is read or built.
_EXPORTS = {
    "DEFAULT_MODEL": "synthbrain.model_folder",
    "EMBEDDED_MODELS": "synthbrain.model_folder",
    "INDEX": "synthbrain.model_folder",
    "BrainGenerator": "synthbrain.generator.model",
    "GeneratedBrains": "synthbrain.generator.output",
    "check_output_folder": "synthbrain.generator.output",
    "volume_seed": "synthbrain.generator.draws",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synthbrain.generator' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *globals()})
