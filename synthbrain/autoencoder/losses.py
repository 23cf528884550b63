"""The autoencoder's training losses: reconstruction, KL, perceptual and patch-adversarial terms.

Autoencoders trained with pixel losses alone give blurred reconstructions; every published 3D brain
latent diffusion model adds a perceptual and a patch-adversarial term (Rombach et al. 2022; Pinaya
et al. 2022; MONAI's 3D LDM tutorials; MAISI). Here:

* :class:`PerceptualLoss`: an LPIPS-style distance (Zhang et al. 2018: channel-normalised features,
  squared differences averaged over space, summed over stages) on the features of a frozen 3D
  network trained on T1-weighted brain MRI. The default is the encoder of deepbet's brain-extraction
  LinkNet (Fisch et al. 2024; MIT; shipped as TorchScript in the ``deepbet`` wheel, so it works
  offline). Any TorchScript network whose ``forward`` maps (N, 1, D, H, W) to one 5D feature map or
  a list of them can replace it (e.g. MedicalNet's ResNet exported by the user).
* :func:`make_discriminator`: MONAI's ``PatchDiscriminator`` (Isola et al. 2017, pix2pix's PatchGAN),
  trained with MONAI's ``PatchAdversarialLoss`` (least squares, Mao et al. 2017, or hinge).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synthbrain import deepbet
from synthbrain.autoencoder.model import AutoencoderOutput

ADVERSARIAL_CRITERIA = ("least_squares", "hinge")


@dataclass(frozen=True)
class AutoencoderLossWeights:
    """Weights of the loss terms (each >= 0; 0 switches a term off).

    ``image_l1``: L1 on the image in [0, 1]; ``labels_ce``: cross-entropy of the label logits against
    class indices or fractions; ``labels_dice``: soft Dice loss of the label softmax over every class,
    background included, pooled over the batch (:func:`label_dice_loss`; with ``labels_ce`` the Dice +
    cross-entropy of nnU-Net, Isensee et al. 2021): each class weighs the same whatever its volume, so
    thin classes such as sulcal CSF are not traded for the bulk ones; ``kl``: KL to N(0, 1) summed over
    latent elements (published 3D LDMs: 1e-6 to 1e-8); ``perceptual``: :class:`PerceptualLoss` (published: about 1e-3 to 0.3, on other
    feature networks); ``adversarial``: the generator's patch-adversarial loss (published: 0.01 to 0.1),
    used from the step ``adversarial_warmup`` of :class:`~synthbrain.autoencoder.train.AutoencoderTraining`.
    """

    image_l1: float = 1.0
    labels_ce: float = 1.0
    labels_dice: float = 0.0
    kl: float = 1e-6
    perceptual: float = 0.0
    adversarial: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"weights.{name}={value!r}; allowed: a finite number >= 0 (0 switches the term off)")


class PerceptualLoss(nn.Module):
    """LPIPS-style perceptual distance between two image batches (N, 1, D, H, W) in [0, 1].

    ``network=None`` uses deepbet's brain-extraction network (``bbox_model.pt``, trained on about 2 mm
    T1w volumes): its first convolution (1/2 resolution), and encoder stages ``down0`` (1/4) and
    ``down1`` (1/8). Both inputs are first put through deepbet's intensity normalisation with the
    statistics of ``target`` (so the same affine map is applied to both). ``network`` may be a path
    to another TorchScript file whose ``forward`` returns one 5D feature map or a list/tuple of them.
    The returned loss is a scalar: the mean over the batch of the sum over stages of the
    spatially averaged squared difference of channel-normalised features. The network is frozen
    (no gradient to its weights) and kept in eval mode.

    Raises ``ValueError`` naming ``network`` for a missing file, a file that is not TorchScript, or a
    network that does not take a (N, 1, D, H, W) volume and return 5D feature maps.
    """

    def __init__(self, network: str | Path | None = None):
        super().__init__()
        self.is_deepbet = network is None
        path = deepbet.network_file() if network is None else Path(network)
        shown = "deepbet bbox_model" if network is None else str(network)
        if not path.is_file():
            raise ValueError(f"perceptual network={shown!r}: no such file; allowed: a TorchScript file, or None for deepbet's")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError or others for a file that is not TorchScript
            raise ValueError(f"perceptual network={shown!r}: not a TorchScript file ({str(err).splitlines()[0][:200]})") from None
        self.net = net.eval()
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        self.name = "deepbet bbox_model (conv1, down0, down1)" if self.is_deepbet else path.name
        try:
            with torch.no_grad():
                features = self.features(torch.rand(1, 1, 16, 16, 16))
        except Exception as err:
            raise ValueError(
                f"perceptual network={shown!r}: does not take a 3D volume (1, 1, 16, 16, 16) ({str(err).splitlines()[0][:200]}); "
                "allowed: a network whose forward maps (N, 1, D, H, W) to 5D feature maps"
            ) from None
        if not features or any(f.ndim != 5 for f in features):
            raise ValueError(
                f"perceptual network={shown!r}: returns features of shapes {[tuple(f.shape) for f in features]}; "
                "allowed: one or more 5D feature maps (N, C, d, h, w)"
            )

    def train(self, mode: bool = True) -> PerceptualLoss:  # the feature network stays in eval mode (batch norm statistics)
        """Switch this module's mode (``torch.nn.Module.train``); the feature network stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps (N, C, d, h, w) of ``x`` (N, 1, D, H, W): deepbet's conv1, down0 and down1 stages, or
        whatever a user-supplied network returns (one tensor or a list)."""
        if not self.is_deepbet:
            out = self.net(x)
            return list(out) if isinstance(out, (list, tuple)) else [out]
        return deepbet.stages(self.net, x, ("conv1", "down0", "down1"))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 distance between the feature maps of ``prediction`` and ``target`` (both (N, 1, D, H, W)),
        summed over stages; a scalar. Raises ``ValueError`` for other shapes."""
        if prediction.shape != target.shape or prediction.ndim != 5 or prediction.shape[1] != 1:
            raise ValueError(f"prediction {tuple(prediction.shape)}, target {tuple(target.shape)}; allowed: equal shapes (N, 1, D, H, W)")
        prediction, target = prediction.float(), target.float()
        if self.is_deepbet:  # deepbet's input scaling, with the target's statistics for both
            prediction, target = deepbet.normalise(prediction, target), deepbet.normalise(target)
        with torch.autocast(prediction.device.type, enabled=False):
            both = self.features(torch.cat([prediction, target]))
        loss = prediction.new_zeros(())
        for feature in both:
            a, b = F.normalize(feature, dim=1, eps=1e-6).chunk(2)
            loss = loss + (a - b.detach()).pow(2).sum(1).mean()
        return loss


def make_discriminator(in_channels: int = 1, channels: int = 32, layers: int = 3) -> nn.Module:
    """MONAI's 3D ``PatchDiscriminator``: ``layers`` stride-2 convolutions (4^3 kernels) from
    ``channels`` features, LeakyReLU 0.2, batch norm; its last output is a (N, 1, d, h, w) map of
    patch logits (a 40 x 56 x 40 input gives 5 x 7 x 5 patches at 3 layers)."""
    from monai.networks.nets import PatchDiscriminator

    if not (isinstance(layers, int) and layers >= 1 and isinstance(channels, int) and channels >= 1):
        raise ValueError(f"discriminator layers={layers!r}, channels={channels!r}; allowed: integers >= 1")
    return PatchDiscriminator(spatial_dims=3, num_layers_d=layers, channels=channels, in_channels=in_channels, out_channels=1)


class AdversarialLoss:
    """The patch-adversarial losses of MONAI's ``PatchAdversarialLoss`` (``criterion`` least_squares or hinge)."""

    def __init__(self, criterion: str = "least_squares"):
        from monai.losses import PatchAdversarialLoss

        if criterion not in ADVERSARIAL_CRITERIA:
            raise ValueError(f"adversarial criterion={criterion!r}; allowed: {list(ADVERSARIAL_CRITERIA)}")
        self.loss = PatchAdversarialLoss(criterion=criterion, reduction="mean")

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """What the autoencoder minimises: its reconstructions' patches called real."""
        return self.loss(fake_logits.float(), target_is_real=True, for_discriminator=False)

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """What the discriminator minimises: real patches called real, reconstructed ones fake (mean of both)."""
        real = self.loss(real_logits.float(), target_is_real=True, for_discriminator=True)
        fake = self.loss(fake_logits.float(), target_is_real=False, for_discriminator=True)
        return 0.5 * (real + fake)


def adaptive_adversarial_weight(
    reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """The adaptive weight of the adversarial term (Esser et al. 2021, *Taming Transformers*, eq. 7):
    ``||grad_L(reconstruction)|| / (||grad_L(adversarial)|| + 1e-4)``, where grad_L is the gradient with
    respect to ``last_layer`` (the weight of the decoder's last convolution), clamped to
    [0, ``max_weight``] and detached. Multiplied by the configured adversarial weight, it keeps the
    adversarial gradient at the decoder's output on the scale of the reconstruction gradient, so the
    discriminator neither dominates nor vanishes as the losses move. Both losses are scalars that
    depend on ``last_layer``; the graph is kept for the backward pass that follows. Returns a 0-d tensor.
    """
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)), summed over latent elements, averaged over the batch; a scalar."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 2 * torch.log(sigma.clamp_min(1e-8)) - 1)
    return kl.flatten(1).sum(1).mean()


def label_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss (Milletari et al. 2016) of ``softmax(logits)`` (B, C, D, H, W) against class indices
    (B, D, H, W) or class fractions (B, C, D, H, W): 1 - Dice per class over the whole batch, averaged
    over the C classes, background included (MONAI ``DiceLoss(softmax=True, batch=True)``). A class absent
    from the batch scores 1 - smooth / (predicted volume + smooth), so predicting it costs. A 0-d tensor in
    [0, 1]."""
    from monai.losses import DiceLoss

    if not target.is_floating_point():
        target = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float()
    return DiceLoss(softmax=True, batch=True)(logits, target)


def autoencoder_loss(
    out: AutoencoderOutput,
    image: torch.Tensor,
    labels: torch.Tensor | None,
    weights: AutoencoderLossWeights = AutoencoderLossWeights(),
    perceptual: PerceptualLoss | None = None,
) -> dict[str, torch.Tensor]:
    """The autoencoder's own loss terms, each unweighted, and ``total`` (their weighted sum): ``image_l1``,
    ``labels_ce`` (when the model decodes labels; ``labels`` as class indices (B, D, H, W) or fractions
    (B, C, D, H, W)), ``labels_dice`` (when the model decodes labels and its weight is above 0), ``kl``
    and ``perceptual`` (when its weight is above 0; needs ``perceptual``).
    The adversarial term is added by the training step, which owns the discriminator."""
    parts = {"image_l1": F.l1_loss(out.image.float(), image.float())}
    if out.label_logits is not None:
        target = labels.float() if labels.is_floating_point() else labels.long()
        parts["labels_ce"] = F.cross_entropy(out.label_logits.float(), target)
        if weights.labels_dice > 0:
            parts["labels_dice"] = label_dice_loss(out.label_logits.float(), target)
    parts["kl"] = kl_divergence(out.mu.float(), out.sigma.float())
    if weights.perceptual > 0:
        if perceptual is None:
            raise ValueError(f"weights.perceptual={weights.perceptual} needs a PerceptualLoss; pass perceptual=")
        parts["perceptual"] = perceptual(out.image, image)
    parts["total"] = sum(getattr(weights, name) * value for name, value in parts.items())
    return parts
