"""Small 3D networks trained from scratch, and one seeded training loop for all of them.

They serve as evaluators (a segmenter trained on real labels only; the "spot the fake"
classifier) and as the downstream benchmark's task networks (segmentation, sex, age).

- :class:`UNet3d`: a two-level U-Net; logits per class.
- :class:`Encoder3d`: convolution blocks, global average pooling and a linear head (one output
  for a binary logit or a regression, more for classes).
- :func:`train_network`: AdamW on mini-batches drawn from in-memory tensors, a fixed number of
  steps; every draw (initialisation, batch order, augmentation) comes from ``seed``, and the global
  random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn
from tqdm.auto import tqdm

from synthbrain.training import autocast, check_precision

# One minus the soft Dice of each class, summed over the batch and space: (C, 1, 1, 1) for 3D input.
SOFT_DICE = DiceLoss(softmax=True, batch=True, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.1),
        nn.Conv3d(cout, cout, 3, padding=1),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.1),
    )


class UNet3d(nn.Module):
    """Encoder of ``len(channels)`` levels (max pooling between), decoder with trilinear upsampling
    and skip concatenation; any input size (skips are matched by interpolation). Each block is two
    3x3x3 convolutions with instance normalisation and LeakyReLU(0.1). Raises ``ValueError`` for fewer
    than 2 classes or 2 levels."""

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (16, 32, 64), in_channels: int = 1):
        super().__init__()
        if num_classes < 2 or len(channels) < 2:
            raise ValueError(f"num_classes={num_classes}, channels={channels}; allowed: >= 2 classes and >= 2 levels")
        self.down = nn.ModuleList([_block(c_in, c_out) for c_in, c_out in zip((in_channels, *channels[:-1]), channels)])
        self.up = nn.ModuleList([_block(channels[i] + channels[i + 1], channels[i]) for i in range(len(channels) - 1)])
        self.head = nn.Conv3d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes, D, H, W) of ``x`` (N, in_channels, D, H, W)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2, ceil_mode=True))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False), skip], 1))
        return self.head(x)


class Encoder3d(nn.Module):
    """Convolution blocks (as :class:`UNet3d`'s) with max pooling between, global average pooling, dropout,
    a linear head. Raises ``ValueError`` for ``outputs`` < 1 or no levels."""

    def __init__(self, outputs: int = 1, channels: tuple[int, ...] = (8, 16, 32), in_channels: int = 1, dropout: float = 0.2):
        super().__init__()
        if outputs < 1 or not channels:
            raise ValueError(f"outputs={outputs}, channels={channels}; allowed: >= 1 output and >= 1 level")
        layers = []
        for i, (c_in, c_out) in enumerate(zip((in_channels, *channels[:-1]), channels)):
            layers += ([nn.MaxPool3d(2, ceil_mode=True)] if i else []) + [_block(c_in, c_out)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels[-1], outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (N, outputs) of ``x`` (N, in_channels, D, H, W), any spatial size."""
        return self.head(self.features(x))


def dice_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Segmentation loss: cross-entropy against class fractions (or indices) plus one minus the
    mean soft Dice over classes present in the batch (as nnU-Net), which keeps small classes such
    as the ventricles from being traded for the large ones. The soft Dice is MONAI's
    :class:`~monai.losses.DiceLoss` (softmax, summed over the batch, smoothing 1e-5), averaged here
    over the present classes only (MONAI averages over all).

    ``logits``: (N, C, D, H, W); ``target``: class fractions (N, C, D, H, W) or class indices (N, D, H, W).
    Returns a scalar tensor."""
    if target.ndim == logits.ndim - 1:  # class indices (any dtype: augmentation may return floats)
        target = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float()
    one_minus_dice = SOFT_DICE(logits, target).flatten()  # (C,)
    present = target.sum((0, *range(2, logits.ndim))) > 0
    return F.cross_entropy(logits, target) + one_minus_dice[present].mean()


def train_network(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    seed: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "train",
    reset: bool = True,
    batches: Iterator[list[int]] | None = None,
    precision: str = "32-true",
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps on (inputs[i], targets[i]) pairs, batches
    drawn without replacement epoch by epoch. ``augment(input, target)`` transforms one pair (for
    example a torchio pipeline); it may draw from torch's global generator, which is seeded here.
    The weights are re-initialised from ``seed`` first, so the same call gives the same network
    (``reset=False`` continues from the current weights: fine-tuning). ``batches`` yields the
    indices of each batch instead of the epoch-by-epoch shuffle (for example a fixed share of
    synthetic subjects per batch). ``precision``: one of :data:`synthbrain.training.PRECISIONS` ("bf16-mixed":
    the forward pass under bfloat16 autocast, the loss and weights in float32;
    :func:`synthbrain.training.autocast`), checked before training. Returns the loss of each step. The model is left in eval mode, on
    ``device``. Raises ``ValueError`` for inputs and targets of different or zero length, ``steps`` or
    ``batch_size`` below 1, ``lr`` <= 0, or an unknown ``precision``."""
    if len(inputs) != len(targets) or len(inputs) < 1:
        raise ValueError(f"inputs, targets: {len(inputs)} and {len(targets)} samples; allowed: the same number, >= 1")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, lr={lr}; allowed: steps >= 1, batch_size >= 1, lr > 0")
    check_precision(precision)
    rng = np.random.default_rng(seed)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules() if reset else ():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        model.to(device).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        order: list[int] = []
        for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False):
            if batches is not None:
                batch = next(batches)
            else:
                if len(order) < batch_size:
                    order += rng.permutation(len(inputs)).tolist()
                batch, order = order[:batch_size], order[batch_size:]
            pairs = [(inputs[i], targets[i]) for i in batch]
            if augment is not None:
                pairs = [augment(x, y) for x, y in pairs]
            x = torch.stack([p[0] for p in pairs]).to(device)
            y = torch.stack([p[1] for p in pairs]).to(device)
            with autocast(torch.device(device), precision):
                output = model(x)
            loss = loss_fn(output.float(), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 8, device: str | torch.device = "cpu") -> torch.Tensor:
    """Model outputs for every input (N, ...), in batches of ``batch_size`` on ``device`` (the model is moved
    there), concatenated as float32 on the CPU."""
    model.eval().to(device)
    return torch.cat([model(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)])
