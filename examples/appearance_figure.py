"""The figure of docs/appearance.md: one generated subject (image and label map) beside a row of
randomised appearances of the same label map.

    python examples/appearance_figure.py --model default --out docs/appearance.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from synthbrain import BrainGenerator, SyntheticBrainDataset, Uniform, _io  # noqa: E402
from synthbrain.datasets.appearance import AppearanceRandomizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--renders", type=int, default=5, help="randomised appearances shown")
    parser.add_argument("--out", type=Path, default=Path("docs/appearance.png"))
    args = parser.parse_args()
    generator = BrainGenerator.from_pretrained(args.model)
    sampler = Uniform(age=(70, 80), sex=["F"])
    generated = SyntheticBrainDataset(1, sampler, generator, seed=0, device="cpu")[0]
    randomizer = AppearanceRandomizer()  # the defaults SyntheticBrainDataset(appearance="randomized") uses
    classes, affine = len(generator.label_classes), generator.image_grid.affine
    renders = [randomizer(generated["label"][0], classes, affine, seed=seed)[0] for seed in range(args.renders)]
    columns = 2 + len(renders)
    fig, axes = plt.subplots(2, columns, figsize=(2.1 * columns, 4.6), dpi=110)
    z, x = generated["image"].shape[3] // 2, generated["image"].shape[1] // 2
    panels = [("generated image", generated["image"][0]), ("its label map", generated["label"][0].float())]
    panels += [(f"randomised {k + 1}", image[0]) for k, image in enumerate(renders)]
    for column, (title, volume) in enumerate(panels):
        labels = title == "its label map"
        kwargs = {"cmap": "tab10", "vmin": 0, "vmax": 9, "interpolation": "nearest"} if labels else {"cmap": "gray", "vmin": 0, "vmax": 1}
        axes[0, column].imshow(volume[:, :, z].T, origin="lower", **kwargs)
        axes[1, column].imshow(volume[x].T, origin="lower", **kwargs)
        axes[0, column].set_title(title, fontsize=8)
        for row in range(2):
            axes[row, column].set_axis_off()
    covariates = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in generated["covariates"].items())
    fig.suptitle(f"one generated anatomy ({covariates}) in randomised appearances", fontsize=9)
    fig.tight_layout()
    _io.save_figure(args.out, fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
