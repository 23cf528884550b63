"""Stage 1, the real cohort: ingestion, covariates and label schemes."""

from synthbrain.cohort.bids import read_bids
from synthbrain.cohort.cohort import Cohort, CohortError, Problem, SubjectRecord, read_folder
from synthbrain.cohort.covariates import Covariate, CovariateSchema, default_schema
from synthbrain.cohort.labels import LabelScheme

__all__ = [
    "Cohort",
    "CohortError",
    "Covariate",
    "CovariateSchema",
    "LabelScheme",
    "Problem",
    "SubjectRecord",
    "default_schema",
    "read_bids",
    "read_folder",
]
