"""Device choice: the one place that turns a device name into a :class:`torch.device` this machine can run.

Every stage that takes a ``device`` argument or ``--device`` flag calls :func:`resolve_device`, so a
device this machine lacks is refused with one wording wherever it is named.
"""

from __future__ import annotations

import torch

ALLOWED = "'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device | None, argument: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` gives CUDA where it is available, else the CPU.

    ``argument`` names the argument in errors (``"device"`` gives ``device='cuda': ...``, a flag such
    as ``"--device"`` gives ``--device 'cuda': ...``). Raises ``ValueError`` for a name torch does not
    know or a device type other than cpu, cuda and mps, for CUDA on a machine without it (or a GPU
    index beyond its count), and for MPS where it is not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    value = device if resolved is None else str(resolved)
    shown = f"{argument} {value!r}" if argument.startswith("-") else f"{argument}={value!r}"
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{shown}; allowed: {ALLOWED}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{shown}: CUDA is not available on this machine; allowed: 'cpu'")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{shown}: this machine has {count} GPU(s); allowed: cuda:0 to cuda:{count - 1}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{shown}: MPS is not available on this machine; allowed: 'cpu'")
    return resolved
