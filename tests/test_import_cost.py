"""Importing the generator loads neither MONAI nor scikit-learn nor matplotlib: they load when a
model is read or built (issue 34, point 4; benchmarks/import_time.py measures the seconds)."""

import subprocess
import sys

from tests.helpers import subprocess_env


def test_importing_brain_generator_leaves_monai_sklearn_and_matplotlib_unloaded():
    code = (
        "import sys; from synthbrain import BrainGenerator, GeneratedBrains, volume_seed; import synthbrain.generator; "
        "print(sorted(m for m in ('monai', 'sklearn', 'matplotlib', 'torchio', 'SimpleITK') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
