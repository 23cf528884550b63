"""``synthbrain train autoencoder``: train the joint image + label autoencoder on a prepared cohort.

Each step minimises L1 on the image, cross-entropy on the labels, a small KL term and, with their
weights above 0, a perceptual term and a patch-adversarial term (:mod:`synthbrain.autoencoder.losses`).
The adversarial term and its discriminator start at step ``adversarial_warmup``: before it the
autoencoder learns to reconstruct, after it a MONAI ``PatchDiscriminator`` (its own Adam optimiser)
is trained on real images against reconstructions in alternation with the autoencoder, as in
Rombach et al. 2022 and MONAI's 3D LDM recipes. Resumable to bit-identical weights and runnable
under torchrun through :func:`synthbrain.training.run`; the checkpoint holds the discriminator and
its optimiser too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from synthbrain import _io, seeding, training
from synthbrain.autoencoder.losses import (
    ADVERSARIAL_CRITERIA,
    AdversarialLoss,
    AutoencoderLossWeights,
    PerceptualLoss,
    adaptive_adversarial_weight,
    autoencoder_loss,
    make_discriminator,
)
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.components import load_component, save_component
from synthbrain.preprocessing.prepared import PreparedCohort


@dataclass(frozen=True)
class AutoencoderTraining:
    """Optimisation settings (recorded in the run folder's ``run.json``).

    ``adversarial_warmup``: steps before the discriminator and the adversarial term start.
    ``perceptual_network``: a TorchScript file for :class:`PerceptualLoss` (None: deepbet's network).
    ``discriminator_channels`` / ``discriminator_layers``: the ``PatchDiscriminator``'s width and depth;
    ``adversarial_criterion``: ``least_squares`` or ``hinge``. ``adaptive_adversarial_weight``: scale
    the adversarial term by :func:`~synthbrain.autoencoder.losses.adaptive_adversarial_weight` (Esser et
    al. 2021) on top of ``weights.adversarial``. ``patch_size``: train on one random (D, H, W) crop per
    subject and step, in voxels of the training grid, each a multiple of the model's downsampling
    (MAISI trains its autoencoder on patches; the network is fully convolutional, so whole volumes
    are encoded afterwards); None trains on whole volumes. A patch-trained model is not yet ready for
    whole volumes: its group normalisation computes statistics over the whole input, which differ
    between a brain patch and a volume that is mostly background, and whole volumes come out too bright
    inside the brain (measured in the model card, ``synthbrain/models/default-2mm/README.md``). Finish with
    a short whole-volume run that starts from it (``init``), or reconstruct in windows of the patch size
    (:meth:`~synthbrain.autoencoder.model.BrainAutoencoder.reconstruct`'s ``window``). ``init``: an
    autoencoder component folder (``config.json`` + ``model.safetensors``) whose weights the run starts
    from; its config must equal the model config. A component folder holds no discriminator, so an
    adversarial fine-tuning from it starts with an untrained one: 1500 such steps on the shipped
    ``default-2mm`` autoencoder lost high-frequency power (0.54 to 0.32 of real;
    ``docs/benchmarks/autoencoder-label-dice.md``); to continue adversarial training, resume its run folder.
    ``precision``: one of :data:`synthbrain.training.PRECISIONS` (``"auto"``: bf16-mixed on CUDA, 32-true
    elsewhere; ``"bf16-mixed"``: ``torch.autocast`` to bfloat16 on any device; on CPU the patch discriminator
    then stays in float32, as its batch normalisation is not deterministic in bfloat16 there).

    Raises ``ValueError`` naming the option and value for a step, batch or checkpoint count below 1, a
    negative seed or warm-up, an adversarial term trained from scratch without a warm-up (the
    discriminator would face an untrained decoder), a patch size that is not three integers >= 1,
    a learning rate that is not a finite number > 0, or an unknown precision.
    """

    steps: int = 500
    batch_size: int = 2
    learning_rate: float = 2e-4
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    weights: AutoencoderLossWeights = field(default_factory=AutoencoderLossWeights)
    adversarial_warmup: int = 0
    adversarial_criterion: str = "least_squares"
    adaptive_adversarial_weight: bool = False
    patch_size: tuple[int, int, int] | None = None
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    discriminator_learning_rate: float | None = None  # None: learning_rate
    perceptual_network: str | None = None
    init: str | None = None  # an autoencoder component folder to start from (fine-tuning); None: random initialisation
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "discriminator_channels", "discriminator_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        for name in ("seed", "num_workers", "adversarial_warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")
        for name in ("learning_rate", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
                raise ValueError(f"{name}={value!r}; allowed: a finite number > 0")
        training.check_precision(self.precision)
        if self.adversarial_criterion not in ADVERSARIAL_CRITERIA:
            raise ValueError(f"adversarial_criterion={self.adversarial_criterion!r}; allowed: {list(ADVERSARIAL_CRITERIA)}")
        if not isinstance(self.weights, AutoencoderLossWeights):
            raise ValueError(f"weights={self.weights!r}; allowed: an AutoencoderLossWeights")
        if self.weights.adversarial > 0 and self.init is None and self.adversarial_warmup < 1:
            raise ValueError(
                f"adversarial_warmup={self.adversarial_warmup!r} with weights.adversarial={self.weights.adversarial} and no init; "
                "allowed: an integer >= 1 (reconstruction-only steps before the discriminator starts), or an init to fine-tune"
            )
        if self.patch_size is not None:
            patch = self.patch_size
            whole = all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in patch) if isinstance(patch, tuple) else False
            if not (whole and len(patch) == 3):
                raise ValueError(f"patch_size={patch!r}; allowed: None (whole volumes) or a tuple of three integers >= 1 (D, H, W)")

    def to_dict(self) -> dict:
        """The settings as plain JSON values (recorded in the run's ``run.json``). ``precision`` is
        recorded only when not ``"auto"``, so that runs written before it existed keep their record
        and resume."""
        data = {**asdict(self), "weights": asdict(self.weights)}
        data["patch_size"] = None if self.patch_size is None else list(self.patch_size)
        if data["precision"] == "auto":
            del data["precision"]
        return data


@_io.writes_folder("run_dir")  # one training per run folder (rank 0 holds the lock)
def train_autoencoder(
    prepared: str | Path,
    run_dir: str | Path,
    model_config: AutoencoderConfig,
    training_config: AutoencoderTraining = AutoencoderTraining(),
    *,
    downsample: int = 1,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume training) and write ``run_dir/autoencoder/{config.json, model.safetensors}``.
    Run again with a larger ``steps`` (and every other setting equal) to train further.

    ``downsample=k`` trains on the prepared cohort averaged over k x k x k blocks, with class
    fractions as label targets (see :class:`PreparedCohort`). Raises ``ValueError`` before any
    training for a label count or grid the model cannot take, a batch larger than the cohort, a
    perceptual network that cannot be used, or a run folder that holds another configuration.
    """
    settings = training_config
    info = training.setup_distributed(device)
    cohort = PreparedCohort.load(prepared, downsample)
    scheme_classes = cohort.label_scheme.num_classes if cohort.label_scheme else 0
    if model_config.num_classes not in (0, scheme_classes):
        raise ValueError(f"model_config.num_classes={model_config.num_classes}; the prepared cohort's labels have {scheme_classes} classes")
    if any(n % model_config.downsample for n in cohort.output_grid.shape):
        raise ValueError(
            f"the training grid {cohort.output_grid.shape} is not divisible by the autoencoder's downsampling {model_config.downsample}"
        )
    patch = settings.patch_size
    if patch is not None and (
        any(p > n for p, n in zip(patch, cohort.output_grid.shape)) or any(p % model_config.downsample for p in patch)
    ):
        raise ValueError(
            f"patch_size={patch}; allowed: at most the training grid {cohort.output_grid.shape} per axis and each a multiple "
            f"of the autoencoder's downsampling {model_config.downsample}"
        )
    if len(cohort) < settings.batch_size * info.world_size:
        raise ValueError(f"batch_size={settings.batch_size} x {info.world_size} processes exceeds the {len(cohort)} subjects")
    weights = settings.weights
    perceptual = PerceptualLoss(settings.perceptual_network).to(info.device) if weights.perceptual > 0 else None
    run_dir = Path(run_dir)
    _io.claim_folder(
        run_dir,
        "run.json",
        {
            "stage": "autoencoder",
            "model": model_config.to_dict(),
            "training": {k: v for k, v in settings.to_dict().items() if k != "steps"},  # more steps continue the run
            "prepared": str(Path(prepared).resolve()),
            "downsample": downsample,
            "grid": cohort.output_grid.to_dict(),
        },
        argument="run_dir",
        write=info.is_main,
        added={"training.weights.labels_dice": 0.0},  # runs from before the Dice term resume
    )

    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    model = BrainAutoencoder(model_config)
    if settings.init is not None:
        start = load_component(BrainAutoencoder, AutoencoderConfig, settings.init)
        if start.config != model_config:
            raise ValueError(f"init={settings.init!r}: an autoencoder of config {start.config}; allowed: one of config {model_config}")
        model.load_state_dict(start.state_dict())
    model = model.to(info.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    state = {"model": model, "optimizer": optimiser}
    adversarial = weights.adversarial > 0
    if adversarial:
        discriminator = make_discriminator(1, settings.discriminator_channels, settings.discriminator_layers).to(info.device)
        d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=settings.discriminator_learning_rate or settings.learning_rate)
        state |= {"discriminator": discriminator, "discriminator_optimizer": d_optimiser}
        criterion = AdversarialLoss(settings.adversarial_criterion)
        seen = patch or cohort.output_grid.shape
        try:
            with torch.no_grad():
                discriminator.eval()(torch.zeros(2, 1, *seen, device=info.device))  # eval: no running statistics updated
        except (RuntimeError, ValueError):
            raise ValueError(
                f"the discriminator's {settings.discriminator_layers} stride-2 layers do not fit a {'patch' if patch else 'volume'} "
                f"of {tuple(seen)} voxels; allowed: fewer discriminator_layers or a larger patch_size"
            ) from None
        discriminator.train()
    noise = torch.Generator(device=info.device).manual_seed(seeding.training_seed(settings.seed, info.rank))
    crops = torch.Generator().manual_seed(seeding.training_seed(settings.seed, info.rank, "crops"))  # patch corners, CPU
    generators = {"noise": noise} | ({"crops": crops} if patch is not None else {})
    if info.world_size > 1:
        model = DistributedDataParallel(model)
        if adversarial:
            discriminator = DistributedDataParallel(discriminator)

    d_precision = discriminator_precision(settings.precision, info.device)

    def step(batch: dict, index: int) -> dict[str, float]:
        image = batch["image"]
        labels = batch["labels"] if model_config.num_classes else None
        if patch is not None:
            image, labels = random_patches(image, labels, patch, crops)
        image = image.to(info.device)
        labels = labels.to(info.device) if labels is not None else None
        with training.autocast(info.device, settings.precision):
            out = model(image, labels, generator=noise)
        parts = autoencoder_loss(out, image, labels, weights, perceptual)
        total = parts.pop("total")
        train_discriminator = adversarial and index >= settings.adversarial_warmup
        if train_discriminator:
            discriminator.requires_grad_(False)
            with training.autocast(info.device, d_precision):
                fake_logits = discriminator(out.image.float().contiguous())[-1]
            parts["adversarial"] = criterion.generator(fake_logits)
            scale = weights.adversarial
            if settings.adaptive_adversarial_weight:
                adaptive = adaptive_adversarial_weight(total, parts["adversarial"], training.unwrap(model).last_layer)
                parts["adaptive_weight"] = adaptive
                scale = scale * adaptive
            total = total + scale * parts["adversarial"]
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        logged = {"total": total.item(), **{k: v.item() for k, v in parts.items()}}
        if train_discriminator:
            discriminator.requires_grad_(True)
            with training.autocast(info.device, d_precision):
                real_logits = discriminator(image.contiguous())[-1]
                fake_logits = discriminator(out.image.detach().float().contiguous())[-1]
            d_loss = criterion.discriminator(real_logits, fake_logits)
            d_optimiser.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimiser.step()
            logged["discriminator"] = d_loss.item()
        return logged

    training.run(
        training.Loop(
            run_dir=run_dir,
            info=info,
            state=state,
            generators=generators,
            dataset=cohort,
            step=step,
            steps=settings.steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            checkpoint_every=settings.checkpoint_every,
            log_every=settings.log_every,
            title="autoencoder training",
            num_workers=settings.num_workers,
            progress=progress,
        )
    )
    if info.is_main:
        save_component(training.unwrap(model), run_dir / "autoencoder")
    return run_dir / "autoencoder"


def discriminator_precision(precision: str, device: torch.device) -> str:
    """The precision the patch discriminator runs in for the training's ``precision``: the same, but
    float32 ("32-true") for "bf16-mixed" on CPU, where its batch normalisation is not deterministic in
    bfloat16 (the weight gradient varies in the last bits between identical steps)."""
    return "32-true" if precision == "bf16-mixed" and device.type == "cpu" else precision


def random_patches(
    image: torch.Tensor, labels: torch.Tensor | None, size: tuple[int, int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random crop of ``size`` (D, H, W) voxels per subject, the same window for image and labels.

    ``image``: (N, 1, D, H, W); ``labels``: class indices (N, D, H, W), class fractions (N, C, D, H, W) or
    None. Corners are drawn uniformly from ``generator`` (a CPU ``torch.Generator``), one per subject and
    axis, in the order subject, then D, H, W. Returns the cropped image and labels (or None).
    Raises ``ValueError`` when ``size`` exceeds the volume.
    """
    spatial = image.shape[2:]
    if any(p > n for p, n in zip(size, spatial)):
        raise ValueError(f"patch size {tuple(size)} exceeds the volume {tuple(spatial)}")
    images, label_crops = [], []
    for i in range(image.shape[0]):
        corner = [int(torch.randint(0, n - p + 1, (1,), generator=generator)) for p, n in zip(size, spatial)]
        window = tuple(slice(c, c + p) for c, p in zip(corner, size))
        images.append(image[i, :, window[0], window[1], window[2]])
        if labels is not None:
            label_crops.append(labels[i][(..., *window)])
    return torch.stack(images), (torch.stack(label_crops) if labels is not None else None)
