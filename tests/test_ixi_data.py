"""Checks on the shared real cohort (IXI-HH); skipped with a reason when it is not beside the checkout."""

import json

import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import read_folder
from synthbrain.preprocessing.prepare import PrepareParams, prepare_cohort


@pytest.fixture(scope="module")
def ixi_cohort():
    from tests.helpers import SHARED_IXI

    if not SHARED_IXI.is_dir():
        pytest.skip(f"real data not found at {SHARED_IXI} (the shared IXI-HH folder beside the checkout)")
    return SHARED_IXI, read_folder(SHARED_IXI / "t1", SHARED_IXI / "participants.csv", labels=SHARED_IXI / "seg")


def test_every_subject_is_read_and_volumes_measured_from_labels_match_the_table(ixi_cohort):
    root, cohort = ixi_cohort
    table = pd.read_csv(root / "participants.csv").set_index("subject_id")
    assert len(cohort) == len(table) and not cohort.skipped
    got = cohort.table().set_index("subject_id").loc[table.index]
    np.testing.assert_allclose(got["ventricular_volume"] * 1000, table["ventricles"], rtol=1e-9)
    np.testing.assert_allclose(got["brain_volume"] * 1000, table["total_brain"], rtol=1e-9)
    np.testing.assert_allclose(got["intracranial_volume"] * 1000, table["icv"], rtol=1e-9)
    missing = table.index[table["age"].isna()]
    assert all(any(sid in w for w in cohort.warnings) for sid in missing)


def test_two_real_subjects_are_aligned_to_the_template(ixi_cohort, tmp_path):
    _, cohort = ixi_cohort
    cohort.subjects = cohort.subjects[:2]
    prepare_cohort(cohort, tmp_path, PrepareParams(spacing=2.0), workers=2, progress=False)
    for record in json.loads((tmp_path / "manifest.json").read_text())["records"]:
        assert record["dice_template"] > 0.8, record["subject_id"]
        assert record["brain_outside_fraction"] < 0.01
        # Rigid registration keeps volumes: at the native 2 mm the resampled coarse volumes match the
        # native ones (on all 150 IXI-HH subjects: ventricles within 1.2%, brain within 0.1%).
        for name, tolerance in (("ventricular_volume", 0.05), ("brain_volume", 0.005)):
            native = record["covariates"][name]
            assert abs(record["volumes_on_grid_ml"][name] - native) / native < tolerance, name
