"""``synthbrain train autoencoder``: train the joint image + label autoencoder on a prepared cohort.

Resumable: the checkpoint holds the model, optimiser, step, random-generator state and loss history,
and the data order is a function of (seed, epoch), so a killed run continues exactly where it
stopped. Runs under torchrun for several processes (DDP; gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from synthbrain.autoencoder.model import AutoencoderConfig, AutoencoderLossWeights, BrainAutoencoder, autoencoder_loss
from synthbrain.components import save_component
from synthbrain.preprocessing.prepared import PreparedCohort
from synthbrain.training import (
    CHECKPOINT,
    claim_run,
    epoch_order,
    gather_generator_states,
    load_checkpoint,
    save_checkpoint,
    setup_distributed,
    unwrap,
    write_history,
)


@dataclass(frozen=True)
class AutoencoderTraining:
    steps: int = 500
    batch_size: int = 2
    learning_rate: float = 2e-4
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    weights: AutoencoderLossWeights = field(default_factory=AutoencoderLossWeights)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; allowed: >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate}; allowed: > 0")


def train_autoencoder(
    prepared: str | Path,
    run_dir: str | Path,
    model_config: AutoencoderConfig,
    training: AutoencoderTraining = AutoencoderTraining(),
    *,
    downsample: int = 1,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume training) and write ``run_dir/autoencoder/{config.json, model.safetensors}``.

    ``downsample=k`` trains on the prepared cohort averaged over k x k x k blocks, with class
    fractions as label targets (see :class:`PreparedCohort`).
    """
    info = setup_distributed(device)
    cohort = PreparedCohort.load(prepared, downsample)
    scheme_classes = cohort.label_scheme.num_classes if cohort.label_scheme else 0
    if model_config.num_classes not in (0, scheme_classes):
        raise ValueError(f"model_config.num_classes={model_config.num_classes}; the prepared cohort's labels have {scheme_classes} classes")
    if any(n % model_config.downsample for n in cohort.output_grid.shape):
        raise ValueError(
            f"the training grid {cohort.output_grid.shape} is not divisible by the autoencoder's downsampling {model_config.downsample}"
        )
    if len(cohort) < training.batch_size * info.world_size:
        raise ValueError(f"batch_size={training.batch_size} x {info.world_size} processes exceeds the {len(cohort)} subjects")
    run_dir = Path(run_dir)
    claim_run(
        run_dir,
        {
            "stage": "autoencoder",
            "model": model_config.to_dict(),
            "training": {**asdict(training), "weights": asdict(training.weights)},
            "prepared": str(Path(prepared).resolve()),
            "downsample": downsample,
            "grid": cohort.output_grid.to_dict(),
        },
        info.is_main,
    )

    torch.manual_seed(training.seed)  # identical initial weights on every rank
    model = BrainAutoencoder(model_config).to(info.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    noise = torch.Generator(device=info.device).manual_seed(training.seed * 1000 + info.rank)
    step, history = 0, []
    if (run_dir / CHECKPOINT).is_file():
        state = load_checkpoint(run_dir / CHECKPOINT, info.device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        noise.set_state(state["noise"][info.rank].cpu())
        step, history = state["step"], state["history"]
    if info.world_size > 1:
        model = DistributedDataParallel(model)

    sampler = DistributedSampler(cohort, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=training.seed, drop_last=True)
    bar = tqdm(total=training.steps, initial=step, desc="train autoencoder", unit="step", disable=not (progress and info.is_main))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if info.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    running: dict[str, float] = {}
    while step < training.steps:
        order = epoch_order(sampler, step, training.batch_size)
        loader = DataLoader(
            torch.utils.data.Subset(cohort, order), batch_size=training.batch_size, drop_last=True, num_workers=training.num_workers
        )
        for batch in loader:
            image = batch["image"].to(info.device)
            labels = batch["labels"].to(info.device) if model_config.num_classes else None
            with autocast:
                out = model(image, labels, generator=noise)
            parts = autoencoder_loss(out, image, labels, training.weights)
            optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimiser.step()
            step += 1
            for key, value in parts.items():
                running[key] = running.get(key, 0.0) + value.item()
            bar.update()
            if step % training.log_every == 0:
                history.append({"step": step, **{k: v / training.log_every for k, v in running.items()}})
                running = {}
                bar.set_postfix(loss=f"{history[-1]['total']:.4f}")
            if step % training.checkpoint_every == 0 or step == training.steps:
                _checkpoint(run_dir, model, optimiser, noise, step, history, info)
            if step == training.steps:
                break
    bar.close()
    if info.is_main:
        write_history(run_dir, history, "autoencoder training")
        save_component(unwrap(model), run_dir / "autoencoder")
    return run_dir / "autoencoder"


def _checkpoint(run_dir, model, optimiser, noise, step, history, info) -> None:
    states = gather_generator_states(noise, info)
    if info.is_main:
        save_checkpoint(
            run_dir / CHECKPOINT,
            {
                "model": unwrap(model).state_dict(),
                "optimizer": optimiser.state_dict(),
                "noise": [s.cpu() for s in states],
                "step": step,
                "history": history,
            },
        )
        write_history(run_dir, history, "autoencoder training")
