"""Importing synthbrain and drawing its figures leave the caller's matplotlib backend as it was."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import subprocess_env

SCRIPT = """
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("pdf")  # a backend that is not Agg, chosen by the user before synthbrain is imported
import synthbrain

synthbrain.BrainGenerator, synthbrain.SyntheticBrainDataset  # the lazily imported stages
import synthbrain.cli
import synthbrain.preprocessing.prepare
import synthbrain.preprocessing.qc as qc
import synthbrain.training as training
from synthbrain.cohort import default_schema

out = Path(sys.argv[1])
volume = np.random.default_rng(0).random((8, 8, 8))
qc.montage(out / "montage.png", [volume], [(volume > 0.5).astype(int)], ["a"], outline=volume > 0.2)
table = pd.DataFrame({"age": [30.0, 40.0, 50.0], "sex": ["F", "M", "F"]})
qc.covariate_plots(out / "covariates.png", table, default_schema())
training.write_history(out, [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], "run")
print(matplotlib.get_backend())
"""


def test_importing_synthbrain_and_drawing_keep_the_users_backend(tmp_path):
    env = {k: v for k, v in subprocess_env().items() if k != "MPLBACKEND"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pdf"
    for name in ("montage.png", "covariates.png", "losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
