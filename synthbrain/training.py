"""What both training stages share: torch.distributed set-up, checkpoints, loss curves.

Multi-GPU and multi-machine training use torchrun (``torchrun --nproc_per_node=N -m synthbrain.cli
train ...``): :func:`setup_distributed` reads the environment torchrun sets and joins the process
group (NCCL on GPUs, gloo on CPU). Without torchrun everything runs in one process.
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from synthbrain import _io

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        # Leave the group cleanly at exit: without it a process could abort while gloo's threads were
        # still running ("terminate called without an active exception"), seen once in the torchrun test.
        atexit.register(_leave_group)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device is None:
        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        else:
            device = "cpu"
    return DistInfo(rank, world_size, torch.device(device))


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_generator_states(generator: torch.Generator, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's random-generator state (collective: all ranks must call it), so a resumed run
    continues each rank's random stream exactly."""
    if info.world_size == 1:
        return [generator.get_state()]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, generator.get_state().cpu())
    return states


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (tensors and plain Python values only)."""
    with _io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: no code in it is ever run."""
    return torch.load(path, map_location=device, weights_only=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def write_history(run_dir: Path, history: list[dict[str, float]], title: str) -> None:
    """Loss history as JSON and as a PNG figure (log scale, one line per loss term)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _io.write_json(run_dir / "history.json", history)
    if not history:
        return
    keys = [k for k in history[0] if k != "step"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    steps = [h["step"] for h in history]
    for key in keys:
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(run_dir / "losses.png", fig)
    plt.close(fig)


def read_history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def claim_run(run_dir: Path, config: dict[str, Any], is_main: bool) -> None:
    """A run folder belongs to one configuration: resuming it with another one is refused."""
    path = run_dir / "run.json"
    config = json.loads(json.dumps(config))
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != config:
            changed = sorted(k for k in config if previous.get(k) != config.get(k))
            raise ValueError(
                f"run_dir={str(run_dir)!r} holds a run with another configuration (differing: {changed}); choose another folder"
            )
    elif is_main:
        _io.write_json(path, config)


def epoch_order(sampler: torch.utils.data.Sampler, step: int, batch_size: int) -> list[int]:
    """The sample indices still to visit in the epoch that ``step`` falls in (exact resume)."""
    per_epoch = len(sampler) // batch_size
    epoch, done = divmod(step, per_epoch)
    sampler.set_epoch(epoch)
    return list(sampler)[done * batch_size : per_epoch * batch_size]
