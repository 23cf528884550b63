"""The evaluation report: its Markdown (:func:`markdown`) and PNG figures, from the numbers
:func:`synthbrain.evaluation.evaluate.evaluate` computed. Figures are ``matplotlib.figure.Figure``
objects (no pyplot state, no backend switch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthbrain import _io
from synthbrain.figures import mid_slices, save_brain_rows, title_text

PAPER = {  # Pinaya et al. 2022 (../shared/reference/paper-model.md); other features and resolution, so for orientation only
    "ventricular_volume r": 0.972,
    "age r": 0.692,
    "MS-SSIM synthetic / real": (0.6555, 0.6536),
    "FID (MedicalNet) synthetic / real-vs-real": (0.0076, 0.0005),
}


def markdown(summary, realism, c2st, diversity, conditioning, faithfulness, accuracy, memorisation) -> str:
    md = _io.markdown_table
    s = summary
    continuous = [k for k in s["covariates"] if k in accuracy and k != "sex"]
    evaluator_rows = pd.DataFrame(
        [
            *(
                {"measure": f"{k} (Pearson r / MAE)", "on real B": f"{accuracy[k]['pearson_r']:.3f} / {accuracy[k]['mae']:.2f}"}
                for k in continuous
            ),
            *(
                [{"measure": "sex (accuracy / AUC)", "on real B": f"{accuracy['sex']['accuracy']:.3f} / {accuracy['sex']['auc']:.3f}"}]
                if "sex" in accuracy
                else []
            ),
            *({"measure": f"segmenter Dice, {c}", "on real B": f"{d:.3f}"} for c, d in list(accuracy["median_dice"].items())[1:]),
        ]
    )
    thresholds = s["reliability_thresholds"]
    if s["unreliable"]:
        warning = (
            f"**Unreliable rows: {', '.join(s['unreliable'])}.** Their evaluator is not accurate enough on real B "
            f"(needed: volume r >= {thresholds['volume r']}, age r >= {thresholds['age r']}, sex AUC >= {thresholds['sex AUC']}, "
            f"class Dice >= {thresholds['class Dice']}), so what they measure on synthetic volumes says little; they are marked "
            "`reliable: False` below and in report.json."
        )
    else:
        warning = "Every evaluator reaches its reliability threshold on real B (docs/evaluation.md)."
    c2st_rows = pd.DataFrame([{"comparison": k, **v} for k, v in c2st.items()])
    control = s["c2st_control"]
    if control["passed"]:
        control_text = f"Real B against B blurred, in this run: {control['reason']}."
    else:
        control_text = (
            f"**Unreliable: the classifier cannot see ({control['reason']}).** A classifier that cannot tell a blurred brain "
            "from a real one says nothing about the sets below, least of all with an accuracy near 0.5; they are marked "
            "`reliable: False`. The baseline classifier underneath shows what the detail statistics alone tell apart."
        )
    baseline_rows = pd.DataFrame([{"comparison": k, **v} for k, v in s["c2st_baseline"].items()])
    flagged = memorisation["flagged"]
    return (
        "\n\n".join(
            [
                f"# Evaluation of `{s['model']}`",
                warning,
                f"{s['n_synthetic']} synthetic volumes ({s['sampling']['sampler']}, {s['sampling']['steps']} steps, guidance "
                f"{s['sampling']['guidance_scale']}, {s['sampling']['timestep_spacing']} timesteps; covariates drawn from the model's "
                f"training distribution, seed {s['seed']}) against "
                f"`{s['real']}`: {s['real_subjects']['complete']} real subjects with complete covariates, split into A "
                f"({s['real_subjects']['A (evaluators, reference)']}: trains the evaluators, reference set) and B "
                f"({s['real_subjects']['B (baseline)']}: scores the evaluators, real-versus-real baseline). Every synthetic number "
                "stands beside the same number for real subjects.",
                "## Detail and variety: sharp and varied subjects, or one average brain?",
                md(detail_headline(s["detail_variety"])),
                "Ratios to real B in brackets (below 1: less fine detail, less variety than real subjects). The reconstructions "
                "are the autoencoder's of B, what the diffusion stage could reach at best; B blurred is the spot-the-fake test's "
                "positive control. High-frequency share: spectral power above 0.25 cycles/voxel over the power at every non-zero "
                "frequency, mean over volumes; gradient: mean gradient magnitude inside the brain (intensity per voxel); pairwise "
                "L2: distance between every two volumes of a set, median [quartiles]. All inside each set's own brain mask; "
                "definitions in report.json (`detail_variety_definitions`).",
                "![raw mid-slices, samples above real subjects](raw-slices.png)",
                "## Evaluators (trained on real A only), their accuracy on real B",
                md(evaluator_rows),
                f"## Realism on deep features ({s['feature_network']})",
                md(realism),
                "The autoencoder row scores its reconstructions of B: what the diffusion stage could reach at best; the gap "
                "between it and the real row is the autoencoder's, the gap between the synthetic row and it the diffusion stage's. "
                f"Synthetic rows: mean over 5 random subsets of {realism['n'].iloc[-1]} synthetic volumes (B's size), so the "
                "sample-size bias of the Fréchet distance is the same in both rows. MMD: RBF kernel, median bandwidth, permutation "
                "p-value (200 permutations; first subset).",
                "## Spot the fake: classifier two-sample test (small 3D CNN, accuracy on held-apart volumes; 0.5 = indistinguishable)",
                control_text,
                md(c2st_rows),
                "AUC: of the network's scores on the test volumes. Baseline classifier: logistic regression on two numbers per volume, "
                "high-frequency share and mean gradient (5-fold cross-validated; both sets cut to the same size), and the AUC of "
                "each number alone (lower = fake; 1: every fake has less detail than every real volume, 0.5: no difference):",
                md(baseline_rows),
                f"## Diversity: mean 3D MS-SSIM between random pairs, {s['ms_ssim_scales']} scales (lower = more varied)",
                md(pd.DataFrame([{"set": k, "MS-SSIM": v} for k, v in diversity.items()])),
                "## Conditioning: requested versus measured",
                md(conditioning),
                "Real rows: B's table values (volumes measured on 1 mm label maps) against the evaluators' reading of B's images, "
                "which is the ceiling of what the evaluators can confirm.",
                "![conditioning](conditioning.png)",
                "## Label faithfulness: median Dice, generated label map vs independent segmentation of the generated image",
                md(faithfulness),
                "Real row: B's label maps against the independent segmentation of B's images.",
                "## Memorisation: distance of each volume to its nearest training subject",
                f"L2 distance (intensities in [0, 1]). Synthetic: median {memorisation['synthetic_median']:.2f}, minimum "
                f"{memorisation['synthetic_min']:.2f}. Real baseline ({memorisation['baseline']}): median "
                f"{memorisation['real_median']:.2f}, minimum {memorisation['real_min']:.2f}. Synthetic volumes closer to a training "
                f"subject than any real subject is: {_listing(flagged)}. Smooth, average-looking volumes are near every subject, so "
                "raw distance flags them without any copying; the ratio of the nearest to the second-nearest training subject's "
                "distance does not (a copy gives 0, a volume no nearer to one subject than to the next gives about 1). Ratio: "
                f"synthetic median {memorisation['ratio_synthetic_median']:.3f}, minimum {memorisation['ratio_synthetic_min']:.3f}; "
                f"real median {memorisation['ratio_real_median']:.3f}, minimum {memorisation['ratio_real_min']:.3f}. Synthetic "
                f"volumes with a ratio below every real subject's: {_listing(memorisation['ratio_flagged'])}.",
                "![nearest neighbours](nearest-neighbours.png)",
                "## Samples and intensities",
                "![montage](montage.png)",
                "![intensity histograms](intensity-histograms.png)",
                "## The paper's numbers, for orientation",
                "Pinaya et al. 2022 (1 mm, MedicalNet features, SynthSeg volumes, a brain-age network): ventricular volume r "
                f"{PAPER['ventricular_volume r']}, age r {PAPER['age r']}, MS-SSIM synthetic / real "
                + " / ".join(map(str, PAPER["MS-SSIM synthetic / real"]))
                + ", FID synthetic / real-vs-real "
                + " / ".join(map(str, PAPER["FID (MedicalNet) synthetic / real-vs-real"]))
                + ". Different features, resolution and measuring networks: "
                "compare ratios to the real baseline, not raw values.",
            ]
        )
        + "\n"
    )


def detail_headline(rows: list[dict]) -> pd.DataFrame:
    """The headline table of detail and variety: one row per measure, one column per set (records of
    ``report.json``'s ``detail_variety``), ratios to real B in brackets for the sets other than real."""
    columns = {}
    for row in rows:
        ratio = not row["set"].startswith("real (") or "blurred" in row["set"]

        def cell(value: float, key: str, row=row, ratio=ratio) -> str:
            return f"{value:.4g} ({row[key + ' / real (B)']:.2f})" if ratio else f"{value:.4g}"

        columns[f"{row['set']} (n {row['n']})"] = [
            cell(row["high-frequency share"], "high-frequency share"),
            cell(row["mean gradient"], "mean gradient"),
            cell(row["pairwise L2 median"], "pairwise L2 median") + f" [{row['pairwise L2 q1']:.3g}, {row['pairwise L2 q3']:.3g}]",
        ]
    measures = ["high-frequency share (> 0.25 cycles/voxel)", "mean gradient magnitude in the brain", "pairwise L2, median [quartiles]"]
    return pd.DataFrame({"measure": measures, **columns})


def _listing(indices: list[int]) -> str:
    if not indices:
        return "none"
    return f"{len(indices)} ({', '.join(map(str, indices[:20]))}{', ...' if len(indices) > 20 else ''})"


def montage_figure(path: Path, images, labels, covariates, class_names, spacing_mm: float, units=None, rows: int = 6) -> Path:
    """The first ``rows`` synthetic volumes (images (N, 1, D, H, W), their own label maps (N, D, H, W)):
    plain views beside the labelled ones with a class legend, titled with the requested covariates
    and their units (:func:`synthbrain.figures.brain_rows`)."""
    titles = [title_text(f"synthetic {i}", r.to_dict(), units) for i, r in covariates.head(rows).iterrows()]
    shown = [x[0].numpy() for x in images[:rows]], [lab.numpy() for lab in labels[:rows]]
    return save_brain_rows(path, *shown, titles, spacing_mm, class_names)


def histograms(path: Path, synthetic, own_labels, real, real_fractions) -> Path:
    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 101)
    for name, x, brain in (("real (B)", real, real_fractions.argmax(1) > 0), ("synthetic", synthetic, own_labels > 0)):
        values = x[:, 0][brain].numpy()
        ax.hist(values, bins=bins, density=True, histtype="step", lw=1.5, label=f"{name} ({len(x)} volumes)")
    ax.set_xlabel("intensity inside the brain (own label map)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path


def scatter(path: Path, requested, measured, own, real_table, real_measured, volumes: list[str]) -> Path:
    """Requested versus measured, as the paper's Figure 3: volumes, age, and p(male) by requested sex
    (those the model's covariates include)."""
    continuous = [*volumes, *(["age"] if "age" in measured else [])]
    sex = "p_male" in measured
    fig = Figure(figsize=(4 * (len(continuous) + sex), 4), dpi=100)
    axes = fig.subplots(1, len(continuous) + sex, squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, continuous):
        ax.scatter(requested[name], measured[name], s=10, alpha=0.6, label="synthetic, independent evaluator")
        if name in volumes:
            ax.scatter(requested[name], own[name], s=10, alpha=0.6, marker="^", label="synthetic, own label map")
        ax.scatter(real_table[name], real_measured[name], s=14, alpha=0.8, marker="s", label="real (B), independent evaluator")
        low, high = np.nanmin([requested[name].min(), real_table[name].min()]), np.nanmax([requested[name].max(), real_table[name].max()])
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_xlabel(f"requested / true {name}")
        ax.set_ylabel("measured")
    axes[0].legend(fontsize=7)
    if sex:
        for offset, (name, want, p) in enumerate(
            (("synthetic", requested["sex"], measured["p_male"]), ("real (B)", real_table["sex"], real_measured["p_male"]))
        ):
            for k, level in enumerate(("F", "M")):
                values = p[want.to_numpy() == level].to_numpy()
                axes[-1].scatter(np.full(len(values), 2 * k + offset) + np.linspace(-0.2, 0.2, len(values)), values, s=8, alpha=0.6)
        axes[-1].set_xticks(range(4), ["F synth", "F real", "M synth", "M real"])
        axes[-1].axhline(0.5, color="k", lw=0.8, ls="--")
        axes[-1].set_ylabel("predicted p(male)")
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path


def nearest_pairs(path: Path, synthetic, training, table, memorisation, pairs: int = 4) -> Path:
    """The synthetic volumes closest to a training subject, each beside that subject (axial mid-slices)."""
    closest = np.argsort(memorisation["synthetic_distances"])[:pairs]
    fig = Figure(figsize=(2.6 * len(closest), 5.6), dpi=100)
    axes = fig.subplots(2, len(closest), squeeze=False)
    for col, i in enumerate(closest):
        j = int(memorisation["nearest"][i])
        for row, (volume, title) in enumerate(
            (
                (synthetic[i, 0], f"synthetic {i}\nL2 {memorisation['synthetic_distances'][i]:.2f}"),
                (training[j, 0], f"nearest: {table['subject_id'].iat[j]}"),
            )
        ):
            axes[row, col].imshow(mid_slices(volume.numpy())[0], cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(title, fontsize=8)
            axes[row, col].set_axis_off()
    fig.suptitle(f"real baseline: min {memorisation['real_min']:.2f}, median {memorisation['real_median']:.2f}", fontsize=9)
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path


def raw_slices(path: Path, synthetic, real, real_names, columns: int = 6) -> Path:
    """Raw mid-slices, no label overlay: the first ``columns`` synthetic volumes (N, 1, D, H, W) above the
    first ``columns`` real ones (M, 1, D, H, W; ``real_names`` their subject ids), axial then coronal,
    all in one grey window, intensities 0 to 1, so smooth, look-alike samples stand out."""
    shown = min(columns, len(synthetic), len(real))
    rows = [
        (f"{kind} {view}", volumes, names, v)
        for v, view in ((0, "axial"), (1, "coronal"))
        for kind, volumes, names in (
            ("synthetic", synthetic, [f"synthetic {i}" for i in range(shown)]),
            ("real", real, [str(x) for x in list(real_names)[:shown]]),
        )
    ]
    fig = Figure(figsize=(1.9 * shown, 2.3 * len(rows)), dpi=100)
    axes = fig.subplots(len(rows), shown, squeeze=False)
    for r, (label, volumes, names, view) in enumerate(rows):
        for c in range(shown):
            ax = axes[r, c]
            ax.imshow(mid_slices(np.asarray(volumes[c, 0], dtype=np.float32))[view], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(names[c], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("raw mid-slices, no overlay, one window (0 to 1): synthetic rows above real rows", fontsize=9)
    fig.tight_layout()
    _io.save_figure(path, fig)
    return path
