"""Device choice: synthbrain.device.resolve_device, the one owner every --device and device= goes through."""

from __future__ import annotations

import pytest
import torch

from synthbrain.device import resolve_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_names_and_the_default():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"^device='tpu'; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'$"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match=r"^--device 'meta'; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'$"):
        resolve_device("meta", "--device")
    count = torch.cuda.device_count()
    if count:
        with pytest.raises(ValueError, match=rf"device='cuda:{count}': this machine has {count} GPU\(s\)"):
            resolve_device(f"cuda:{count}")


@NO_CUDA
def test_cuda_without_cuda_is_refused_with_one_wording_everywhere(monkeypatch):
    from synthbrain.training import setup_distributed
    from tests.helpers import tiny_generator

    message = r"device='cuda': CUDA is not available on this machine; allowed: 'cpu'"
    with pytest.raises(ValueError, match=f"^{message}$"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="^--device 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1", "--device")
    with pytest.raises(ValueError, match=message):
        tiny_generator().to("cuda")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=message):
        setup_distributed("cuda")
