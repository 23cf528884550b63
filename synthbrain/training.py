"""The training loop both stages share: torch.distributed set-up, exact resume, checkpoints, loss curves.

A stage (``autoencoder/train.py``, ``diffusion/train.py``) builds its networks, optimisers and random
generators, writes one function that performs a single optimisation step on a batch, and hands
both to :func:`run`. :func:`run` owns everything else: the data order (a function of the seed and
the epoch, so a resumed run sees exactly the batches an uninterrupted one would), loading and
writing the checkpoint (atomically; every registered state dict and every rank's random-generator
state), the loss history with its PNG, and the progress bar. A run killed at any point resumes from
its last checkpoint to bit-identical weights.

Multi-GPU and multi-machine training use torchrun (``torchrun --nproc_per_node=N -m synthbrain.cli
train ...``): :func:`setup_distributed` reads the environment torchrun sets and joins the process
group (NCCL on GPUs, gloo on CPU). Without torchrun everything runs in one process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from synthbrain import _io
from synthbrain.device import resolve_device

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # state dicts by name, per-rank generator states by name


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and shows progress)."""
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one (``WORLD_SIZE`` > 1); pick this process's
    device (``device``, else ``cuda:LOCAL_RANK`` when CUDA is available, else CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        # Leave the group cleanly at exit: without it a process could abort while gloo's threads were
        # still running ("terminate called without an active exception"), seen once in the torchrun test.
        atexit.register(_leave_group)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    return DistInfo(rank, world_size, resolve_device(device))


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# Numerical precision of a training step, named as Lightning's ``Trainer(precision=...)``:
# "32-true" float32 throughout; "bf16-mixed" torch.autocast to bfloat16 (convolutions and matrix
# products in bfloat16, losses, normalisations and weights in float32); "auto" bf16-mixed on CUDA
# and 32-true elsewhere.
PRECISIONS = ("auto", "32-true", "bf16-mixed")


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; else ``ValueError`` naming the value and the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; allowed: {list(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The context a training step's forward pass runs in, for ``precision`` (:data:`PRECISIONS`):
    bfloat16 autocast (``torch.autocast``) for "bf16-mixed", and for "auto" on CUDA; nothing (float32)
    otherwise. On CPUs with bfloat16 instructions (AVX512-BF16, AMX) "bf16-mixed" is faster
    (``benchmarks/training_step.py``); on others it can be slower, hence not the CPU default."""
    mixed = check_precision(precision) == "bf16-mixed" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if mixed else contextlib.nullcontext()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (tensors and plain Python values only): a kill during
    the write leaves the previous checkpoint in place."""
    with _io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code in it is ever run). A damaged or foreign
    file is a ``ValueError`` naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, pickled code refused by weights_only
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({detail}); delete it to start the run again") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this synthbrain version (format {CHECKPOINT_FORMAT}); delete it to start again")
    return state


def write_history(run_dir: Path, history: list[dict[str, float]], title: str) -> None:
    """Loss history as JSON and as a PNG figure (log scale, one line per positive loss term)."""
    from matplotlib.figure import Figure  # not pyplot: the caller's plotting backend stays as it is

    _io.write_json(run_dir / "history.json", history)
    if not history:
        return
    keys = sorted({k for h in history for k in h if k != "step"})
    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.subplots()
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None and h[key] > 0]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(run_dir / "losses.png", fig)


def epoch_order(sampler: DistributedSampler, step: int, batch_size: int) -> list[int]:
    """The sample indices still to visit in the epoch that ``step`` falls in (exact resume)."""
    per_epoch = len(sampler) // batch_size
    epoch, done = divmod(step, per_epoch)
    sampler.set_epoch(epoch)
    return list(sampler)[done * batch_size : per_epoch * batch_size]


def _gather_states(generator: torch.Generator, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's random-generator state (collective: all ranks call it)."""
    if info.world_size == 1:
        return [generator.get_state()]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, generator.get_state().cpu())
    return states


@dataclass
class Loop:
    """What :func:`run` needs from a stage.

    ``state``: the objects whose ``state_dict`` the checkpoint keeps (networks, unwrapped or in
    DDP, optimisers, EMA models), by name. ``generators``: this rank's random generators by name;
    every rank's state is kept. ``dataset``: map-style, batched by a seeded ``DistributedSampler``
    (shuffled, ``drop_last``). ``step``: ``(batch, step_index) -> {loss name: float}``, one
    optimisation step (the stage owns its forward, backward and optimiser steps).
    """

    run_dir: Path
    info: DistInfo
    state: Mapping[str, Any]
    generators: Mapping[str, torch.Generator]
    dataset: torch.utils.data.Dataset
    step: Callable[[Any, int], dict[str, float]]
    steps: int
    batch_size: int
    seed: int
    checkpoint_every: int
    log_every: int
    title: str
    num_workers: int = 0
    progress: bool = True


def run(loop: Loop) -> list[dict[str, float]]:
    """Train from the run folder's checkpoint (or from the start) to ``loop.steps``; return the loss
    history (one entry per ``log_every`` steps: each term averaged over those steps)."""
    info, run_dir = loop.info, loop.run_dir
    if info.is_main and run_dir.is_dir():
        _io.remove_stale_temporaries(run_dir)  # a checkpoint half written by a killed run
    step, history = 0, []
    if (run_dir / CHECKPOINT).is_file():
        saved = load_checkpoint(run_dir / CHECKPOINT, info.device)
        missing = sorted(set(loop.state) - set(saved["state"])) + sorted(set(loop.generators) - set(saved["generators"]))
        if missing:
            raise ValueError(f"{run_dir / CHECKPOINT}: holds no state for {missing}; delete it to start the run again")
        for name, obj in loop.state.items():
            unwrap(obj).load_state_dict(saved["state"][name])
        for name, generator in loop.generators.items():
            generator.set_state(saved["generators"][name][info.rank].cpu())
        step, history = saved["step"], saved["history"]
    sampler = DistributedSampler(loop.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=loop.seed, drop_last=True)
    bar = tqdm(total=loop.steps, initial=step, desc=loop.title, unit="step", disable=not (loop.progress and info.is_main))
    running: dict[str, float] = {}
    while step < loop.steps:
        order = epoch_order(sampler, step, loop.batch_size)
        batches = DataLoader(Subset(loop.dataset, order), batch_size=loop.batch_size, drop_last=True, num_workers=loop.num_workers)
        for batch in batches:
            parts = loop.step(batch, step)
            step += 1
            for key, value in parts.items():
                running[key] = running.get(key, 0.0) + value
            bar.update()
            if step % loop.log_every == 0:
                history.append({"step": step, **{k: v / loop.log_every for k, v in running.items()}})
                running = {}
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(history[-1].items())[1:4]})
            if step % loop.checkpoint_every == 0 or step == loop.steps:
                _checkpoint(loop, step, history)
            if step == loop.steps:
                break
    bar.close()
    if info.is_main:
        write_history(run_dir, history, loop.title)
    return history


def _checkpoint(loop: Loop, step: int, history: list[dict[str, float]]) -> None:
    generators = {name: [s.cpu() for s in _gather_states(g, loop.info)] for name, g in loop.generators.items()}
    if loop.info.is_main:
        state = {name: unwrap(obj).state_dict() for name, obj in loop.state.items()}
        save_checkpoint(
            loop.run_dir / CHECKPOINT,
            {"format": CHECKPOINT_FORMAT, "state": state, "generators": generators, "step": step, "history": history},
        )
        write_history(loop.run_dir, history, loop.title)
