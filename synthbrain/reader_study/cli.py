"""``synthbrain reader-study create | check | serve | close | analyse`` (registered by :func:`add_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from synthbrain import _io
from synthbrain.sampling import SamplingSettings, add_sampling_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``reader-study`` and its commands on the ``synthbrain`` parser's subparsers."""
    p = sub.add_parser(
        "reader-study",
        help="a 'spot the fake' study with people: create a blinded study, serve it in the browser, analyse the answers",
        description="Readers label a blinded, shuffled mix of real and synthetic volumes real, synthetic or unsure, in the "
        "browser. See docs/reader-study.md.",
    )
    steps = p.add_subparsers(dest="step", required=True)

    c = steps.add_parser(
        "create",
        help="draw real and synthetic volumes and write a blinded study folder",
        description="Draw real volumes from a prepared cohort and synthetic ones from a model or a folder it wrote, give both "
        "the same brain mask, intensity normalisation, grid and file header, write them under random ids with the key in "
        "OUT/key/, and check the result for cues other than the image content.",
    )
    c.add_argument("--real", type=Path, required=True, help="a prepared cohort folder (synthbrain prepare) with label maps")
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=Path, help="a folder written by synthbrain generate (sub-*/anat/*_T1w.nii.gz + *_dseg)")
    source.add_argument("--model", help="the model of the synthetic cases: a folder, a Hub id or an embedded model (default, default-2mm)")
    c.add_argument("-n", "--n", type=int, default=40, help="number of cases (default 40)")
    c.add_argument("--synthetic-fraction", type=float, default=0.5, help="share of synthetic cases (default 0.5)")
    c.add_argument("--seed", type=int, default=0, help="seed of every draw (subjects, files, generation, ids, orders)")
    c.add_argument("--title", default=None, help="title shown to readers")
    add_sampling_arguments(c, scope="with --model: ")
    c.add_argument("--device", default=None, help="with --model: cpu, cuda, ... (default: cuda if available)")
    c.add_argument("--out", type=Path, required=True, help="the study folder to write (new or empty)")
    c.set_defaults(func=_run_create)

    k = steps.add_parser("check", help="re-run the cue check on a study folder (needs its key)")
    k.add_argument("study", type=Path)
    k.set_defaults(func=_run_check)

    s = steps.add_parser(
        "serve",
        help="serve the study page; answers go to STUDY/answers.sqlite",
        description="Serve the reading page (bound to localhost unless --host says otherwise). Readers enter a name, answer "
        "case by case, and may stop and continue with the same name. Ctrl-C stops the server; answers are saved as given.",
    )
    s.add_argument("study", type=Path)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    s.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    s.set_defaults(func=_run_serve)

    x = steps.add_parser("close", help="close the study: the server refuses further answers")
    x.add_argument("study", type=Path)
    x.set_defaults(func=_run_close)

    a = steps.add_parser(
        "analyse",
        aliases=["analyze"],
        help="per-reader accuracy, sensitivity, specificity, agreement, confidence and the most convincing fakes",
        description="Write OUT/report.md with a figure, report.json and answers.tsv (default OUT: STUDY/analysis).",
    )
    a.add_argument("study", type=Path)
    a.add_argument("--out", type=Path, default=None, help="report folder (default STUDY/analysis)")
    a.add_argument(
        "--exclude-reader",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this reader's answers out of every number (a test reader); repeat for several; the report names them",
    )
    a.add_argument(
        "--min-shared-cases",
        type=int,
        default=None,
        help="fewest cases two readers must share for a kappa (default 10); fewer: reported as not computed",
    )
    a.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="server time per case above which the time is left out of the medians, as a break (default 3600)",
    )
    a.set_defaults(func=_run_analyse)


def _run_create(args: argparse.Namespace) -> int:
    from synthbrain.reader_study.create import create_study

    generator, sampling = None, SamplingSettings.from_args(args).given()
    if args.model is not None:
        from synthbrain import BrainGenerator
        from synthbrain.device import resolve_device

        generator = BrainGenerator.from_pretrained(args.model).to(resolve_device(args.device))
    elif sampling or args.device is not None:
        raise ValueError("--steps, --sampler, --guidance-scale, --timestep-spacing, --qc and --device apply to --model only")
    summary = create_study(
        args.real,
        args.out,
        synthetic=args.synthetic,
        generator=generator,
        model_name=args.model,
        n=args.n,
        synthetic_fraction=args.synthetic_fraction,
        seed=args.seed,
        title=args.title,
        sampling=sampling,
    )
    print(f"study {_io.shown_path(args.out)}: {summary['n_real']} real + {summary['n_synthetic']} synthetic cases on {summary['grid']}")
    _print_cues(summary["cues"])
    print(f"key and cue check: {_io.shown_path(args.out / 'key')} (keep it from readers)")
    print(f"next: synthbrain reader-study serve {_io.shown_path(args.out)}")
    return 0


def _print_cues(result: dict) -> None:
    for cue in result["cues"]:
        print(f"cue check: WARNING {cue}")
    for difference in result["content_differences"]:
        print(f"cue check: content difference (for readers to judge): {difference}")
    if not result["cues"]:
        print(f"cue check: no cue found ({result['n_cases']} cases; size, header, grid and value range identical)")


def _run_check(args: argparse.Namespace) -> int:
    from synthbrain.reader_study.cues import check_cues, write_cue_report

    result = check_cues(args.study)
    path = write_cue_report(args.study, result)
    _print_cues(result)
    print(f"report: {_io.shown_path(path)}")
    return 1 if result["cues"] else 0


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from synthbrain.reader_study.server import serve
    except ImportError as err:
        raise RuntimeError(f"serving needs Flask and waitress ({err}); install them with: pip install 'synthbrain[reader-study]'") from None
    serve(args.study, host=args.host, port=args.port, threads=args.threads)
    return 0


def _run_close(args: argparse.Namespace) -> int:
    from synthbrain.reader_study.store import open_store
    from synthbrain.reader_study.study import load_study

    closed_at = open_store(load_study(args.study, key="ignore", verify=False)).close()
    print(f"study {_io.shown_path(args.study)} closed at {closed_at}; no more answers are taken")
    return 0


def _run_analyse(args: argparse.Namespace) -> int:
    from synthbrain.reader_study.analysis import MAX_SECONDS, MIN_SHARED_CASES, analyse

    out = args.out if args.out is not None else args.study / "analysis"
    report = analyse(
        args.study,
        out,
        exclude_readers=args.exclude_reader,
        min_shared_cases=MIN_SHARED_CASES if args.min_shared_cases is None else args.min_shared_cases,
        max_seconds=MAX_SECONDS if args.max_seconds is None else args.max_seconds,
    )
    left_out = "".join(f"; left out: {r['name']} ({r['answers']} answers)" for r in report["excluded_readers"])
    print(f"{report['n_readers']} reader(s) analysed, of {report['n_names_entered']} name(s) entered{left_out}")
    for row in report["per_reader"]:
        acc = row["accuracy"]
        print(f"{row['reader']}: accuracy {acc['value']:.2f} [{acc['low']:.2f}, {acc['high']:.2f}] over {acc['n']} answers")
    print(f"report: {_io.shown_path(out / 'report.md')}")
    return 0
