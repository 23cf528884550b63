"""The ``synthbrain`` command line: ``synthbrain prepare ...``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from synthbrain import __version__
from synthbrain.sampling import SamplingSettings, add_sampling_arguments

log = logging.getLogger("synthbrain")


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default where it has one (not for flags and unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        value = action.default.value() if isinstance(action.default, _Default) else action.default
        unset = value is None or value is False or value == argparse.SUPPRESS
        shown = not unset and "(default" not in text and action.option_strings
        if shown:
            default = ",".join(str(int(v) if isinstance(v, bool) else v) for v in value) if isinstance(value, tuple) else value
            text += f" (default: {default})"
        return text


class _Default:
    """A flag's default declared once, where the setting is: a dataclass field (``AutoencoderTraining.steps``)
    or a function's parameter (``train_autoencoder``'s ``downsample``), named ``"module:Name"`` and read
    only when needed (a command's ``--help``, or :func:`_resolve_defaults` before it runs), so that
    building the parser loads neither torch nor MONAI."""

    def __init__(self, owner: str, name: str):
        self.owner, self.name = owner, name

    def value(self) -> Any:
        """The declared default (a field's ``default`` or ``default_factory()``, a parameter's default)."""
        import dataclasses
        import importlib
        import inspect

        module, _, attribute = self.owner.partition(":")
        owner = getattr(importlib.import_module(module), attribute)
        if dataclasses.is_dataclass(owner):
            field = {f.name: f for f in dataclasses.fields(owner)}[self.name]
            return field.default if field.default is not dataclasses.MISSING else field.default_factory()
        return inspect.signature(owner).parameters[self.name].default

    def __repr__(self) -> str:
        return f"<default of {self.owner}.{self.name}>"


def _resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every flag left at a :class:`_Default` given its declared value."""
    for key, value in vars(args).items():
        if isinstance(value, _Default):
            setattr(args, key, value.value())
    return args


AE_MODEL = "synthbrain.autoencoder.model:AutoencoderConfig"
AE_WEIGHTS = "synthbrain.autoencoder.losses:AutoencoderLossWeights"
AE_TRAINING = "synthbrain.autoencoder.train:AutoencoderTraining"
PRECISION_HELP = (  # both training stages; the values are synthbrain.training.PRECISIONS (checked by the dataclasses)
    "auto, 32-true or bf16-mixed (Lightning's names): auto is bf16-mixed on CUDA, 32-true elsewhere; "
    "bf16-mixed autocasts to bfloat16 on any device (faster on CPUs with bfloat16 instructions)"
)
AE_TRAIN = "synthbrain.autoencoder.train:train_autoencoder"
AE_LATENTS = "synthbrain.diffusion.latents:cache_latents"
MODEL_HELP = "a folder written by save_pretrained, a Hub id (owner/name), or an embedded model: default (4 mm) or default-2mm (2 mm)"
DM_MODEL = "synthbrain.diffusion.model:DiffusionConfig"
DM_TRAINING = "synthbrain.diffusion.train:DiffusionTraining"
DM_SCHEDULE = "synthbrain.samplers.schedule:NoiseSchedule"


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="register a real cohort to MNI space and write a model-ready cohort folder",
        description="Read a cohort (a folder of images + table, or BIDS), register every image to the MNI "
        "template, resample to a fixed grid, normalise, and write a prepared cohort folder. "
        "Re-running the same command resumes.",
    )
    src = p.add_argument_group("input (a folder of images with a table, or a BIDS dataset)")
    src.add_argument("--images", type=Path, help="folder of <subject_id>*.nii[.gz] T1 images")
    src.add_argument("--labels", type=Path, help="folder of label maps named like the images")
    src.add_argument("--table", type=Path, help="participants table (.csv or .tsv)")
    src.add_argument("--bids", type=Path, help="BIDS dataset root (instead of --images/--labels/--table)")
    src.add_argument("--derivatives", help="BIDS derivatives pipeline folder holding *_dseg label maps (default: any)")
    src.add_argument(
        "--session",
        metavar="LABEL|all",
        help="BIDS with sessions: read one session of every subject (e.g. 1 or ses-1), or 'all' to take each session as its own "
        "sample (age from sub-*_sessions.tsv when given; split keeps a subject's sessions together). Default: one T1w per subject",
    )
    src.add_argument(
        "--bids-filter",
        action="append",
        metavar="ENTITY=VALUE",
        help="BIDS with several T1w images per subject (T1w and rec-norm_T1w, two runs): keep those whose entity has this value, "
        "e.g. rec=norm, run=1, acq=mprage; 'rec=' keeps those without a rec entity (repeatable; the choice is recorded per subject)",
    )
    src.add_argument(
        "--bids-filter-file",
        type=Path,
        metavar="FILE.json",
        help='the same as a JSON file in fMRIPrep\'s --bids-filter-file form, e.g. {"t1w": {"rec": "norm", "run": 1}} '
        '(null: without that entity); a "dseg" query filters the label maps',
    )
    src.add_argument(
        "--trust-header",
        choices=["sform", "qform"],
        default=None,
        help="which NIfTI header transform to use where a file's qform and sform disagree (default: a disagreement is a problem)",
    )
    src.add_argument("--id-column", default="subject_id", help="table column with subject ids (default: subject_id)")
    src.add_argument(
        "--column", action="append", metavar="COVARIATE=COLUMN", help="table column of a covariate, where the names differ (repeatable)"
    )
    src.add_argument("--unit", action="append", metavar="COVARIATE=UNIT", help="unit of a table column, e.g. ventricular_volume=mm3")
    p.add_argument("--out", type=Path, required=True, help="output folder (a prepared cohort)")
    p.add_argument("--spacing", type=float, default=2.0, help="output voxel size in mm (default 2; 1, 2, 3, 4 are usual)")
    p.add_argument(
        "--registration",
        choices=["rigid", "affine"],
        default="rigid",
        help="rigid (default) keeps head size, so volume covariates stay true to the image",
    )
    p.add_argument(
        "--label-scheme",
        default="muse-coarse",
        help="built-in scheme name or JSON file mapping labels to coarse classes; 'none' keeps labels as they are",
    )
    p.add_argument("--registration-spacing", type=float, default=2.0, help="template resolution used for registration, mm (default 2)")
    p.add_argument("--no-skull-strip", action="store_true", help="keep the head; only the intensity scale uses the brain mask")
    p.add_argument("--skip-bad", action="store_true", help="leave out subjects with problems (listed in skipped.tsv) instead of stopping")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: one per CPU core)")
    p.add_argument("--overwrite", action="store_true", help="delete a previous preparation in --out made with other parameters")
    p.add_argument("--limit", type=int, default=None, help="prepare only the first N subjects (for a quick look)")
    p.set_defaults(func=_run_prepare)


def _bids_filter(args: argparse.Namespace) -> dict | None:
    """The BIDS filter of ``--bids-filter ENTITY=VALUE`` flags or ``--bids-filter-file`` (not both)."""
    from synthbrain import _io

    if args.bids_filter and args.bids_filter_file:
        raise SystemExit("--bids-filter and --bids-filter-file: give one of them (put every entity in the file)")
    if args.bids_filter_file is not None:
        try:
            return _io.read_json(args.bids_filter_file, "a JSON object of BIDS entities")
        except ValueError as err:
            raise SystemExit(f"--bids-filter-file: {err}") from None
    if not args.bids_filter:
        return None
    entities = {}
    for item in args.bids_filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--bids-filter {item!r}: expected ENTITY=VALUE, e.g. rec=norm or run=1 ('rec=' for none)")
        entities[key] = value or None
    return {"t1w": entities}


def _read_cohort(args: argparse.Namespace, on_error: str):
    """The cohort that ``prepare``'s input flags name (a folder with a table, or BIDS)."""
    from synthbrain.cohort import read_bids, read_folder

    common = dict(
        columns=_key_values(args.column, "--column"),
        units=_key_values(args.unit, "--unit"),
        label_scheme=None if args.label_scheme == "none" else args.label_scheme,
        on_error=on_error,
        trust_header=args.trust_header,
    )
    if args.bids is not None:
        if args.images or args.table or args.labels:
            raise SystemExit("--bids excludes --images, --labels and --table")
        return read_bids(args.bids, derivatives=args.derivatives, session=args.session, bids_filter=_bids_filter(args), **common)
    if args.images is None or args.table is None:
        raise SystemExit("give --images and --table (and optionally --labels), or --bids")
    if args.session is not None:
        raise SystemExit(f"--session {args.session}: sessions are read from a BIDS dataset; give --bids")
    if args.bids_filter or args.bids_filter_file:
        raise SystemExit("--bids-filter/--bids-filter-file: entities are read from a BIDS dataset; give --bids")
    return read_folder(args.images, args.table, labels=args.labels, id_column=args.id_column, **common)


def _run_prepare(args: argparse.Namespace) -> int:
    from synthbrain.preprocessing.prepare import PrepareParams, prepare_cohort

    scheme = None if args.label_scheme == "none" else args.label_scheme
    on_error = "skip" if args.skip_bad else "raise"
    cohort = _read_cohort(args, on_error)
    if args.limit is not None:
        if args.limit < 1:
            raise SystemExit(f"--limit {args.limit}: must be >= 1")
        cohort.subjects = cohort.subjects[: args.limit]
    for warning in cohort.warnings:
        log.warning(warning)
    for problem in cohort.skipped:
        log.warning("skipped: %s", problem)
    params = PrepareParams(
        spacing=args.spacing,
        registration=args.registration,
        skull_strip=not args.no_skull_strip,
        registration_spacing=args.registration_spacing,
    )
    out = prepare_cohort(cohort, args.out, params, label_scheme=scheme, workers=args.workers, overwrite=args.overwrite, on_error=on_error)
    import json

    from synthbrain.preprocessing.prepared import PreparedCohort

    summary = PreparedCohort.load(out).manifest()["summary"]
    print(json.dumps(summary, indent=2))
    print(f"prepared cohort: {out}")
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 32,64,64") from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the autoencoder or the diffusion model (torchrun-ready; re-running resumes)")
    stages = p.add_subparsers(dest="stage", required=True, metavar="{autoencoder,diffusion}")
    ae = stages.add_parser(
        "autoencoder",
        help="train the joint image + label autoencoder, then cache the latents",
        description="Train the joint image + label autoencoder on a prepared cohort (L1, cross-entropy, KL, and optionally a "
        "perceptual and a patch-adversarial term), then encode the cohort into RUN/latents for the diffusion stage. "
        "Re-running the same command resumes from RUN/checkpoint.pt.",
        formatter_class=_Formatter,
    )
    ae.add_argument("--prepared", type=Path, required=True, help="a prepared cohort folder (synthbrain prepare)")
    ae.add_argument("--run", type=Path, required=True, help="run folder; holds checkpoint.pt, losses.png, autoencoder/, latents/")
    ae.add_argument(
        "--downsample",
        type=int,
        default=_Default(AE_TRAIN, "downsample"),
        help="average the cohort over k^3 blocks, labels as fractions (2: 2 -> 4 mm)",
    )
    ae.add_argument(
        "--channels", type=_ints, default=_Default(AE_MODEL, "channels"), help="channels per level; levels - 1 halvings to the latent"
    )
    ae.add_argument("--latent-channels", type=int, default=_Default(AE_MODEL, "latent_channels"), help="channels of the latent")
    ae.add_argument("--res-blocks", type=int, default=_Default(AE_MODEL, "num_res_blocks"), help="residual blocks per level")
    ae.add_argument(
        "--groups", type=int, default=_Default(AE_MODEL, "norm_num_groups"), help="GroupNorm groups (must divide every level's channels)"
    )
    ae.add_argument("--steps", type=int, default=_Default(AE_TRAINING, "steps"), help="optimisation steps in all (warm-up included)")
    ae.add_argument("--batch-size", type=int, default=_Default(AE_TRAINING, "batch_size"), help="subjects per step and process")
    ae.add_argument("--lr", type=float, default=_Default(AE_TRAINING, "learning_rate"), help="Adam learning rate of the autoencoder")
    ae.add_argument(
        "--labels-dice-weight",
        type=float,
        default=_Default(AE_WEIGHTS, "labels_dice"),
        help="weight of a soft Dice term on the decoded labels, beside their cross-entropy (0: off)",
    )
    ae.add_argument("--kl-weight", type=float, default=_Default(AE_WEIGHTS, "kl"), help="weight of the KL term")
    ae.add_argument(
        "--perceptual-weight", type=float, default=_Default(AE_WEIGHTS, "perceptual"), help="weight of the perceptual term (0: off)"
    )
    ae.add_argument(
        "--perceptual-network",
        default=_Default(AE_TRAINING, "perceptual_network"),
        help="TorchScript file of a 3D feature network (default: deepbet's)",
    )
    ae.add_argument(
        "--adversarial-weight",
        type=float,
        default=_Default(AE_WEIGHTS, "adversarial"),
        help="weight of the patch-adversarial term (0: off)",
    )
    ae.add_argument(
        "--adversarial-warmup",
        type=int,
        default=_Default(AE_TRAINING, "adversarial_warmup"),
        help="steps before the discriminator and the adversarial term start",
    )
    ae.add_argument(
        "--adversarial-criterion",
        default=_Default(AE_TRAINING, "adversarial_criterion"),
        choices=["least_squares", "hinge"],
        help="adversarial loss",
    )
    ae.add_argument(
        "--adaptive-adversarial-weight",
        action="store_true",
        default=_Default(AE_TRAINING, "adaptive_adversarial_weight"),
        help="scale the adversarial term by Esser et al.'s adaptive weight",
    )
    ae.add_argument(
        "--discriminator-channels",
        type=int,
        default=_Default(AE_TRAINING, "discriminator_channels"),
        help="first-layer channels of the patch discriminator",
    )
    ae.add_argument(
        "--discriminator-layers",
        type=int,
        default=_Default(AE_TRAINING, "discriminator_layers"),
        help="stride-2 layers of the patch discriminator",
    )
    ae.add_argument(
        "--patch-size",
        type=_ints,
        default=_Default(AE_TRAINING, "patch_size"),
        help=(
            "train on random crops D,H,W (or one edge N) in voxels; default whole (finish a patch run with "
            "whole-volume steps from --init: group normalisation sees other statistics on whole volumes)"
        ),
    )
    ae.add_argument("--init", default=_Default(AE_TRAINING, "init"), help="an autoencoder component folder to start from (fine-tuning)")
    ae.add_argument("--checkpoint-every", type=int, default=_Default(AE_TRAINING, "checkpoint_every"), help="steps between checkpoints")
    ae.add_argument(
        "--seed", type=int, default=_Default(AE_TRAINING, "seed"), help="seed of the initial weights, data order and posterior noise"
    )
    ae.add_argument(
        "--mirror-latents",
        action="store_true",
        default=_Default(AE_LATENTS, "mirror"),
        help="also cache each subject's left-right mirror (doubles diffusion data)",
    )
    ae.add_argument(
        "--precision",
        default=_Default(AE_TRAINING, "precision"),
        help=PRECISION_HELP,
    )
    ae.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU if any, else cpu)")
    ae.set_defaults(func=_run_train_autoencoder)
    df = stages.add_parser(
        "diffusion",
        help="train the conditional diffusion UNet on cached latents, then write RUN/generator",
        description="Train the conditional latent-diffusion UNet on the latents of 'train autoencoder', then write a generator "
        "folder RUN/generator that synthbrain generate --model and BrainGenerator.from_pretrained read. Re-running resumes.",
        formatter_class=_Formatter,
    )
    df.add_argument("--latents", type=Path, required=True, help="latents folder written by 'train autoencoder' (RUN/latents)")
    df.add_argument("--run", type=Path, required=True, help="run folder; holds checkpoint.pt, losses.png, unet/, scheduler/, generator/")
    df.add_argument("--channels", type=_ints, default=_Default(DM_MODEL, "channels"), help="channels per level")
    df.add_argument("--attention", type=_ints, default=_Default(DM_MODEL, "attention_levels"), help="per level, 1 = attention (e.g. 0,1,1)")
    df.add_argument("--head-channels", type=int, default=_Default(DM_MODEL, "num_head_channels"), help="channels per attention head")
    df.add_argument("--res-blocks", type=int, default=_Default(DM_MODEL, "num_res_blocks"), help="residual blocks per level")
    df.add_argument(
        "--embed-condition",
        action="store_true",
        default=_Default(DM_MODEL, "embed_condition"),
        help="also add the covariates to the timestep embedding (every block)",
    )
    df.add_argument("--groups", type=int, default=_Default(DM_MODEL, "norm_num_groups"), help="GroupNorm groups")
    df.add_argument(
        "--prediction",
        default=_Default(DM_SCHEDULE, "prediction_type"),
        choices=["epsilon", "v_prediction", "sample"],
        help="what the UNet predicts",
    )
    df.add_argument(
        "--zero-terminal-snr",
        action="store_true",
        default=_Default(DM_SCHEDULE, "zero_terminal_snr"),
        help="rescale the noise schedule so its last step is pure noise (Lin et al. 2024)",
    )
    df.add_argument(
        "--min-snr-gamma",
        type=float,
        default=_Default(DM_TRAINING, "min_snr_gamma"),
        help="min-SNR loss weighting with this gamma (default: plain MSE)",
    )
    df.add_argument(
        "--latent-scaling",
        choices=["global", "per_channel"],
        default=_Default(DM_TRAINING, "latent_scaling"),
        help="bring latents to unit variance with one factor (global) or per channel (mean 0, variance 1 each)",
    )
    df.add_argument("--steps", type=int, default=_Default(DM_TRAINING, "steps"), help="optimisation steps")
    df.add_argument("--batch-size", type=int, default=_Default(DM_TRAINING, "batch_size"), help="latents per step and process")
    df.add_argument("--lr", type=float, default=_Default(DM_TRAINING, "learning_rate"), help="AdamW learning rate")
    df.add_argument(
        "--condition-dropout",
        type=float,
        default=_Default(DM_TRAINING, "condition_dropout"),
        help="probability of the null condition (classifier-free guidance)",
    )
    df.add_argument(
        "--ema-decay",
        type=float,
        default=_Default(DM_TRAINING, "ema_decay"),
        help="decay of the exponential moving average (the exported weights)",
    )
    df.add_argument("--checkpoint-every", type=int, default=_Default(DM_TRAINING, "checkpoint_every"), help="steps between checkpoints")
    df.add_argument(
        "--seed", type=int, default=_Default(DM_TRAINING, "seed"), help="seed of the initial weights, data order, timesteps and noise"
    )
    df.add_argument(
        "--precision",
        default=_Default(DM_TRAINING, "precision"),
        help=PRECISION_HELP,
    )
    df.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU if any, else cpu)")
    df.add_argument("--default-sampler", default=None, help="the model's default sampler (written into its index; default ddim)")
    df.add_argument("--default-steps", type=int, default=None, help="the model's default number of sampling steps (default 50)")
    df.add_argument("--default-guidance-scale", type=float, default=None, help="the model's default guidance scale (default 1)")
    df.add_argument("--default-spacing", default=None, help="the model's default timestep spacing: leading, trailing or linspace")
    df.add_argument("--default-qc", default=None, choices=["measure", "reject"], help="the model's default quality control (measure)")
    df.set_defaults(func=_run_train_diffusion)


def _autoencoder_settings(args: argparse.Namespace, num_classes: int):
    """The model and training settings of ``train autoencoder``'s flags (defaults resolved), for a
    cohort of ``num_classes`` label classes: ``(AutoencoderConfig, AutoencoderTraining)``."""
    from synthbrain.autoencoder.losses import AutoencoderLossWeights
    from synthbrain.autoencoder.model import AutoencoderConfig
    from synthbrain.autoencoder.train import AutoencoderTraining

    config = AutoencoderConfig(
        num_classes=num_classes,
        channels=args.channels,
        latent_channels=args.latent_channels,
        num_res_blocks=args.res_blocks,
        norm_num_groups=args.groups,
    )
    weights = AutoencoderLossWeights(
        labels_dice=args.labels_dice_weight, kl=args.kl_weight, perceptual=args.perceptual_weight, adversarial=args.adversarial_weight
    )
    training = AutoencoderTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        weights=weights,
        adversarial_warmup=args.adversarial_warmup,
        adversarial_criterion=args.adversarial_criterion,
        adaptive_adversarial_weight=args.adaptive_adversarial_weight,
        discriminator_channels=args.discriminator_channels,
        discriminator_layers=args.discriminator_layers,
        patch_size=None if args.patch_size is None else (args.patch_size * 3 if len(args.patch_size) == 1 else args.patch_size),
        perceptual_network=args.perceptual_network,
        init=args.init,
        precision=args.precision,
    )
    return config, training


def _run_train_autoencoder(args: argparse.Namespace) -> int:
    from synthbrain.autoencoder.train import train_autoencoder
    from synthbrain.diffusion.latents import cache_latents
    from synthbrain.preprocessing.prepared import PreparedCohort
    from synthbrain.training import setup_distributed

    scheme = PreparedCohort.load(args.prepared).label_scheme
    config, training = _autoencoder_settings(args, scheme.num_classes if scheme else 0)
    folder = train_autoencoder(args.prepared, args.run, config, training, downsample=args.downsample, device=args.device)
    info = setup_distributed(args.device)
    if info.is_main:
        cache_latents(
            folder, args.prepared, args.run / "latents", downsample=args.downsample, device=str(info.device), mirror=args.mirror_latents
        )
        print(f"autoencoder: {folder}\nlatents: {args.run / 'latents'}")
    return 0


def _diffusion_settings(args: argparse.Namespace, latent_channels: int, condition_dim: int):
    """The model, training and noise-schedule settings of ``train diffusion``'s flags (defaults
    resolved), for latents of ``latent_channels`` channels and conditions of ``condition_dim``
    entries: ``(DiffusionConfig, DiffusionTraining, NoiseSchedule)``."""
    from synthbrain.diffusion.model import DiffusionConfig
    from synthbrain.diffusion.train import DiffusionTraining
    from synthbrain.samplers.schedule import NoiseSchedule

    config = DiffusionConfig(
        latent_channels=latent_channels,
        condition_dim=condition_dim,
        channels=args.channels,
        attention_levels=tuple(bool(a) for a in args.attention),
        num_res_blocks=args.res_blocks,
        num_head_channels=args.head_channels,
        norm_num_groups=args.groups,
        embed_condition=args.embed_condition,
        classifier_free_guidance=args.condition_dropout > 0,
    )
    training = DiffusionTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        condition_dropout=args.condition_dropout,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        min_snr_gamma=args.min_snr_gamma,
        latent_scaling=args.latent_scaling,
        precision=args.precision,
    )
    return config, training, NoiseSchedule(prediction_type=args.prediction, zero_terminal_snr=args.zero_terminal_snr)


def _run_train_diffusion(args: argparse.Namespace) -> int:
    from synthbrain.diffusion.latents import LatentCache
    from synthbrain.diffusion.train import train_diffusion
    from synthbrain.generator import BrainGenerator
    from synthbrain.training import setup_distributed

    cache = LatentCache.load(args.latents)
    config, training, schedule = _diffusion_settings(args, cache.latents.shape[1], cache.conditions.shape[1])
    chosen = {
        "sampler": args.default_sampler,
        "steps": args.default_steps,
        "guidance_scale": args.default_guidance_scale,
        "timestep_spacing": args.default_spacing,
        "qc": args.default_qc,
    }
    defaults = {k: v for k, v in chosen.items() if v is not None}
    from synthbrain.generator.draws import check_sampling
    from synthbrain.samplers import get_sampler
    from synthbrain.samplers.schedule import SPACINGS

    # refused before training, not after it
    check_sampling(defaults.get("sampler", "ddim"), defaults.get("steps", 1), defaults.get("guidance_scale", 1.0), None, "--default-")
    if defaults.get("timestep_spacing", SPACINGS[0]) not in SPACINGS:
        raise ValueError(f"--default-spacing={defaults['timestep_spacing']!r}; allowed: {list(SPACINGS)}")
    if "sampler" in defaults:
        defaults.setdefault("timestep_spacing", get_sampler(defaults["sampler"]).DEFAULT_SPACING)
    train_diffusion(args.latents, args.run, config, training, schedule, device=args.device)
    if setup_distributed(args.device).is_main:
        folder = BrainGenerator.from_training(args.latents, args.run, defaults=defaults or None).save_pretrained(args.run / "generator")
        print(f"generator: {folder}  (load with BrainGenerator.from_pretrained or synthbrain generate --model)")
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate conditioned T1 volumes with label maps",
        description="Generate N volumes with label maps. Covariates are the model's own, given as --NAME VALUE in physical units "
        "(e.g. --age 70 --sex F --ventricular-volume 30 for the default model: years, F/M, mL); each given value applies to "
        "all N, and those not given are drawn per volume from the model's training distribution.",
        formatter_class=_Formatter,
        epilog="Covariates: any covariate of the model as --NAME VALUE (underscores or hyphens), e.g. --age 70 --sex F.",
    )
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("-n", type=int, default=1, help="number of volumes")
    p.add_argument("--seed", type=int, default=0, help="volume i gets the seed volume_seed(SEED, i), recorded in participants.tsv")
    add_sampling_arguments(p)
    p.add_argument("--batch-size", type=int, default=4, help="volumes sampled together (memory, not results)")
    p.add_argument("--extrapolate", action="store_true", help="allow covariates outside the training range")
    p.add_argument("--raw", action="store_true", help="keep the decoder's output outside the brain (default: background set to 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        help="precision the weights are stored and run in: float32, bfloat16, float16 or float64 (default: the model's, "
        "float32 for the released models); images are written as float32 in every case",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (BIDS-like: sub-*/anat, participants.tsv, preview.png), written when complete; finished batches wait "
        "in OUT.partial, so an interrupted run resumes when the same command is run again",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous synthbrain output in --out")
    p.add_argument(
        "--shards",
        action="store_true",
        help="write memory-mapped chunks of --batch-size volumes instead of NIfTI; resumes when run again, "
        "and splits the chunks over processes under torchrun",
    )
    p.set_defaults(func=_run_generate, takes_covariates=True)


def _covariate_flags(extra: list[str]) -> dict[str, str]:
    """``--NAME VALUE`` or ``--NAME=VALUE`` pairs left over by argparse, as covariate name -> text."""
    out, i = {}, 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or len(item) < 3:
            raise ValueError(f"{item!r}: unexpected; covariates are given as --NAME VALUE")
        name, sep, value = item[2:].partition("=")
        if not sep:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ValueError(f"--{name}: not an option of this command (see --help), and no value for a covariate --{name} VALUE")
            value, i = extra[i + 1], i + 1
        out[name.replace("-", "_")] = value
        i += 1
    return out


def _run_generate(args: argparse.Namespace) -> int:
    from synthbrain import _io
    from synthbrain.device import resolve_device
    from synthbrain.generator import check_output_folder
    from synthbrain.model_folder import as_dtype

    if args.n < 1:
        raise ValueError(f"-n {args.n}: the number of volumes must be >= 1")
    device = resolve_device(args.device)
    if args.dtype is not None:
        as_dtype(args.dtype, "--dtype")  # refused before anything is loaded
    if args.shards and args.raw:
        raise ValueError("--raw with --shards: the shards hold the dataset's volumes, background set to 0; drop one of the two")
    if args.shards:  # a shard store takes many writers (ranks, reruns): each chunk is locked while it is written
        return _generate(args, device)
    check_output_folder(args.out, args.overwrite)  # refused before the model is loaded and the volumes generated, not after
    with _io.folder_lock(args.out, argument="out"):  # one writer from here to the saved dataset
        check_output_folder(args.out, args.overwrite)
        return _generate(args, device)


def _generate(args: argparse.Namespace, device) -> int:
    from synthbrain.generator import BrainGenerator

    generator = BrainGenerator.from_pretrained(args.model, revision=args.revision, torch_dtype=args.dtype)
    covariates = {}
    for name, text in args.covariates.items():
        if name not in generator.schema.names:
            flags = ", ".join(f"--{n.replace('_', '-')}" for n in generator.schema.names)
            raise ValueError(f"--{name.replace('_', '-')}: not a covariate of this model; its covariates: {flags}")
        covariates[name] = text if generator.schema[name].kind == "categorical" else _number(name, text)
    missing = [name for name in generator.schema.names if name not in covariates]
    if missing and generator.distribution is None:
        flags = " ".join(f"--{name.replace('_', '-')} VALUE" for name in missing)
        raise ValueError(f"covariates: missing {missing}, and this model has no covariate distribution to draw them from; give {flags}")
    generator.to(device)
    if args.shards:
        return _generate_shards(args, generator, covariates)
    return _generate_folder(args, generator, covariates, device)


def _generate_folder(args: argparse.Namespace, generator, covariates: dict, device) -> int:
    """The NIfTI dataset of ``generate``, made through the shard mechanism: each batch is kept in
    OUT.partial/ as it is finished (``SyntheticBrainDataset(shards=...)``), so an interrupted run
    keeps its volumes and the same command resumes; the dataset is then written to OUT in one
    move (``GeneratedBrains.save``) and OUT.partial/ removed."""
    import shutil

    from synthbrain import _io
    from synthbrain.datasets import Fixed, SyntheticBrainDataset
    from synthbrain.datasets.shards import ShardsInUse

    partial = partial_folder(args.out)
    shown = _io.shown_path(partial)
    if partial.exists() and not (partial / "dataset.json").is_file() and (not partial.is_dir() or any(partial.iterdir())):
        raise ValueError(f"--out {args.out}: {shown} exists and is not what an interrupted synthbrain generate leaves; move it away")
    try:
        dataset = SyntheticBrainDataset(
            args.n,
            Fixed(**covariates) if covariates else None,
            generator,
            seed=args.seed,
            device=device,
            **SamplingSettings.from_args(args).given(),
            extrapolate=args.extrapolate,
            raw=args.raw,
            chunk_size=args.batch_size,
            cache_mb=0,
            prefetch=False,
            shards=partial,
        )
    except ShardsInUse as err:
        raise ValueError(
            f"--out {args.out}: {shown} holds the finished volumes of an interrupted generate with other settings ({err}); "
            f"run that command again to finish it, or delete {shown} to start this one"
        ) from None
    resumed = dataset.written()
    if resumed:
        print(f"resuming: {resumed} of {args.n} volumes already in {shown}", file=sys.stderr)

    def interrupted() -> str:
        done = dataset.written()
        return (
            f"the {done} of {args.n} volumes finished so far are kept in {shown} (chunk-*/images.npy, labels.npy, covariates.tsv); "
            f"run the same command again to generate the other {args.n - done} and write {args.out} "
            "(a previous output there stays as it was until then)"
        )

    args.on_interrupt = interrupted
    dataset.pregenerate(progress=True)
    folder = dataset.collect().save(args.out, overwrite=args.overwrite)
    shutil.rmtree(partial)
    print(f"wrote {args.n} volumes to {folder}")
    return 0


def partial_folder(out: Path) -> Path:
    """Where ``synthbrain generate --out OUT`` keeps finished volumes until OUT is written: OUT.partial beside it."""
    out = Path(out)
    return out.parent / f"{out.name.rstrip('/') or out.resolve().name}.partial"


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')} {text!r}: expected a number") from None


def _generate_shards(args: argparse.Namespace, generator, covariates: dict) -> int:
    import torch.distributed as dist

    from synthbrain.datasets import Fixed, SyntheticBrainDataset
    from synthbrain.training import setup_distributed

    info = setup_distributed(args.device)
    dataset = SyntheticBrainDataset(
        args.n,
        Fixed(**covariates) if covariates else None,
        generator,
        seed=args.seed,
        device=info.device,
        **SamplingSettings.from_args(args).given(),
        extrapolate=args.extrapolate,
        chunk_size=args.batch_size,
        cache_mb=0,
        shards=args.out,
    )
    args.on_interrupt = lambda: f"the chunks finished so far are kept in {args.out}; run the same command again to write the rest"
    dataset.pregenerate(info.rank, info.world_size, progress=info.is_main)
    if info.world_size > 1:
        dist.barrier()
    if info.is_main:
        print(f"wrote {args.n} volumes in {dataset.num_chunks} chunks; manifest {dataset.write_manifest()}")
    return 0


def _fractions(value: str) -> dict[str, float]:
    try:
        return {name: float(share) for name, share in _key_values(value.split(","), "--parts").items()}
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=FRACTION,... e.g. generator=0.4,pool=0.3,test=0.3") from err


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="split a prepared cohort into disjoint parts stratified by sex and age (e.g. generator / pool / test)",
        description="Write one prepared-cohort folder per part (subjects linked, not copied) and split.tsv. Subjects "
        "without sex or age go to the first part. A cohort prepared with --session all is split by subject: all sessions "
        "of a subject go to the same part.",
    )
    p.add_argument("--prepared", type=Path, required=True, help="a prepared cohort folder (synthbrain prepare)")
    p.add_argument("--out", type=Path, required=True, help="output folder: OUT/<part>/ and OUT/split.tsv")
    p.add_argument("--parts", type=_fractions, default="generator=0.4,pool=0.3,test=0.3", help="NAME=FRACTION,... (sum 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    from synthbrain.preprocessing.prepared import PreparedCohort
    from synthbrain.preprocessing.split import split_prepared

    for name, folder in split_prepared(args.prepared, args.out, args.parts, seed=args.seed).items():
        table = PreparedCohort.load(folder).table
        samples = len(table)
        if "participant_id" in table.columns:  # sessions: count both
            print(f"{name}: {samples} samples of {table['participant_id'].nunique()} subjects in {folder}")
        else:
            print(f"{name}: {samples} subjects in {folder}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="report realism, diversity, conditioning, label faithfulness and memorisation of a model against real data",
        description="Generate N volumes and measure them against the prepared cohort the model was trained on, each number "
        "beside its real-versus-real baseline; writes report.md, report.json, synthetic.tsv and PNG figures into --out. "
        "Evaluator networks (segmenter, age and sex predictors) are trained on half of the real subjects, saved in "
        "OUT/evaluators (or --evaluators) and reused.",
    )
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--real", type=Path, required=True, help="the prepared cohort the model was trained on")
    p.add_argument("--held-out", type=Path, default=None, help="a prepared cohort of subjects the model never saw (memorisation baseline)")
    p.add_argument("-n", "--n", type=int, default=200, help="synthetic volumes (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluators", type=Path, default=None, help="folder of saved evaluators to reuse (default OUT/evaluators)")
    p.add_argument("--segmenter-steps", type=int, default=800, help="training steps of the evaluator segmenter")
    p.add_argument(
        "--segmenter-precision",
        default="32-true",
        help="precision of the evaluator segmenter's training: " + PRECISION_HELP + " (bf16-mixed: half the time at 2 mm here)",
    )
    p.add_argument("--c2st-epochs", type=int, default=20, help="training epochs of the spot-the-fake classifier")
    p.add_argument("--feature-network", type=Path, default=None, help="TorchScript feature network (default: deepbet's encoder)")
    add_sampling_arguments(p)
    p.add_argument("--device", default=None, help="device of the generator: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from synthbrain.device import resolve_device
    from synthbrain.evaluation.evaluate import evaluate
    from synthbrain.evaluation.evaluators import EvaluatorSettings
    from synthbrain.generator import BrainGenerator

    settings = EvaluatorSettings(segmenter_steps=args.segmenter_steps, segmenter_precision=args.segmenter_precision, seed=args.seed)
    generator = BrainGenerator.from_pretrained(args.model).to(resolve_device(args.device))
    evaluate(
        generator,
        args.real,
        args.out,
        n=args.n,
        seed=args.seed,
        held_out=args.held_out,
        evaluators=args.evaluators,
        settings=settings,
        feature_network=args.feature_network,
        sampling=SamplingSettings.from_args(args).given(),
        c2st_epochs=args.c2st_epochs,
    )
    print(f"report: {args.out / 'report.md'}")
    return 0


def _add_convert_monai(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-monai",
        help="convert a MONAI bundle (the released brain LDM of Pinaya et al. 2022) into a synthbrain model folder",
        description="Read a MONAI bundle (a folder with configs/ and models/, or a Hub id such as "
        "MONAI/brain_image_synthesis_latent_diffusion_model) with weights_only loading and strict key mapping, and write "
        "it as a synthbrain model folder (safetensors + configs) that synthbrain generate --model reads.",
    )
    p.add_argument("bundle", help="bundle folder or Hub id (owner/name)")
    p.add_argument("out", type=Path, help="output model folder")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_run_convert_monai)


def _run_convert_monai(args: argparse.Namespace) -> int:
    from synthbrain.monai_bundle import convert_bundle

    out = convert_bundle(args.bundle, args.out, revision=args.revision, overwrite=args.overwrite)
    print(f"converted {args.bundle} -> {out}  (load with BrainGenerator.from_pretrained or synthbrain generate --model)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``synthbrain`` command line: one sub-command per job (``synthbrain --help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="synthbrain",
        description="Synthetic 3D brain MRI with label maps from latent diffusion models. Run 'synthbrain COMMAND --help' "
        "for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"synthbrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_prepare(sub)
    _add_split(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_convert_monai(sub)
    from synthbrain.reader_study.cli import add_parser as _add_reader_study

    _add_reader_study(sub)
    for choice in sub.choices.values():  # every command shows its defaults
        if choice.formatter_class is argparse.HelpFormatter:
            choice.formatter_class = _Formatter
    return parser


def _as_flags(message: str) -> str:
    """An error message in the command line's terms: ``extrapolate=True`` becomes ``--extrapolate``."""
    return re.sub(r"\b(extrapolate|overwrite|raw)=True\b", lambda m: "--" + m.group(1), message)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 2 bad input or failure, 130 interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if extra and not getattr(args, "takes_covariates", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _resolve_defaults(args)
    try:
        if getattr(args, "takes_covariates", False):
            args.covariates = _covariate_flags(extra)
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # bad input, failed subjects, a full or read-only disk: one line, no traceback
        print(f"synthbrain {args.command}: error: {_as_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = getattr(args, "on_interrupt", None)  # set by a command once it has work to keep
        print(f"synthbrain {args.command}: interrupted; {note() if note else _interrupted(args.command)}", file=sys.stderr)
        return 130


def _interrupted(command: str) -> str:
    """What an interrupt left, for a command that has not said more (``args.on_interrupt``)."""
    atomic = "outputs are written atomically, so nothing half-written was left (a previous output is intact)"
    if command in ("train", "prepare"):
        return f"{atomic}; run the same command again to resume where it stopped"
    return atomic


if __name__ == "__main__":
    sys.exit(main())
