"""Which torch device a call runs on: one check, shared by ``BrainGenerator.to``, the datasets and the
command line, so that every entry point gives the same message for a device this machine lacks."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (None: CUDA when available, else the CPU), or a ``ValueError``
    naming the device and what this machine allows where it cannot run it (no CUDA, a GPU index
    beyond those present, no MPS, an unknown type)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r}; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(resolved)!r}: CUDA is not available on this machine; allowed: 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"device={str(resolved)!r}: this machine has {count} GPU(s); allowed: cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={str(resolved)!r}: MPS is not available on this machine; allowed: 'cpu'")
    elif resolved.type != "cpu":
        raise ValueError(f"device={str(resolved)!r}; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return resolved
