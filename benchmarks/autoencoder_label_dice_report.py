"""The table and figure of ``benchmarks/autoencoder_label_dice.sh``: does a soft Dice term on the decoded
labels keep the autoencoder's cortex thin? Reads the ``autoencoder_detail.py`` results ``NAME-whole.json``
and ``NAME-windows.json`` in FOLDER (NAME: shipped, ctrl, dice1, scratch-dice1; missing ones are left
out) and writes OUT.md, OUT.json (strict JSON) and OUT.png: the first held-out subject's coronal
mid-slice, real and each autoencoder's reconstruction in windows (image above, decoded label map below).

    python benchmarks/autoencoder_label_dice_report.py runs/v4/label-dice docs/benchmarks/autoencoder-label-dice
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from _report import markdown_table
from autoencoder_detail import BURIED
from matplotlib.figure import Figure

from synthbrain import _io
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.components import load_component
from synthbrain.preprocessing.prepared import PreparedCohort

ARMS = {
    "shipped": "shipped `default-2mm` autoencoder (8650 steps, cross-entropy only)",
    "ctrl": "shipped + 1500 steps fine-tuning, cross-entropy only (control)",
    "dice1": "shipped + 1500 steps fine-tuning, + Dice (weight 1)",
    "scratch-dice1": "v4 recipe from scratch (8650 steps, seed 0) + Dice (weight 1)",
}
RATIOS = {
    "high-frequency share": "high-frequency share",
    "high-pass share": "high-pass share",
    "mean gradient magnitude": "gradient",
    "median pairwise L2": "variety",
    BURIED: "buried cortical GM",
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where autoencoder_label_dice.sh wrote the autoencoder_detail.py results")
    parser.add_argument("out", type=Path, help="report path without suffix")
    args = parser.parse_args(argv)
    results = {
        (name, mode): _io.read_json(path, "autoencoder_detail.py result")
        for name in ARMS
        for mode in ("whole", "windows")
        if (path := args.folder / f"{name}-{mode}.json").is_file()
    }
    if not results:
        raise SystemExit(f"folder {args.folder}: no NAME-whole.json or NAME-windows.json for NAME in {list(ARMS)}")
    rows = []
    for (name, mode), result in results.items():
        measures = result["measures"]
        row = {"autoencoder": name, "reconstructed": mode}
        row |= {f"{short} / real": measures[key]["ratio"] for key, short in RATIOS.items() if key in measures}
        row |= {"buried cortical GM": measures.get(BURIED, {}).get("reconstructions")}
        row |= {"L1": result["l1"], "PSNR dB": result["psnr_db"], "label Dice": result["label_dice"]}
        rows.append(row)
    first = next(iter(results.values()))
    window = next((result["window"] for result in results.values() if result.get("window")), None)
    windows = "" if window is None else f" ({' x '.join(map(str, window['size']))} voxels, overlap {window['overlap']}, Gaussian blending)"
    command = " ".join(["python", "benchmarks/autoencoder_label_dice_report.py", *(sys.argv[1:] if argv is None else argv)])
    real = {short: first["measures"][key]["real"] for key, short in RATIOS.items() if key in first["measures"]}
    report = {"real": first["real"], "subjects": first["subjects"], "real_values": real, "arms": ARMS, "rows": rows}
    _io.write_json(args.out.with_suffix(".json"), report)
    _figure(results, args.out.with_suffix(".png"))
    text = (
        "# Autoencoder: a soft Dice term on the decoded labels (issue 30)\n\n"
        f"Written by `{command}` from the runs of `benchmarks/autoencoder_label_dice.sh`. "
        f"{first['subjects']} held-out subjects of `{first['real']}` (2 mm), each inside its own brain. "
        "`whole`: each volume encoded and decoded at once; `windows`: in windows of the training patch size"
        f"{windows}, the statistics the patch-trained networks were trained "
        "with. Ratios are reconstruction / real; buried cortical GM is the share of cortical grey matter more "
        f"than 2 voxels from CSF or background (real: {real.get('buried cortical GM', float('nan')):.3f}).\n\n"
        + "\n".join(f"- `{name}`: {what}" for name, what in ARMS.items())
        + "\n\n"
        + markdown_table(pd.DataFrame(rows))
        + f"\n\n![coronal mid-slice of the first held-out subject: real and each reconstruction]({args.out.with_suffix('.png').name})\n"
    )
    _io.write_text(args.out.with_suffix(".md"), text)
    return report


@torch.no_grad()
def _figure(results: dict, path: Path) -> None:
    """Real and each autoencoder's windowed reconstruction (whole where there is no windowed result) of the
    first subject: coronal mid-slice, image (grey window [0, 1]) above, decoded label map below."""
    chosen = {name: results.get((name, "windows"), results.get((name, "whole"))) for name, _ in results}
    first = next(iter(chosen.values()))
    item = PreparedCohort.load(first["real"])[0]
    image, labels = item["image"][None], item["labels"][None]
    truth = labels.argmax(1) if labels.is_floating_point() else labels
    panels = [("real", image, truth)]
    for name, result in chosen.items():
        model = load_component(BrainAutoencoder, AutoencoderConfig, result["autoencoder"]).eval()
        window = result.get("window")
        decoded, classes = model.reconstruct(image, labels, *((window["size"], window["overlap"]) if window else ()))
        panels.append((name, decoded, classes))
    fig = Figure(figsize=(3 * len(panels), 6.4), dpi=110)
    axes = fig.subplots(2, len(panels), squeeze=False)
    middle = image.shape[3] // 2
    for column, (name, volume, classes) in enumerate(panels):
        shown = {"origin": "lower", "aspect": "equal", "interpolation": "nearest"}  # MNI axes x, y, z; coronal: y fixed
        axes[0, column].imshow(volume[0, 0, :, middle].T.numpy(), cmap="gray", vmin=0, vmax=1, **shown)
        axes[1, column].imshow(classes[0, :, middle].T.numpy(), cmap="tab10", vmin=0, vmax=9, **shown)
        axes[0, column].set_title(name, fontsize=9)
        for ax in axes[:, column]:
            ax.set_axis_off()
    fig.tight_layout()
    _io.save_figure(path, fig)


if __name__ == "__main__":
    main()
