"""The ``synthbrain`` command line: ``synthbrain prepare ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from synthbrain import __version__

log = logging.getLogger("synthbrain")


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


def _run_prepare(args: argparse.Namespace) -> int:
    from synthbrain.cohort import read_bids, read_folder
    from synthbrain.preprocessing.prepare import PrepareParams, prepare_cohort

    scheme = None if args.label_scheme == "none" else args.label_scheme
    on_error = "skip" if args.skip_bad else "raise"
    common = dict(
        columns=_key_values(args.column, "--column"),
        units=_key_values(args.unit, "--unit"),
        label_scheme=scheme,
        on_error=on_error,
        trust_header=args.trust_header,
    )
    if args.bids is not None:
        if args.images or args.table or args.labels:
            raise SystemExit("--bids excludes --images, --labels and --table")
        cohort = read_bids(args.bids, derivatives=args.derivatives, session=args.session, **common)
    else:
        if args.images is None or args.table is None:
            raise SystemExit("give --images and --table (and optionally --labels), or --bids")
        if args.session is not None:
            raise SystemExit(f"--session {args.session}: sessions are read from a BIDS dataset; give --bids")
        cohort = read_folder(args.images, args.table, labels=args.labels, id_column=args.id_column, **common)
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

    summary = json.loads((out / "manifest.json").read_text())["summary"]
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
    stages = p.add_subparsers(dest="stage", required=True)
    ae = stages.add_parser("autoencoder", help="train the joint image + label autoencoder, then cache the latents")
    ae.add_argument("--prepared", type=Path, required=True, help="a prepared cohort folder (synthbrain prepare)")
    ae.add_argument("--run", type=Path, required=True, help="run folder; holds checkpoint.pt, losses.png, autoencoder/, latents/")
    ae.add_argument(
        "--downsample",
        type=int,
        default=1,
        help="train on the cohort averaged over k^3 blocks, labels as class fractions (2: 2 mm -> 4 mm)",
    )
    ae.add_argument("--channels", type=_ints, default=(32, 64, 64))
    ae.add_argument("--latent-channels", type=int, default=3)
    ae.add_argument("--res-blocks", type=int, default=1)
    ae.add_argument("--groups", type=int, default=16, help="GroupNorm groups")
    ae.add_argument("--steps", type=int, default=500)
    ae.add_argument("--batch-size", type=int, default=2)
    ae.add_argument("--lr", type=float, default=2e-4)
    ae.add_argument("--checkpoint-every", type=int, default=50)
    ae.add_argument("--seed", type=int, default=0)
    ae.add_argument("--mirror-latents", action="store_true", help="also cache each subject's left-right mirror (doubles diffusion data)")
    ae.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU if any)")
    ae.set_defaults(func=_run_train_autoencoder)
    df = stages.add_parser("diffusion", help="train the conditional diffusion UNet on cached latents, then write RUN/generator")
    df.add_argument("--latents", type=Path, required=True, help="latents folder written by 'train autoencoder' (RUN/latents)")
    df.add_argument("--run", type=Path, required=True, help="run folder; holds checkpoint.pt, losses.png, unet/, scheduler.json")
    df.add_argument("--channels", type=_ints, default=(64, 128, 128))
    df.add_argument("--attention", type=_ints, default=(0, 1, 1), help="per level, 1 = attention (e.g. 0,1,1)")
    df.add_argument("--head-channels", type=int, default=32)
    df.add_argument("--res-blocks", type=int, default=1)
    df.add_argument(
        "--embed-condition", action="store_true", help="also add the covariates to the timestep embedding (modulates every block)"
    )
    df.add_argument("--groups", type=int, default=32, help="GroupNorm groups")
    df.add_argument("--steps", type=int, default=3000)
    df.add_argument("--batch-size", type=int, default=8)
    df.add_argument("--lr", type=float, default=1e-4)
    df.add_argument("--condition-dropout", type=float, default=0.15, help="probability of the null condition (classifier-free guidance)")
    df.add_argument("--ema-decay", type=float, default=0.999)
    df.add_argument("--checkpoint-every", type=int, default=250)
    df.add_argument("--seed", type=int, default=0)
    df.add_argument("--device", default=None)
    df.add_argument("--default-sampler", default=None, help="the model's default sampler (written into its index)")
    df.add_argument("--default-steps", type=int, default=None, help="the model's default number of sampling steps")
    df.add_argument("--default-guidance-scale", type=float, default=None, help="the model's default guidance scale")
    df.set_defaults(func=_run_train_diffusion)


def _run_train_autoencoder(args: argparse.Namespace) -> int:
    from synthbrain.autoencoder.model import AutoencoderConfig
    from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
    from synthbrain.diffusion.latents import cache_latents
    from synthbrain.preprocessing.prepared import PreparedCohort
    from synthbrain.training import setup_distributed

    scheme = PreparedCohort.load(args.prepared).label_scheme
    config = AutoencoderConfig(
        num_classes=scheme.num_classes if scheme else 0,
        channels=args.channels,
        latent_channels=args.latent_channels,
        num_res_blocks=args.res_blocks,
        norm_num_groups=args.groups,
    )
    training = AutoencoderTraining(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, checkpoint_every=args.checkpoint_every, seed=args.seed
    )
    folder = train_autoencoder(args.prepared, args.run, config, training, downsample=args.downsample, device=args.device)
    info = setup_distributed(args.device)
    if info.is_main:
        cache_latents(
            folder, args.prepared, args.run / "latents", downsample=args.downsample, device=str(info.device), mirror=args.mirror_latents
        )
        print(f"autoencoder: {folder}\nlatents: {args.run / 'latents'}")
    return 0


def _run_train_diffusion(args: argparse.Namespace) -> int:
    from synthbrain.diffusion.latents import LatentCache
    from synthbrain.diffusion.model import DiffusionConfig
    from synthbrain.diffusion.train import DiffusionTraining, train_diffusion

    cache = LatentCache.load(args.latents)
    config = DiffusionConfig(
        latent_channels=cache.latents.shape[1],
        condition_dim=cache.conditions.shape[1],
        channels=args.channels,
        attention_levels=tuple(bool(a) for a in args.attention),
        num_res_blocks=args.res_blocks,
        num_head_channels=args.head_channels,
        norm_num_groups=args.groups,
        embed_condition=args.embed_condition,
    )
    training = DiffusionTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        condition_dropout=args.condition_dropout,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    from synthbrain.generator import assemble_generator
    from synthbrain.training import setup_distributed

    train_diffusion(args.latents, args.run, config, training, device=args.device)
    if setup_distributed(args.device).is_main:
        chosen = {"sampler": args.default_sampler, "steps": args.default_steps, "guidance_scale": args.default_guidance_scale}
        defaults = {k: v for k, v in chosen.items() if v is not None}
        folder = assemble_generator(args.latents, args.run, defaults=defaults or None).save_pretrained(args.run / "generator")
        print(f"generator: {folder}  (load with BrainGenerator.from_pretrained or synthbrain generate --model)")
    return 0


def _add_sampling(p: argparse.ArgumentParser) -> None:
    """Sampling options of commands that generate; each defaults to the model's own (its index)."""
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", default=None, help="ddim, dpm++2m or ddpm (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (default: the model's)")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate conditioned T1 volumes with label maps",
        description="Generate N volumes. Covariates are in physical units; each given value applies to all N, "
        "and those not given are drawn per volume from the model's training distribution.",
    )
    p.add_argument("--model", default="default", help="a folder written by save_pretrained, a Hub id (owner/name), or 'default'")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("-n", type=int, default=1, help="number of volumes")
    p.add_argument("--age", type=float, help="years")
    p.add_argument("--sex", help="F or M")
    p.add_argument("--ventricular-volume", type=float, help="in the model's unit: mL, or a [0, 1] value for the MONAI reference model")
    p.add_argument("--brain-volume", type=float, help="in the model's unit: mL, or a [0, 1] value for the MONAI reference model")
    p.add_argument("--seed", type=int, default=0, help="volume i uses seed + i")
    _add_sampling(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--extrapolate", action="store_true", help="allow covariates outside the training range")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--shards",
        action="store_true",
        help="write memory-mapped chunks of --batch-size volumes (volume i's noise seed derived from (seed, i)) instead of NIfTI; "
        "resumes when run again, and splits the chunks over processes under torchrun",
    )
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from synthbrain.datasets.synthetic import resolve_device
    from synthbrain.generator import BrainGenerator, check_output_folder

    if args.n < 1:
        raise ValueError(f"-n {args.n}: the number of volumes must be >= 1")
    device = resolve_device(args.device)
    if not args.shards:  # refused before the model is loaded and the volumes generated, not after
        check_output_folder(args.out, args.overwrite)
    generator = BrainGenerator.from_pretrained(args.model, revision=args.revision)
    given = {"age": args.age, "sex": args.sex, "ventricular_volume": args.ventricular_volume, "brain_volume": args.brain_volume}
    generator.to(device)
    covariates = {name: value for name, value in given.items() if value is not None}  # the rest is drawn from the model
    if args.shards:
        return _generate_shards(args, generator, covariates)
    out = generator.generate(
        covariates,
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.guidance_scale,
        batch_size=args.batch_size,
        extrapolate=args.extrapolate,
        progress=True,
    )
    print(f"wrote {args.n} volumes to {out.save(args.out, overwrite=args.overwrite)}")
    return 0


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
        steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.guidance_scale,
        extrapolate=args.extrapolate,
        chunk_size=args.batch_size,
        cache_mb=0,
        shards=args.out,
    )
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
    import pandas as pd

    from synthbrain.preprocessing.split import split_prepared

    for name, folder in split_prepared(args.prepared, args.out, args.parts, seed=args.seed).items():
        table = pd.read_csv(folder / "participants.tsv", sep="\t", dtype=str)
        samples = len(list((folder / "subjects").iterdir()))
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
    p.add_argument("--model", default="default", help="a folder written by save_pretrained, a Hub id (owner/name), or 'default'")
    p.add_argument("--real", type=Path, required=True, help="the prepared cohort the model was trained on")
    p.add_argument("--held-out", type=Path, default=None, help="a prepared cohort of subjects the model never saw (memorisation baseline)")
    p.add_argument("-n", "--n", type=int, default=200, help="synthetic volumes (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluators", type=Path, default=None, help="folder of saved evaluators to reuse (default OUT/evaluators)")
    p.add_argument("--segmenter-steps", type=int, default=800, help="training steps of the evaluator segmenter")
    p.add_argument("--c2st-epochs", type=int, default=20, help="training epochs of the spot-the-fake classifier")
    p.add_argument("--feature-network", type=Path, default=None, help="TorchScript feature network (default: deepbet's encoder)")
    _add_sampling(p)
    p.add_argument("--device", default=None, help="device of the generator: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from synthbrain.datasets.synthetic import resolve_device
    from synthbrain.evaluation.evaluate import evaluate
    from synthbrain.evaluation.evaluators import EvaluatorSettings
    from synthbrain.generator import BrainGenerator

    generator = BrainGenerator.from_pretrained(args.model).to(resolve_device(args.device))
    evaluate(
        generator,
        args.real,
        args.out,
        n=args.n,
        seed=args.seed,
        held_out=args.held_out,
        evaluators=args.evaluators,
        settings=EvaluatorSettings(segmenter_steps=args.segmenter_steps, seed=args.seed),
        feature_network=args.feature_network,
        sampling={"steps": args.steps, "sampler": args.sampler, "guidance_scale": args.guidance_scale},
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
    parser = argparse.ArgumentParser(prog="synthbrain", description="Synthetic 3D brain MRI with label maps from latent diffusion models.")
    parser.add_argument("--version", action="version", version=f"synthbrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_split(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_convert_monai(sub)
    from synthbrain.reader_study.cli import add_parser as _add_reader_study

    _add_reader_study(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # bad input, failed subjects, a full or read-only disk: one line, no traceback
        print(f"synthbrain {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
