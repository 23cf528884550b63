"""``synthbrain train diffusion``: train the conditional latent-diffusion UNet on cached latents.

Epsilon (or v / sample) prediction on the noise schedule, classifier-free-guidance condition
dropout, an exponential moving average of the weights (what is exported and sampled), resumable
checkpoints and torchrun/DDP as in the autoencoder stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DistributedSampler, TensorDataset
from tqdm.auto import tqdm

from synthbrain import __version__, _io
from synthbrain.components import save_component
from synthbrain.diffusion.latents import LatentCache
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig, drop_conditions
from synthbrain.samplers.schedule import NoiseSchedule
from synthbrain.training import (
    CHECKPOINT,
    claim_run,
    epoch_order,
    gather_generator_states,
    load_checkpoint,
    save_checkpoint,
    setup_distributed,
    write_history,
)


@dataclass(frozen=True)
class DiffusionTraining:
    steps: int = 3000
    batch_size: int = 8
    learning_rate: float = 1e-4
    condition_dropout: float = 0.15
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; allowed: >= 1")
        if not 0.0 <= self.condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout={self.condition_dropout}; allowed: [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay}; allowed: [0, 1)")


def train_diffusion(
    latents: str | Path,
    run_dir: str | Path,
    model_config: DiffusionConfig,
    training: DiffusionTraining = DiffusionTraining(),
    schedule: NoiseSchedule = NoiseSchedule(),
    *,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) and write ``run_dir/unet`` (EMA weights) and ``run_dir/scheduler.json``."""
    info = setup_distributed(device)
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
    if len(keep) < training.batch_size * info.world_size:
        raise ValueError(
            f"batch_size={training.batch_size} x {info.world_size} processes exceeds the {len(keep)} subjects with all covariates"
        )
    run_dir = Path(run_dir)
    claim_run(
        run_dir,
        {
            "stage": "diffusion",
            "model": model_config.to_dict(),
            "training": asdict(training),
            "schedule": schedule.to_dict(),
            "latents": str(Path(latents).resolve()),
        },
        info.is_main,
    )
    dataset = TensorDataset(cache.latents[keep] * cache.scale, cache.conditions[keep])

    torch.manual_seed(training.seed)
    model = ConditionalUNet(model_config).to(info.device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(training.ema_decay))
    optimiser = torch.optim.AdamW(model.parameters(), lr=training.learning_rate)
    generator = torch.Generator().manual_seed(training.seed * 1000 + info.rank)
    step, history = 0, []
    if (run_dir / CHECKPOINT).is_file():
        state = load_checkpoint(run_dir / CHECKPOINT, info.device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"][info.rank].cpu())
        step, history = state["step"], state["history"]
    train_model = DistributedDataParallel(model) if info.world_size > 1 else model

    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=training.seed, drop_last=True)
    bar = tqdm(total=training.steps, initial=step, desc="train diffusion", unit="step", disable=not (progress and info.is_main))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if info.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    running = 0.0
    while step < training.steps:
        order = epoch_order(sampler, step, training.batch_size)
        for start in range(0, len(order) - training.batch_size + 1, training.batch_size):
            x0, condition = (t.to(info.device) for t in dataset[order[start : start + training.batch_size]])
            t = torch.randint(0, schedule.num_train_timesteps, (len(x0),), generator=generator).to(info.device)
            noise = torch.randn(x0.shape, generator=generator).to(info.device)
            condition = drop_conditions(condition, training.condition_dropout, generator)
            with autocast:
                prediction = train_model(schedule.add_noise(x0, noise, t), t, condition)
            loss = F.mse_loss(prediction.float(), schedule.training_target(x0, noise, t))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            ema.update_parameters(model)
            step += 1
            running += loss.item()
            bar.update()
            if step % training.log_every == 0:
                history.append({"step": step, "mse": running / training.log_every})
                running = 0.0
                bar.set_postfix(mse=f"{history[-1]['mse']:.4f}")
            if step % training.checkpoint_every == 0 or step == training.steps:
                _checkpoint(run_dir, model, ema, optimiser, generator, step, history, info)
            if step == training.steps:
                break
    bar.close()
    if info.is_main:
        write_history(run_dir, history, "diffusion training (noise MSE)")
        save_component(ema.module, run_dir / "unet")
        _io.write_json(run_dir / "scheduler.json", {"class": "NoiseSchedule", "synthbrain_version": __version__, **schedule.to_dict()})
    return run_dir / "unet"


def _checkpoint(run_dir, model, ema, optimiser, generator, step, history, info) -> None:
    states = gather_generator_states(generator, info)
    if info.is_main:
        save_checkpoint(
            run_dir / CHECKPOINT,
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimiser.state_dict(),
                "generator": states,
                "step": step,
                "history": history,
            },
        )
        write_history(run_dir, history, "diffusion training (noise MSE)")
