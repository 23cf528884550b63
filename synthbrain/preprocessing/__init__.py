"""Stage 2, preprocessing: reorientation, registration to MNI, resampling, normalisation, QC.

:func:`~synthbrain.preprocessing.prepare.prepare_cohort` writes a prepared cohort folder,
:class:`~synthbrain.preprocessing.prepared.PreparedCohort` reads one, and
:func:`~synthbrain.preprocessing.split.split_prepared` splits one into parts.
"""
