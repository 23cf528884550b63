"""Features of a 3D network trained on brain MRI, for Fréchet distance, precision/recall, MMD and
nearest-neighbour distances.

The default is the encoder of deepbet's coarse brain-extraction network (Fisch et al. 2024,
"deepbet: Fast brain extraction of T1-weighted MRI using Convolutional Neural Networks"; MIT
licence), a TorchScript LinkNet trained on thousands of T1-weighted scans of many sites and shipped
in the ``deepbet`` wheel on PyPI, so it works offline. Its input is a whole volume at about 2 mm
(128^3 over the head); the features are the global averages of its last three encoder stages
(32 + 64 + 128 = 224 values). Volumes on another grid are resampled to ``spacing_mm`` first.

Any other TorchScript network whose ``forward`` maps (N, 1, D, H, W) to (N, F) can be passed as
``path`` (for example MedicalNet's ResNet with its head removed, the field's usual choice when the
user has those weights). Features are only comparable when computed by the same network on
volumes on the same grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthbrain import deepbet


class FeatureExtractor:
    """``extractor(volumes, spacing_mm)`` -> (N, F) float64 numpy features of volumes (N, 1, D, H, W)
    in [0, 1] on an RAS grid of ``spacing_mm`` voxels (F = 224 for the default deepbet encoder).

    ``path``: a TorchScript network mapping (N, 1, D, H, W) to (N, F), or None for deepbet's;
    ``spacing_mm``: the spacing volumes are resampled to (trilinear) before the network; ``batch_size``
    volumes per forward pass, on ``device``. The default network applies deepbet's input scaling
    (0.5 and 99.5 percentiles to [0, 1], then :func:`synthbrain.deepbet.normalise`) first; another
    network gets the volumes as they are. Calling raises ``ValueError`` for another shape or a
    ``spacing_mm`` <= 0; building one raises ``ValueError`` when deepbet is not installed.
    """

    def __init__(self, path: str | Path | None = None, *, spacing_mm: float = 2.0, batch_size: int = 4, device: str = "cpu"):
        self.path = Path(path) if path is not None else deepbet.network_file()
        self.is_deepbet = path is None
        self.model = torch.jit.load(str(self.path), map_location=device).eval()
        self.spacing_mm, self.batch_size, self.device = spacing_mm, batch_size, device
        self.name = "deepbet bbox_model encoder (GAP of 3 stages)" if self.is_deepbet else self.path.name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_deepbet:
            return self.model(x).flatten(1)
        # deepbet's own input normalisation: robust range to [0, 1], then its z-score scaling
        flat = x.flatten(1)
        low, high = flat.quantile(0.005, dim=1), flat.quantile(0.995, dim=1)
        x = ((x - low.view(-1, 1, 1, 1, 1)) / (high - low).clamp_min(1e-6).view(-1, 1, 1, 1, 1)).clamp(0, 1)
        stages = [h.mean((2, 3, 4)) for h in deepbet.stages(self.model, deepbet.normalise(x), ("down1", "down2", "down3"))]
        return torch.cat(stages, 1)

    @torch.no_grad()
    def __call__(self, volumes, spacing_mm: float) -> np.ndarray:
        volumes = torch.as_tensor(volumes, dtype=torch.float32)
        if volumes.ndim != 5 or volumes.shape[1] != 1:
            raise ValueError(f"volumes: shape {tuple(volumes.shape)}; allowed: (N, 1, D, H, W)")
        if spacing_mm <= 0:
            raise ValueError(f"spacing_mm={spacing_mm}; allowed: > 0")
        scale = spacing_mm / self.spacing_mm
        out = []
        for start in range(0, len(volumes), self.batch_size):
            x = volumes[start : start + self.batch_size].to(self.device)
            if scale != 1:
                x = F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)
            out.append(self._forward(x).double().cpu())
        return torch.cat(out).numpy()
