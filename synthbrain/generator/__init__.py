"""Stage 5, generation: from covariates to T1 volumes with matching label maps.

``draws`` (what each volume is: its seed and covariates) -> ``conditions`` (condition samplers:
where covariates come from) -> ``model`` (:class:`BrainGenerator`: sampling and decoding) ->
``qc`` (measured signs of a broken sample) -> ``output`` (:class:`GeneratedBrains` and its writer).
``folder`` is the model format on disk; the embedded default model lives in ``synthbrain/models/default``.
"""

from synthbrain.generator.draws import volume_seed
from synthbrain.generator.model import BrainGenerator
from synthbrain.generator.output import GeneratedBrains, check_output_folder
from synthbrain.model_folder import DEFAULT_MODEL, INDEX

__all__ = ["DEFAULT_MODEL", "INDEX", "BrainGenerator", "GeneratedBrains", "check_output_folder", "volume_seed"]
