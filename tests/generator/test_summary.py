"""Short summaries instead of tensors, and one message for a device this machine lacks (issue 34, point 5)."""

import pytest
import torch

from synthbrain.cli import main
from tests.helpers import tiny_generator


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


def test_a_generator_prints_as_a_summary(generator):
    text = repr(generator)
    assert len(text.splitlines()) == 5 and "tensor" not in text
    assert "model: in memory" in text and "16 x 16 x 16 voxels of 4 mm" in text and "8 label classes (background, ventricles" in text
    assert "sex (F, M); age 20 to 80 years; ventricular_volume 5 to 60 mL; brain_volume 900 to 1600 mL" in text
    assert "ddim, 2 steps" in text and "on cpu, float32" in text


def test_generated_brains_print_as_a_summary(generator):
    out = generator.generate(age=[70, 45.5], sex=["F", "M"], seed=0)
    text = repr(out)
    assert len(text.splitlines()) <= 6 and "tensor" not in text and "0.0000" not in text
    assert text.startswith("GeneratedBrains: 2 volumes, images (2, 1, 16, 16, 16) float32, label maps (2, 16, 16, 16) of 8 classes")
    assert "sex F 1, M 1; age 45.5 to 70 years; ventricular_volume " in text and " mL; brain_volume " in text
    assert "model: in memory; ddim, 2 steps" in text
    assert str(out) == text


def test_moving_to_a_missing_gpu_gives_the_command_lines_message(generator, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as caught:
        generator.to("cuda")
    message = str(caught.value)
    assert message == "device='cuda': CUDA is not available on this machine; allowed: 'cpu'"
    assert main(["generate", "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == f"synthbrain generate: error: {message}"
    assert generator.device.type == "cpu"  # nothing moved
