"""``synthbrain train diffusion``: train the conditional latent-diffusion UNet on cached latents.

Epsilon, v or sample prediction on the noise schedule (Ho et al. 2020; Salimans & Ho 2022 for v),
optional min-SNR-gamma loss weighting (Hang et al. 2023), classifier-free-guidance condition dropout
(Ho & Salimans 2022), and an exponential moving average of the weights (what is exported and
sampled). Resumable and torchrun-ready through :func:`synthbrain.training.run`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import TensorDataset

from synthbrain import _io, seeding, training
from synthbrain.components import save_component, save_config
from synthbrain.diffusion.latents import LATENT_SCALINGS, LatentCache
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig, drop_conditions
from synthbrain.samplers.schedule import NoiseSchedule


@dataclass(frozen=True)
class DiffusionTraining:
    """Optimisation settings (recorded in the run folder's ``run.json``).

    ``condition_dropout``: probability of training a sample on the null condition (needed for
    classifier-free guidance; 0 gives a model that cannot be guided). ``min_snr_gamma``: None for
    the plain mean squared error, or gamma of min-SNR weighting (Hang et al. 2023 use 5).
    ``latent_scaling``: how latents are brought to unit variance before noise is added (one of
    :data:`~synthbrain.diffusion.latents.LATENT_SCALINGS`, see
    :meth:`LatentCache.scaling <synthbrain.diffusion.latents.LatentCache.scaling>`): ``"global"``, one
    factor for all channels, or ``"per_channel"``, each channel standardised to mean 0 and variance 1.
    ``precision``: one of :data:`synthbrain.training.PRECISIONS` (``"auto"``: bf16-mixed on CUDA,
    32-true elsewhere; ``"bf16-mixed"``: ``torch.autocast`` to bfloat16 on any device).
    """

    steps: int = 3000
    batch_size: int = 8
    learning_rate: float = 1e-4
    condition_dropout: float = 0.15
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0
    min_snr_gamma: float | None = None
    latent_scaling: str = "global"
    precision: str = "auto"

    def __post_init__(self) -> None:
        training.check_precision(self.precision)
        if self.latent_scaling not in LATENT_SCALINGS:
            raise ValueError(f"latent_scaling={self.latent_scaling!r}; allowed: {list(LATENT_SCALINGS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}; allowed: an integer >= 0")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < math.inf):
            raise ValueError(f"learning_rate={self.learning_rate!r}; allowed: a finite number > 0")
        if not 0.0 <= self.condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout={self.condition_dropout}; allowed: [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay}; allowed: [0, 1)")
        if self.min_snr_gamma is not None and not (isinstance(self.min_snr_gamma, (int, float)) and 0 < self.min_snr_gamma < math.inf):
            raise ValueError(f"min_snr_gamma={self.min_snr_gamma!r}; allowed: None or a finite number > 0")


def recorded_settings(settings: DiffusionTraining) -> dict:
    """The settings a run folder's ``run.json`` records (``steps`` left out: more steps continue the run).
    ``latent_scaling`` is recorded only when not ``"global"`` and ``precision`` only when not ``"auto"``,
    so that runs written before they existed keep their record and resume."""
    recorded = {k: v for k, v in asdict(settings).items() if k != "steps"}
    for name, default in (("latent_scaling", "global"), ("precision", "auto")):
        if recorded[name] == default:
            del recorded[name]
    return recorded


def loss_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Per-sample weights of the squared error at timesteps ``t`` (B,): ones, or min-SNR-gamma
    (Hang et al. 2023) expressed for the schedule's prediction type: min(SNR, gamma) / SNR for
    epsilon, min(SNR, gamma) / (SNR + 1) for v, min(SNR, gamma) for sample prediction."""
    if gamma is None:
        return torch.ones(len(t), dtype=torch.float32)
    abar = schedule.alphas_cumprod[t.cpu().long()]
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    weight = {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[schedule.prediction_type]
    return weight.float()


@_io.writes_folder("run_dir")  # one training per run folder (rank 0 holds the lock)
def train_diffusion(
    latents: str | Path,
    run_dir: str | Path,
    model_config: DiffusionConfig,
    training_config: DiffusionTraining = DiffusionTraining(),
    schedule: NoiseSchedule = NoiseSchedule(),
    *,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) and write ``run_dir/unet`` (EMA weights) and ``run_dir/scheduler/config.json``.
    Run again with a larger ``steps`` (and every other setting equal) to train further.

    Raises ``ValueError`` before training for a model whose latent channels, condition width or
    downsampling do not fit the latents, too few subjects with every covariate for one batch per
    process, or a run folder that holds another configuration."""
    settings = training_config
    info = training.setup_distributed(device)
    cache = LatentCache.load(latents)
    keep = cache.complete()
    if model_config.latent_channels != cache.latents.shape[1] or model_config.condition_dim != cache.conditions.shape[1]:
        raise ValueError(
            f"model_config: latent_channels={model_config.latent_channels}, condition_dim={model_config.condition_dim}; "
            f"the latents have {cache.latents.shape[1]} channels and {cache.conditions.shape[1]} condition entries"
        )
    if any(n % model_config.downsample for n in cache.latents.shape[2:]):
        raise ValueError(
            f"latent shape {tuple(cache.latents.shape[2:])} is not divisible by the UNet's downsampling {model_config.downsample}"
        )
    if len(keep) < settings.batch_size * info.world_size:
        raise ValueError(
            f"batch_size={settings.batch_size} x {info.world_size} processes exceeds the {len(keep)} subjects with all covariates"
        )
    run_dir = Path(run_dir)
    _io.claim_folder(
        run_dir,
        "run.json",
        {
            "stage": "diffusion",
            "model": model_config.to_dict(),
            "training": recorded_settings(settings),
            "schedule": schedule.to_dict(),
            "latents": str(Path(latents).resolve()),
        },
        argument="run_dir",
        write=info.is_main,
    )
    scale, shift = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1, 1) for v in cache.scaling(settings.latent_scaling))
    dataset = TensorDataset((cache.latents[keep] - shift) * scale, cache.conditions[keep])

    torch.manual_seed(settings.seed)
    model = ConditionalUNet(model_config).to(info.device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(seeding.training_seed(settings.seed, info.rank))
    train_model = DistributedDataParallel(model) if info.world_size > 1 else model

    def step(batch: list[torch.Tensor], index: int) -> dict[str, float]:
        x0, condition = (t.to(info.device) for t in batch)
        t = torch.randint(0, schedule.num_train_timesteps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(info.device)
        condition = drop_conditions(condition, settings.condition_dropout, generator)
        with training.autocast(info.device, settings.precision):
            prediction = train_model(schedule.add_noise(x0, noise, t.to(info.device)), t.to(info.device), condition)
        error = (prediction.float() - schedule.training_target(x0, noise, t.to(info.device))).pow(2).flatten(1).mean(1)
        loss = (loss_weights(schedule, t, settings.min_snr_gamma).to(info.device) * error).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema.update_parameters(model)
        return {"mse": error.mean().item(), "loss": loss.item()}

    training.run(
        training.Loop(
            run_dir=run_dir,
            info=info,
            state={"model": model, "ema": ema, "optimizer": optimiser},
            generators={"generator": generator},
            dataset=dataset,
            step=step,
            steps=settings.steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            checkpoint_every=settings.checkpoint_every,
            log_every=settings.log_every,
            title="diffusion training",
            progress=progress,
        )
    )
    if info.is_main:
        save_component(ema.module, run_dir / "unet")
        save_config(schedule, run_dir / "scheduler")
    return run_dir / "unet"
