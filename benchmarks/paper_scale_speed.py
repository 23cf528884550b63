"""Seconds per volume at the paper's scale (Pinaya et al. 2022: 160 x 224 x 160 at 1 mm, a 553 M-parameter
UNet, a 13.8 M-parameter autoencoder), random weights, for the reference route and for ours, measured in
one run, with the ratio to the reference route and the peak memory.

    python benchmarks/paper_scale_speed.py --device cuda                      # writes docs/benchmarks/paper-scale-speed.{md,json}
    python benchmarks/paper_scale_speed.py --device cuda --batch-size 8 --fast-steps 20,10,8
    python benchmarks/paper_scale_speed.py --tiny --device cpu --out /tmp/paper-scale-speed   # a seconds-long check

Rows, all from the same noise (volume i from volume_seed(seed, i), as ``BrainGenerator.generate`` draws it) and the
same condition (female, 70 years, ventricular volume 0.3, brain volume 0.5 in the model's [0, 1] units):

1. reference: MONAI core ``AutoencoderKL`` + ``DiffusionModelUNet`` sampled by MONAI's
   ``LatentDiffusionInferer`` with its ``DDIMScheduler``, float32, DDIM-50, batch 1. The condition is fed as
   the bundle's sampler feeds it: as the cross-attention context and as 4 extra input channels (a
   small wrapper concatenates them, since the inferer's ``mode`` offers one or the other). MONAI >= 1.6
   spaces DDIM timesteps differently from the released samples, so the scheduler is given the released
   timesteps 980, 960, ..., 0.
2. ours: ``BrainGenerator.generate`` with the same weights, float32, DDIM-50, batch 1: the same work,
   and a parity check (``max abs diff vs reference``: the largest voxel difference of the first volume,
   both clamped to [0, 1]).
3. ours with bfloat16 weights (``BrainGenerator.to(dtype=torch.bfloat16)``, as
   ``from_pretrained(..., torch_dtype=torch.bfloat16)`` loads them; CUDA by default), DDIM-50, batch 1: the
   precision alone.
4. ours with every speed feature: bf16 weights, channels-last-3d weights, ``torch.compile`` of the UNet
   and the decoder (``--no-compile`` to leave it out), ``cudnn.benchmark`` on CUDA, ``--batch-size``
   volumes per call; DDIM-50, then ``--fast-sampler`` (DPM-Solver++ 2M) at each of ``--fast-steps``.
   Whether DPM-Solver++ at 10-20 steps matches DDIM-50 is measured by ``benchmarks/sampler_quality.py``.

Timing: ``--warmup`` calls (compilation and cuDNN autotuning happen there; their time is reported),
then the median of ``--repeats`` calls, with ``torch.cuda.synchronize`` around each on CUDA; the images
are copied to the host in every route. Peak memory: ``torch.cuda.max_memory_allocated`` over the timed
calls on CUDA (only the route's own networks are on the GPU), the process's peak resident set size
(VmHWM, reset before each row) on CPU. TFLOP per volume are counted with torch's FLOP counter on the
meta device (UNet step x steps + decoder). Ceiling: the TFLOP/s of a square matrix product (random data, 8192 on
CUDA, 256 on CPU) in bf16, float32 and, on CUDA, TF32, measured at the start of the same run; each row's TFLOP/s is
also given as a fraction of the ceiling of its precision (bf16 rows: bf16; float32 rows: TF32 on CUDA when cuDNN may
use it, the convolutions being most of the work, plain float32 otherwise). The FLOP floor uses ``--peak-tflops``, by
default the measured bf16 ceiling.

The report (OUT.md, OUT.json) is written again after every row, marked partial until the last one, so a run
stopped by a time limit keeps the rows it finished.

``--tiny`` shrinks channels and grid (the reference structure at the sizes of tests/test_monai_bundle.py)
so the script runs on a CPU in seconds; its numbers say nothing about the paper-size model, and it must
be given ``--out`` so that it never replaces real results.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import monai
import pandas as pd
import torch
from _report import markdown_table
from monai.inferers import LatentDiffusionInferer
from monai.networks.schedulers import DDIMScheduler
from torch.utils.flop_counter import FlopCounterMode

from synthbrain import _io
from synthbrain.autoencoder.model import BrainAutoencoder
from synthbrain.device import resolve_device
from synthbrain.diffusion.model import ConditionalUNet
from synthbrain.generator import BrainGenerator, draws
from synthbrain.grid import Grid
from synthbrain.monai_bundle import REFERENCE_AUTOENCODER, REFERENCE_DEFAULTS, REFERENCE_SCHEDULE, REFERENCE_UNET, reference_schema
from synthbrain.preprocessing.template import make_grid
from synthbrain.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "paper-scale-speed"
QUERY = {"sex": "F", "age": 70.0, "ventricular_volume": 0.3, "brain_volume": 0.5}
# The same condition as the bundle's sampler takes it, written by hand: sex F = 0, age (70 - 44) / 38, volumes unchanged.
REFERENCE_CONDITION = (0.0, (70.0 - 44.0) / 38.0, 0.3, 0.5)
REFERENCE_STEPS = 50
# --tiny: the reference structure at small channel counts (as in tests/test_monai_bundle.py), latent 4 x 8 x 4.
TINY_AUTOENCODER = dataclasses.replace(REFERENCE_AUTOENCODER, channels=(8, 16, 16, 16), norm_num_groups=8)
TINY_UNET = dataclasses.replace(REFERENCE_UNET, channels=(16, 32, 48), num_head_channels=(0, 32, 48), norm_num_groups=8)
TINY_GRID = Grid((32, 64, 32), 1.0, (-15.5, -48.5, -10.5))
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = ("bf16", "fp32")


class ConcatCondition(torch.nn.Module):
    """The bundle's way of feeding the condition: the cross-attention context (B, 1, C), also broadcast to C
    input channels concatenated to the latent. MONAI's inferer passes the context only (``mode="crossattn"``)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        channels = context[:, 0, :, None, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)
        return self.unet(torch.cat([x, channels], dim=1), timesteps=timesteps, context=context)


def reinitialise_zeroed(model: torch.nn.Module) -> torch.nn.Module:
    """Default initialisation for the layers MONAI zero-initialises (output convolutions), so that random
    weights give outputs that depend on the inputs, as trained ones do."""
    with torch.no_grad():
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and hasattr(module, "reset_parameters") and not any(p.any() for p in own):
                module.reset_parameters()
    return model


def build_generator(tiny: bool, seed: int) -> BrainGenerator:
    """The reference architecture (``synthbrain.monai_bundle``) with seeded random weights, as a BrainGenerator."""
    autoencoder_config, unet_config = (TINY_AUTOENCODER, TINY_UNET) if tiny else (REFERENCE_AUTOENCODER, REFERENCE_UNET)
    torch.manual_seed(seed)
    autoencoder = reinitialise_zeroed(BrainAutoencoder(autoencoder_config))
    unet = reinitialise_zeroed(ConditionalUNet(unet_config))
    grid = TINY_GRID if tiny else make_grid(1.0)
    return BrainGenerator(
        autoencoder, unet, REFERENCE_SCHEDULE, reference_schema(), grid, latent_scale=1.0, defaults=dict(REFERENCE_DEFAULTS)
    )


def count_tflop(generator: BrainGenerator) -> tuple[float, float]:
    """(UNet step, decoder) TFLOP for one volume, counted on the meta device."""
    with torch.device("meta"):
        unet = ConditionalUNet(generator.unet.config)
        autoencoder = BrainAutoencoder(generator.autoencoder.config)
        latent = torch.empty(1, *generator.latent_shape)
        with FlopCounterMode(display=False) as unet_count:
            unet(latent, torch.zeros(1, dtype=torch.long), torch.empty(1, generator.unet.config.condition_dim))
        with FlopCounterMode(display=False) as decoder_count:
            autoencoder.decode(latent)
    return unet_count.get_total_flops() / 1e12, decoder_count.get_total_flops() / 1e12


def matmul_ceiling(device: torch.device, dtype: torch.dtype, *, n: int, inner: int, repeats: int, tf32: bool = False) -> float:
    """TFLOP/s of an ``n`` x ``n`` x ``n`` matrix product of random ``dtype`` matrices on ``device``: the median over
    ``repeats`` timings of ``inner`` products each, after 2 warm-up products. ``tf32``: float32 products may use TF32
    (CUDA); the previous setting is restored."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device, dtype)
    b = torch.randn(n, n, generator=generator).to(device, dtype)
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    return 2 * n**3 * inner / statistics.median(times) / 1e12


def matmul_ceilings(device: torch.device) -> dict[str, float]:
    """The measured matrix-product ceilings (TFLOP/s) by precision: bf16, fp32 and, on CUDA, tf32."""
    size = {"n": 8192, "inner": 10, "repeats": 5} if device.type == "cuda" else {"n": 256, "inner": 2, "repeats": 3}
    ceilings = {
        "bf16": matmul_ceiling(device, torch.bfloat16, **size),
        "fp32": matmul_ceiling(device, torch.float32, **size),
    }
    if device.type == "cuda":
        ceilings["tf32"] = matmul_ceiling(device, torch.float32, tf32=True, **size)
        torch.cuda.empty_cache()
    return ceilings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux); elsewhere the peak covers the run so far


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024 / 1e9
    except (OSError, TypeError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def measure(fn, *, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Warm-up calls, then ``repeats`` timed calls; the median seconds, the warm-up seconds, the peak memory
    over the timed calls and the last call's result."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "warmup_s": warmup_s, "peak_gb": peak_memory_gb(device), "result": result}


def time_reference_route(generator: BrainGenerator, *, device: torch.device, seed: int, warmup: int, repeats: int) -> dict[str, Any]:
    """MONAI's LatentDiffusionInferer with its DDIMScheduler at the released timesteps, float32, one volume, on MONAI core
    copies of the generator's networks; :func:`measure`'s result, the image on the host."""
    autoencoder = copy.deepcopy(generator.autoencoder.net).to(device).eval()  # MONAI core AutoencoderKL
    unet = copy.deepcopy(generator.unet.net).to(device).eval()  # MONAI core DiffusionModelUNet
    if not (type(autoencoder).__module__.startswith("monai.") and type(unet).__module__.startswith("monai.")):
        raise TypeError(f"the reference route needs MONAI core networks, got {type(autoencoder)} and {type(unet)}")
    scheduler = DDIMScheduler(
        num_train_timesteps=REFERENCE_SCHEDULE.num_train_timesteps,
        schedule="scaled_linear_beta",
        beta_start=REFERENCE_SCHEDULE.beta_start,
        beta_end=REFERENCE_SCHEDULE.beta_end,
        clip_sample=False,
    )
    scheduler.set_timesteps(REFERENCE_STEPS)
    stride = REFERENCE_SCHEDULE.num_train_timesteps // REFERENCE_STEPS
    scheduler.timesteps = torch.arange(REFERENCE_STEPS - 1, -1, -1) * stride  # 980, 960, ..., 0: the released samples' timesteps
    inferer = LatentDiffusionInferer(scheduler, scale_factor=1.0)
    wrapped = ConcatCondition(unet)
    noise = draws.initial_noise(draws.volume_seeds(seed, 1), generator.latent_shape).to(device)  # what generate(seed=seed) draws
    context = torch.tensor([REFERENCE_CONDITION], device=device)[:, None, :]

    def call() -> torch.Tensor:
        with torch.no_grad():
            image = inferer.sample(
                input_noise=noise,
                autoencoder_model=autoencoder,
                diffusion_model=wrapped,
                scheduler=scheduler,
                conditioning=context,
                mode="crossattn",
                verbose=False,
            )
        return image.float().cpu()

    return measure(call, device=device, warmup=warmup, repeats=repeats)


def parse_steps(value: str) -> list[int]:
    try:
        steps = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected comma-separated integers, e.g. 20,10") from None
    if not steps or any(not 1 <= s <= REFERENCE_SCHEDULE.num_train_timesteps for s in steps) or len(set(steps)) != len(steps):
        raise argparse.ArgumentTypeError(
            f"{value!r}: allowed: distinct integers in [1, {REFERENCE_SCHEDULE.num_train_timesteps}], comma-separated"
        )
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small channels and grid: a seconds-long check on a CPU (needs --out)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=4, help="volumes per generate call in the rows with every speed feature")
    parser.add_argument("--fast-sampler", default="dpm++2m", help=f"sampler of the few-step rows; one of {list(SAMPLERS)}")
    parser.add_argument("--fast-steps", type=parse_steps, default=[20, 10], help="steps of the few-step rows, comma-separated")
    parser.add_argument("--precision", default=None, help=f"weights of our rows 3 and 4, one of {list(PRECISIONS)} (default bf16 on CUDA)")
    parser.add_argument("--no-channels-last", action="store_true", help="leave the weights in the default memory format")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--compile-mode", default="default", help=f"torch.compile mode, one of {list(COMPILE_MODES)}")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each row (compilation happens there)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="weights and noise seed")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the accelerator's peak, for the FLOP floor (default: the measured bf16 ceiling)"
    )
    parser.add_argument("--out", type=Path, default=None, help=f"write OUT.md and OUT.json (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out: docs/benchmarks/ holds the results of real runs only")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            parser.error(f"{flag} {value}: allowed: an integer >= {low}")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: allowed: an integer >= 0")
    if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
        parser.error(f"--peak-tflops {args.peak_tflops}: allowed: a positive number")
    if args.fast_sampler not in SAMPLERS:
        parser.error(f"--fast-sampler {args.fast_sampler!r}: allowed: {list(SAMPLERS)}")
    if args.compile_mode not in COMPILE_MODES:
        parser.error(f"--compile-mode {args.compile_mode!r}: allowed: {list(COMPILE_MODES)}")
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as err:
        parser.error(str(err))
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device!r}: allowed: cpu, cuda or cuda:N")
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    if args.precision not in PRECISIONS:
        parser.error(f"--precision {args.precision!r}: allowed: {list(PRECISIONS)}")
    args.device = device
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = args.device
    out = args.out if args.out is not None else DEFAULT_OUT
    ceilings = matmul_ceilings(device)
    print("matrix-product ceilings (TFLOP/s): " + ", ".join(f"{k} {v:.4g}" for k, v in ceilings.items()), flush=True)
    peak_tflops = args.peak_tflops if args.peak_tflops is not None else ceilings["bf16"]
    # fp32 rows: cuDNN convolutions (most of the work) run in TF32 on CUDA when allowed, so TF32 is their ceiling there.
    fp32_ceiling = "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"
    generator = build_generator(args.tiny, args.seed)
    unet_tflop, decoder_tflop = count_tflop(generator)

    rows: list[dict[str, Any]] = []
    planned = 3 + (args.precision != "fp32") + len(args.fast_steps)

    def record(route: str, sampler: str, steps: int, batch: int, precision: str, channels_last: bool, compiled: bool, m: dict) -> None:
        per_volume = m["seconds"] / batch
        tflop = steps * unet_tflop + decoder_tflop
        ceiling = ceilings["bf16" if precision == "bf16" else fp32_ceiling]
        rows.append(
            {
                "route": route,
                "sampler": sampler,
                "steps": steps,
                "batch": batch,
                "precision": precision,
                "channels-last": channels_last,
                "compiled": compiled,
                "seconds per volume": per_volume,
                "speed-up vs reference": rows[0]["seconds per volume"] / per_volume if rows else 1.0,
                "peak memory (GB)": m["peak_gb"],
                "UNet evaluations per volume": steps,
                "TFLOP per volume": tflop,
                "TFLOP/s": tflop / per_volume,
                "of matmul ceiling": tflop / per_volume / ceiling,
                "max abs diff vs reference": float((m["result"][0].clamp(0, 1) - reference_image.clamp(0, 1)).abs().max()),
                "warm-up (s)": m["warmup_s"],
            }
        )
        print(f"{route}: {per_volume:.4g} s per volume", flush=True)
        write_report(args, out, rows, planned, generator, ceilings, peak_tflops, fp32_ceiling, unet_tflop, decoder_tflop)

    # 1. The reference route, on copies of the same weights (freed when it returns: only the route being timed is on the device).
    m = time_reference_route(generator, device=device, seed=args.seed, warmup=args.warmup, repeats=args.repeats)
    reference_image = m["result"][0]
    record("reference: MONAI LatentDiffusionInferer + DDIMScheduler", "ddim", REFERENCE_STEPS, 1, "fp32", False, False, m)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2-4. Ours: BrainGenerator.generate with the same weights.
    generator.to(device)

    def ours(sampler: str, steps: int, batch: int):
        def call() -> torch.Tensor:
            return generator.generate(QUERY, n=batch, seed=args.seed, steps=steps, sampler=sampler, batch_size=batch).images

        return call

    m = measure(ours("ddim", REFERENCE_STEPS, 1), device=device, warmup=args.warmup, repeats=args.repeats)
    record("ours: BrainGenerator.generate", "ddim", REFERENCE_STEPS, 1, "fp32", False, False, m)
    if args.precision != "fp32":
        generator.to(dtype=torch.bfloat16)  # the weights stored in bfloat16 from here on (rows 3 and 4)
        m = measure(ours("ddim", REFERENCE_STEPS, 1), device=device, warmup=args.warmup, repeats=args.repeats)
        record(f"ours: {args.precision} weights", "ddim", REFERENCE_STEPS, 1, args.precision, False, False, m)

    channels_last, compiled = not args.no_channels_last, not args.no_compile
    features = [f"{args.precision} weights"] if args.precision != "fp32" else []
    if channels_last:
        generator.unet.to(memory_format=torch.channels_last_3d)
        generator.autoencoder.to(memory_format=torch.channels_last_3d)
        features.append("channels-last")
    if compiled:
        generator.unet.net.compile(mode=args.compile_mode)
        generator.autoencoder.net.decoder.compile(mode=args.compile_mode)
        features.append("compile")
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        features.append("cudnn.benchmark")
    features.append(f"batch {args.batch_size}")
    try:
        for sampler, steps in [("ddim", REFERENCE_STEPS)] + [(args.fast_sampler, s) for s in args.fast_steps]:
            m = measure(ours(sampler, steps, args.batch_size), device=device, warmup=args.warmup, repeats=args.repeats)
            record("ours: " + " + ".join(features), sampler, steps, args.batch_size, args.precision, channels_last, compiled, m)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    summary = write_report(args, out, rows, planned, generator, ceilings, peak_tflops, fp32_ceiling, unet_tflop, decoder_tflop)
    print(out.with_suffix(".md").read_text())
    return summary


def write_report(
    args: argparse.Namespace,
    out: Path,
    rows: list[dict[str, Any]],
    planned: int,
    generator: BrainGenerator,
    ceilings: dict[str, float],
    peak_tflops: float,
    fp32_ceiling: str,
    unet_tflop: float,
    decoder_tflop: float,
) -> dict[str, Any]:
    """Write OUT.json and OUT.md from the rows measured so far (marked partial while fewer than ``planned``); the summary."""
    device = args.device
    complete = len(rows) >= planned
    table = pd.DataFrame(rows)
    memory = (
        "peak GPU memory allocated (torch.cuda.max_memory_allocated)" if device.type == "cuda" else "peak resident set size of the process"
    )
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    command = "python benchmarks/paper_scale_speed.py " + " ".join(
        (["--tiny"] if args.tiny else [])
        + [f"--device {args.device}", f"--batch-size {args.batch_size}", f"--fast-sampler {args.fast_sampler}"]
        + [f"--fast-steps {','.join(map(str, args.fast_steps))}", f"--precision {args.precision}"]
        + (["--no-channels-last"] if args.no_channels_last else [])
        + (["--no-compile"] if args.no_compile else [f"--compile-mode {args.compile_mode}"])
        + [f"--warmup {args.warmup}", f"--repeats {args.repeats}", f"--seed {args.seed}"]
        + ([f"--peak-tflops {args.peak_tflops:g}"] if args.peak_tflops is not None else [])
        + ([f"--out {args.out}"] if args.out is not None else [])
    )
    floor = {f"{r['sampler']}-{r['steps']}": r["TFLOP per volume"] / peak_tflops for r in rows}
    floor_source = "given" if args.peak_tflops is not None else "the measured bf16 matrix-product ceiling"
    summary = {
        "command": command,
        "complete": complete,
        "rows_planned": planned,
        "model": "tiny reference structure (random weights)" if args.tiny else "paper-size reference architecture (random weights)",
        "machine": machine,
        "versions": {"torch": torch.__version__, "monai": monai.__version__},
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "image_grid": generator.image_grid.to_dict(),
        "latent_shape": list(generator.latent_shape),
        "parameters_millions": {
            "unet": sum(p.numel() for p in generator.unet.parameters()) / 1e6,
            "autoencoder": sum(p.numel() for p in generator.autoencoder.parameters()) / 1e6,
        },
        "tflop": {"unet_step": unet_tflop, "decoder": decoder_tflop},
        "matmul_ceiling_tflops": ceilings,
        "fp32_rows_ceiling": fp32_ceiling,
        "peak_tflops_for_floor": peak_tflops,
        "peak_tflops_source": floor_source,
        "flop_floor_seconds_per_volume": floor,
        "memory": memory,
        "rows": table.astype(object).where(table.notna(), None).to_dict("records"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    shown = table.copy()  # small and large values in significant digits
    for column in ("TFLOP per volume", "TFLOP/s", "of matmul ceiling", "max abs diff vs reference"):
        shown[column] = [f"{v:.3g}" for v in table[column]]
    tf32 = (
        f"TF32 allowed for cuDNN convolutions {summary['tf32']['cudnn']}, for matmuls {summary['tf32']['matmul']} (the defaults "
        "unless changed). "
        if device.type == "cuda"
        else ""
    )
    if len(rows) > 1:
        fastest = min(rows[1:], key=lambda r: r["seconds per volume"])
        summary["fastest"] = {k: fastest[k] for k in ("route", "sampler", "steps", "batch", "seconds per volume", "speed-up vs reference")}
        fastest_line = (
            f"Fastest of ours: {fastest['route']}, {fastest['sampler']}-{fastest['steps']}: {fastest['seconds per volume']:.3g} s per "
            f"volume, {fastest['speed-up vs reference']:.3g} x the reference route. "
        )
    else:
        summary["fastest"] = None
        fastest_line = "No row of ours was measured. "
    _io.write_json(out.with_suffix(".json"), summary)
    notes = []
    if not complete:
        notes.append(f"**Partial:** {len(rows)} of {planned} rows; the run stopped (or was stopped) before the others.")
    if args.tiny:
        notes.append("**Tiny run:** small channels and grid; these numbers say nothing about the paper-size model.")
    elif device.type == "cpu":
        notes.append("**CPU run:** the target (at most 0.3 s per volume on an H100) is for a GPU; these are CPU times.")
    ceiling_text = ", ".join(f"{k} {v:.4g}" for k, v in ceilings.items())
    report = "\n\n".join(
        [
            f"# Speed at paper scale: {summary['model']} on {machine}",
            *notes,
            f"Command: `{command}`. torch {torch.__version__}, MONAI {monai.__version__}. {tf32}Image grid "
            f"{generator.image_grid.shape} at {generator.image_grid.spacing} mm, latent {tuple(generator.latent_shape)}; UNet "
            f"{summary['parameters_millions']['unet']:.1f} M parameters, {unet_tflop:.4g} TFLOP per step; decoder "
            f"{decoder_tflop:.4g} TFLOP per volume. Median of {args.repeats} calls after {args.warmup} warm-up calls "
            f"(warm-up time, with compilation, in its column); memory: {memory}.",
            markdown_table(shown),
            fastest_line + "Target (on an H100): at most 0.3 s per volume "
            "at DDIM-50 quality and at least 10 x the reference route; whether a few-step row has DDIM-50 quality is measured "
            "by `benchmarks/sampler_quality.py`.",
            f"Matrix-product ceilings measured in this run (TFLOP/s, square products of random matrices): {ceiling_text}. "
            f"`of matmul ceiling`: a row's TFLOP/s over the ceiling of its precision (bf16 rows: bf16; float32 rows: "
            f"{fp32_ceiling}).",
            "Reference: MONAI's `LatentDiffusionInferer` with its `DDIMScheduler` at the released timesteps 980, ..., 0, the "
            "condition as cross-attention context and concatenated channels, float32, one volume per call. `max abs diff vs "
            "reference`: the first volume against the reference's, both clamped to [0, 1]; a parity check for the DDIM rows "
            "(float32: rounding only; bf16: the precision's error), informative only for other samplers (another integration "
            f"of the same ODE, random weights). FLOP floor at {peak_tflops:.4g} TFLOP/s ({floor_source}): "
            + ", ".join(f"{k} {v:.3g} s" for k, v in floor.items())
            + " per volume.",
        ]
    )
    _io.write_text(out.with_suffix(".md"), report + "\n")
    return summary


if __name__ == "__main__":
    main()
