"""A prepared cohort in one compressed file, small enough to bring to the GPU machine, and back.

    python benchmarks/gpu/pack_cohort.py pack runs/ixi-2mm-rigid .devdata/ixi-2mm-rigid.npz.xz
    python benchmarks/gpu/pack_cohort.py unpack .devdata/ixi-2mm-rigid.npz.xz /tmp/ixi-2mm-rigid

``pack`` reads a prepared cohort folder (what ``synthbrain prepare`` writes: ``subjects/<id>/t1.nii.gz`` and
``labels.nii.gz``, ``participants.tsv``, ``covariates.json``, ``label_scheme.json``, ``manifest.json``, and
``params.json`` and ``skipped.tsv`` when present) and writes one ``.npz`` (uncompressed, no pickles) inside an
xz stream: the images as uint8 (``round(255 * clip(t1, 0, 1))``: at most 1/510 from the original, which the
pack reports), the label maps as uint8, each subject's affine, and the tables and JSON files as text. The
per-subject ``record.json`` files and ``qc/`` figures are left out (the manifest keeps the records).

``unpack`` rebuilds a prepared-cohort folder from it that :class:`~synthbrain.preprocessing.prepared.PreparedCohort`
and the command line (``synthbrain train autoencoder --prepared``, ``synthbrain evaluate --real``) read: images
as float32 ``uint8 / 255``, labels as uint8, NIfTI at gzip level 1 (fast to write), plus ``packed.json``
saying where the folder came from. It needs nibabel (brought as a wheel to the GPU machine).

Real subject data: write packs only under the git-ignored ``.devdata/``; never commit them.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "synthbrain-packed-cohort-1"
TEXT_FILES = ("participants.tsv", "covariates.json", "label_scheme.json", "manifest.json", "params.json", "skipped.tsv")
REQUIRED = ("participants.tsv", "covariates.json", "manifest.json")


def _read_table_ids(root: Path) -> list[str]:
    import pandas as pd

    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype={"subject_id": str}, na_values=["n/a"])
    if "subject_id" not in table.columns:
        raise ValueError(f"{root / 'participants.tsv'}: no subject_id column; not a prepared cohort")
    return table["subject_id"].tolist()


def pack(source: str | Path, target: str | Path, *, preset: int = 6) -> dict[str, Any]:
    """Pack the prepared cohort folder ``source`` into ``target`` (an xz-compressed .npz); the pack's description
    (subjects, shapes, bytes, the largest quantisation error). Raises ``ValueError`` for a folder that is not a
    prepared cohort, subjects on different grids, or label values outside 0..255."""
    import nibabel as nib

    source, target = Path(source), Path(target)
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise ValueError(f"{source}: {missing} missing; not a finished prepared cohort (synthbrain prepare writes them)")
    ids = _read_table_ids(source)
    if not ids:
        raise ValueError(f"{source}: participants.tsv lists no subject")
    images, labels, affines, error = [], [], [], 0.0
    with_labels = (source / "subjects" / ids[0] / "labels.nii.gz").is_file()
    for sid in ids:
        folder = source / "subjects" / sid
        img = nib.load(folder / "t1.nii.gz")
        t1 = np.asarray(img.dataobj, dtype=np.float32)
        quantised = np.round(np.clip(t1, 0.0, 1.0) * 255.0).astype(np.uint8)
        error = max(error, float(np.abs(quantised.astype(np.float32) / 255.0 - t1).max()))
        images.append(quantised)
        affines.append(img.affine)
        if with_labels:
            lab = np.asarray(nib.load(folder / "labels.nii.gz").dataobj)
            if lab.min() < 0 or lab.max() > 255 or not np.array_equal(lab, np.round(lab)):
                raise ValueError(f"{folder / 'labels.nii.gz'}: values outside the integers 0..255; cannot pack as uint8")
            labels.append(lab.astype(np.uint8))
    shapes = {im.shape for im in images} | {lab.shape for lab in labels}
    if len(shapes) != 1:
        raise ValueError(f"{source}: volumes of shapes {sorted(shapes)}; allowed: one grid for every subject")
    description = {
        "format": FORMAT,
        "source": source.name,
        "subjects": len(ids),
        "shape": list(images[0].shape),
        "labels": with_labels,
        "image_quantisation": "uint8 = round(255 * clip(t1, 0, 1)); unpacked as uint8 / 255",
        "max_abs_quantisation_error": error,
    }
    arrays: dict[str, np.ndarray] = {
        "subject_ids": np.array(ids),
        "images": np.stack(images),
        "affines": np.stack(affines).astype(np.float64),
        "description": np.array(json.dumps(description)),
    }
    if with_labels:
        arrays["labels"] = np.stack(labels)
    for name in TEXT_FILES:
        if (source / name).is_file():
            arrays["text:" + name] = np.array((source / name).read_text(encoding="utf-8"))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_bytes(lzma.compress(buffer.getvalue(), preset=preset))
    tmp.replace(target)
    description["bytes"] = target.stat().st_size
    description["raw_bytes"] = buffer.getbuffer().nbytes
    return description


def unpack(source: str | Path, target: str | Path, *, threads: int = 8) -> dict[str, Any]:
    """Rebuild a prepared-cohort folder at ``target`` (which must not exist or be empty) from the pack ``source``;
    the pack's description. Raises ``ValueError`` for a file that is not such a pack or a non-empty ``target``."""
    import nibabel as nib
    import nibabel.openers

    from synthbrain import _io

    source, target = Path(source), Path(target)
    try:
        raw = lzma.decompress(source.read_bytes())
        data = np.load(io.BytesIO(raw), allow_pickle=False)
        description = json.loads(str(data["description"]))
    except (OSError, lzma.LZMAError, ValueError, KeyError) as err:
        raise ValueError(f"{source}: not a packed cohort ({type(err).__name__}: {err})") from None
    if description.get("format") != FORMAT:
        raise ValueError(f"{source}: format {description.get('format')!r}; allowed: {FORMAT!r}")
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target}: exists and is not empty; give a new folder")
    ids = [str(v) for v in data["subject_ids"]]
    images, affines = data["images"], data["affines"]
    labels = data["labels"] if "labels" in data.files else None
    target.mkdir(parents=True, exist_ok=True)
    for key in data.files:
        if key.startswith("text:"):
            (target / key[len("text:") :]).write_text(str(data[key]), encoding="utf-8")

    def write(i: int) -> None:  # atomic, as synthbrain writes every image
        folder = target / "subjects" / ids[i]
        _io.save_image(folder / "t1.nii.gz", nib.Nifti1Image(images[i].astype(np.float32) / np.float32(255.0), affines[i]))
        if labels is not None:
            _io.save_image(folder / "labels.nii.gz", nib.Nifti1Image(labels[i], affines[i]))

    level = nibabel.openers.Opener.default_compresslevel
    nibabel.openers.Opener.default_compresslevel = 1
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(write, range(len(ids))))
    finally:
        nibabel.openers.Opener.default_compresslevel = level
    (target / "packed.json").write_text(json.dumps({**description, "unpacked_from": source.name}, indent=2) + "\n", encoding="utf-8")
    return description


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="a prepared cohort folder into one .npz.xz file")
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--preset", type=int, default=6, choices=range(10), metavar="0..9", help="xz preset (default 6)")
    u = sub.add_parser("unpack", help="a .npz.xz file into a prepared cohort folder")
    u.add_argument("source", type=Path)
    u.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            description = pack(args.source, args.target, preset=args.preset)
        else:
            description = unpack(args.source, args.target)
    except (ValueError, FileNotFoundError) as err:
        print(f"pack_cohort {args.command}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(description, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
