"""``synthbrain evaluate``: one report on a generator, every number beside its real-versus-real
baseline.

Data flow: the real prepared cohort (the one the model was trained on) is brought to the model's
grid and its subjects with complete covariates are split in two seeded halves, A and B. A trains
the evaluators (:mod:`synthbrain.evaluation.evaluators`; saved and reused) and is the reference
set; B scores the evaluators and plays "real" in every real-versus-real baseline, at the same
sample size as the synthetic set it is compared with. Then ``n`` volumes are generated with
covariates drawn from the model's training distribution and measured:

- realism: Fréchet distance, k-NN precision/recall and MMD on deep features (deepbet by
  default), and a classifier two-sample test on the volumes;
- diversity: mean 3D MS-SSIM between random pairs;
- conditioning: requested versus measured ventricular and brain volume (independent segmenter
  and the model's own label map), age (regressor) and sex (classifier);
- label faithfulness: Dice between the generated label map and the independent segmentation;
- memorisation: each synthetic volume's distance to its nearest training subject against the
  distances real subjects keep from the training set (held-out subjects when given, otherwise
  each training subject's nearest other training subject).

Writes ``report.md``, ``report.json``, ``synthetic.tsv`` and PNG figures into the output folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from synthbrain import _io  # noqa: E402
from synthbrain.evaluation.evaluators import Evaluators, EvaluatorSettings  # noqa: E402
from synthbrain.evaluation.features import FeatureExtractor  # noqa: E402
from synthbrain.evaluation.metrics import (  # noqa: E402
    classifier_two_sample_test,
    conditioning_accuracy,
    frechet_distance,
    knn_precision_recall,
    mmd_permutation_test,
    nearest_neighbour_distances,
    nearest_neighbour_ratio,
    pairwise_ms_ssim,
)
from synthbrain.evaluation.segmenter import dice_per_class  # noqa: E402
from synthbrain.preprocessing.prepared import PreparedCohort  # noqa: E402
from synthbrain.preprocessing.qc import mid_slices, montage  # noqa: E402

VOLUMES = ("ventricular_volume", "brain_volume")
PAPER = {  # Pinaya et al. 2022 (../shared/reference/paper-model.md); other features and resolution, so for orientation only
    "ventricular_volume r": 0.972,
    "age r": 0.692,
    "MS-SSIM synthetic / real": (0.6555, 0.6536),
    "FID (MedicalNet) synthetic / real-vs-real": (0.0076, 0.0005),
}


def load_cohort_on_grid(real: str | Path, grid) -> tuple[PreparedCohort, torch.Tensor, torch.Tensor]:
    """The prepared cohort averaged onto ``grid`` (a model's image grid): the cohort, its images
    (N, 1, ...) and label fractions (N, C, ...)."""
    cohort = PreparedCohort.load(real)
    factor = grid.spacing / cohort.grid.spacing
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
        raise ValueError(f"real={str(real)!r}: {cohort.grid.spacing} mm voxels; allowed: a divisor of the model's {grid.spacing} mm")
    cohort = PreparedCohort.load(real, int(round(factor)))
    if cohort.output_grid.shape != tuple(grid.shape):
        raise ValueError(f"real={str(real)!r}: averaged to {cohort.output_grid.shape}; allowed: the model's grid {tuple(grid.shape)}")
    if cohort.label_scheme is None:
        raise ValueError(f"real={str(real)!r}: a cohort without label maps; allowed: one prepared with --labels")
    items = [cohort[i] for i in range(len(cohort))]
    labels = torch.stack([it["labels"] for it in items])
    if labels.ndim == 4:  # class indices (no averaging): one-hot fractions
        labels = torch.nn.functional.one_hot(labels, cohort.label_scheme.num_classes).movedim(-1, 1).float()
    return cohort, torch.stack([it["image"] for it in items]), labels


def evaluate(
    generator,
    real: str | Path,
    out: str | Path,
    *,
    n: int = 200,
    seed: int = 0,
    held_out: str | Path | None = None,
    evaluators: str | Path | None = None,
    settings: EvaluatorSettings = EvaluatorSettings(),
    feature_network: str | Path | None = None,
    sampling: dict | None = None,
    c2st_epochs: int = 20,
    progress: bool = True,
) -> dict:
    """Evaluate ``generator`` (a :class:`~synthbrain.BrainGenerator`) against the prepared cohort
    ``real`` it was trained on; write the report into ``out`` and return its numbers.

    ``held_out``: a prepared cohort of real subjects the generator never saw (for the memorisation
    baseline). ``evaluators``: folder of saved evaluator networks (default ``out/evaluators``),
    reused when trained on the same subjects with the same settings, trained and saved otherwise.
    ``sampling``: ``steps``, ``sampler``, ``guidance_scale`` (default: the model's).
    """
    if not (isinstance(n, int) and n >= 4):
        raise ValueError(f"n={n!r}; allowed: an integer >= 4")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
    grid = generator.image_grid
    cohort, images, fractions = load_cohort_on_grid(real, grid)
    scheme = cohort.label_scheme
    if list(scheme.class_names) != list(generator.label_classes or []):
        raise ValueError(f"real={str(real)!r}: classes {scheme.class_names}; allowed: the model's {generator.label_classes}")
    table = cohort.table.reset_index(drop=True)
    complete = np.flatnonzero(table[["sex", "age", *VOLUMES]].notna().all(axis=1).to_numpy())
    if len(complete) < 8:
        raise ValueError(f"real={str(real)!r}: {len(complete)} subjects with sex, age and volumes; allowed: >= 8")
    order = np.random.default_rng(seed).permutation(complete)
    part_a, part_b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    extractor = FeatureExtractor(feature_network)

    evaluator_folder = Path(evaluators) if evaluators else out / "evaluators"
    fingerprint = _fingerprint(cohort, table.loc[part_a, "subject_id"], settings, extractor.name)
    saved = evaluator_folder / "evaluators.json"
    if saved.is_file() and json.loads(saved.read_text())["fingerprint"] == fingerprint:
        judges = Evaluators.load(evaluator_folder, extractor)
    else:
        judges = Evaluators.fit(
            images[part_a],
            fractions[part_a],
            table.loc[part_a],
            scheme,
            grid.voxel_volume_mm3,
            grid.spacing,
            extractor,
            settings,
            fingerprint=fingerprint,
            progress=progress,
        )
        judges.save(evaluator_folder)
    table_b = table.loc[part_b].reset_index(drop=True)
    real_measured, real_segmentation = judges.measure(images[part_b])
    accuracy = judges.score(real_measured, real_segmentation, fractions[part_b], table_b)

    generated = generator.generate(n=n, seed=seed, progress=progress, **sampling)
    synthetic, own_labels, requested = generated.images.float(), generated.labels, generated.covariates.reset_index(drop=True)
    measured, segmentation = judges.measure(synthetic)
    own = pd.DataFrame([scheme.measure_coarse_volumes(lab.numpy(), grid.voxel_volume_mm3) for lab in own_labels])
    per_volume = pd.concat([requested, measured.add_prefix("measured_"), own[list(VOLUMES)].add_prefix("own_labels_")], axis=1)
    _io.write_table(out / "synthetic.tsv", per_volume)

    m = len(part_b)
    rng = np.random.default_rng(seed)
    subsets = [np.sort(rng.choice(n, size=min(m, n), replace=False)) for _ in range(5)]
    features = {"A": extractor(images[part_a], grid.spacing), "B": extractor(images[part_b], grid.spacing)}
    features["synthetic"] = extractor(synthetic, grid.spacing)
    realism = _realism(features, subsets, seed)
    c2st = {
        "synthetic vs real": classifier_two_sample_test(images[complete], synthetic, seed=seed, epochs=c2st_epochs)._asdict(),
        "real vs real (B vs A)": classifier_two_sample_test(images[part_a], images[part_b], seed=seed, epochs=c2st_epochs)._asdict(),
    }
    scales = int(min(3, 1 + np.floor(np.log2(min(grid.shape) / 7))))  # 3 scales of a 7-voxel window where the grid allows
    diversity = {
        "synthetic": pairwise_ms_ssim(synthetic[subsets[0]], pairs=200, seed=seed, scales=scales),
        "real (B)": pairwise_ms_ssim(images[part_b], pairs=200, seed=seed, scales=scales),
    }
    conditioning = _conditioning(requested, measured, own, table_b, real_measured)
    faithfulness = pd.DataFrame(
        {
            "class": scheme.class_names[1:],
            "synthetic": np.nanmedian(
                [dice_per_class(a.numpy(), b.numpy(), scheme.num_classes) for a, b in zip(own_labels, segmentation)], 0
            )[1:],
            "real (B)": np.nanmedian(
                [dice_per_class(a, b.numpy(), scheme.num_classes) for a, b in zip(fractions[part_b].argmax(1).numpy(), real_segmentation)],
                0,
            )[1:],
        }
    )
    memorisation = _memorisation(synthetic, images, held_out, grid)

    figures = {
        "montage": _montage(out / "montage.png", synthetic, own_labels, requested, scheme.num_classes),
        "histograms": _histograms(out / "intensity-histograms.png", synthetic, own_labels, images[part_b], fractions[part_b]),
        "conditioning": _scatter(out / "conditioning.png", requested, measured, own, table_b, real_measured),
        "nearest": _nearest_pairs(out / "nearest-neighbours.png", synthetic, images, table, memorisation),
    }
    summary = {
        "model": _model_name(generated.provenance["model"]),
        "sampling": {k: generated.provenance[k] for k in ("sampler", "steps", "guidance_scale")},
        "n_synthetic": n,
        "seed": seed,
        "real": str(real),
        "real_subjects": {"complete": int(len(complete)), "A (evaluators, reference)": int(len(part_a)), "B (baseline)": int(m)},
        "feature_network": extractor.name,
        "evaluators": {"folder": str(evaluator_folder), "settings": asdict(settings), "accuracy_on_B": accuracy},
        "realism": realism.to_dict("records"),
        "c2st": c2st,
        "diversity_ms_ssim": diversity,
        "ms_ssim_scales": scales,
        "conditioning": conditioning.to_dict("records"),
        "label_faithfulness_median_dice": faithfulness.to_dict("records"),
        "memorisation": {k: v for k, v in memorisation.items() if k not in ("synthetic_distances", "real_distances", "nearest")},
        "paper": PAPER,
        "figures": {k: v.name for k, v in figures.items()},
    }
    _io.write_json(out / "report.json", summary)
    _io.write_text(out / "report.md", _markdown(summary, realism, c2st, diversity, conditioning, faithfulness, accuracy, memorisation))
    return summary


def _model_name(model) -> str:
    from synthbrain.generator import DEFAULT_MODEL

    name = str(model.get("path") or model.get("repo_id") or "an unsaved model") if isinstance(model, dict) else str(model)
    return "default" if Path(name) == DEFAULT_MODEL else _io.shown_path(name)


def _fingerprint(cohort: PreparedCohort, subjects, settings: EvaluatorSettings, feature_name: str) -> str:
    manifest = json.loads((cohort.root / "manifest.json").read_text())
    key = json.dumps([manifest.get("params_hash"), cohort.downsample, sorted(subjects), asdict(settings), feature_name])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _realism(features: dict[str, np.ndarray], subsets: list[np.ndarray], seed: int) -> pd.DataFrame:
    """Synthetic (subsets of B's size, averaged) and B, each against A, on the same features."""
    rows = []
    for name, sets in (("real (B) vs A", [features["B"]]), ("synthetic vs A", [features["synthetic"][s] for s in subsets])):
        fd = [frechet_distance(features["A"], x) for x in sets]
        pr = [knn_precision_recall(features["A"], x, k=3) for x in sets]
        test = mmd_permutation_test(features["A"], sets[0], seed=seed)
        rows.append(
            {
                "comparison": name,
                "n": len(sets[0]),
                "Fréchet distance": float(np.mean(fd)),
                "precision": float(np.mean([p.precision for p in pr])),
                "recall": float(np.mean([p.recall for p in pr])),
                "MMD²": test.mmd2,
                "MMD p": test.p_value,
            }
        )
    return pd.DataFrame(rows)


def _conditioning(requested, measured, own, real_table, real_measured) -> pd.DataFrame:
    rows = []
    for name in (*VOLUMES, "age"):
        for source, want, got in (
            ("synthetic, independent evaluator", requested[name], measured[name]),
            *([("synthetic, own label map", requested[name], own[name])] if name in VOLUMES else []),
            ("real (B), independent evaluator", real_table[name], real_measured[name]),
        ):
            want, got = want.to_numpy(float), got.to_numpy(float)
            if want.std() > 0 and got.std() > 0:
                acc = conditioning_accuracy(want, got)
                r, rho, mae, bias = acc.pearson_r, float(stats.spearmanr(want, got)[0]), acc.mae, acc.bias
            else:  # correlation is undefined for a constant; MAE and bias are not
                r, rho, mae, bias = np.nan, np.nan, float(np.abs(got - want).mean()), float((got - want).mean())
            rows.append(
                {
                    "covariate": name,
                    "requested vs measured by": source,
                    "n": len(want),
                    "Pearson r": r,
                    "Spearman r": rho,
                    "MAE": mae,
                    "bias": bias,
                }
            )
    for source, want, p in (
        ("synthetic, independent evaluator", requested["sex"], measured["p_male"]),
        ("real (B), independent evaluator", real_table["sex"], real_measured["p_male"]),
    ):
        hits = (p.to_numpy() > 0.5) == (want.to_numpy() == "M")
        rows.append(
            {
                "covariate": "sex",
                "requested vs measured by": source,
                "n": len(hits),
                "Pearson r": np.nan,
                "MAE": np.nan,
                "bias": np.nan,
                "accuracy": float(hits.mean()),
            }
        )
    return pd.DataFrame(rows)


def _memorisation(synthetic: torch.Tensor, training: torch.Tensor, held_out, grid) -> dict:
    """L2 distances between volumes (intensities in [0, 1], the model grid), and the ratio of the
    nearest to the second-nearest training subject's distance (0 for a copy)."""
    flat_training, flat_synthetic = training.flatten(1).numpy(), synthetic.flatten(1).numpy()
    ours = nearest_neighbour_distances(flat_synthetic, flat_training)
    ratio = nearest_neighbour_ratio(flat_synthetic, flat_training)
    if held_out is not None:
        _, held_images, _ = load_cohort_on_grid(held_out, grid)
        flat_held = held_images.flatten(1).numpy()
        theirs, their_ratio = (
            nearest_neighbour_distances(flat_held, flat_training).distances,
            nearest_neighbour_ratio(flat_held, flat_training),
        )
        baseline = "held-out real subjects"
    else:
        theirs = nearest_neighbour_distances(flat_training, flat_training, exclude_self=True).distances
        their_ratio = nearest_neighbour_ratio(flat_training, flat_training, exclude_self=True)
        baseline = "each training subject's nearest other training subject (no held-out cohort given)"
    return {
        "baseline": baseline,
        "synthetic_distances": ours.distances,
        "nearest": ours.indices,
        "real_distances": theirs,
        "synthetic_median": float(np.median(ours.distances)),
        "synthetic_min": float(ours.distances.min()),
        "real_median": float(np.median(theirs)),
        "real_min": float(theirs.min()),
        "flagged": np.flatnonzero(ours.distances < theirs.min()).tolist(),
        "ratio_synthetic_median": float(np.median(ratio)),
        "ratio_synthetic_min": float(ratio.min()),
        "ratio_real_median": float(np.median(their_ratio)),
        "ratio_real_min": float(their_ratio.min()),
        "ratio_flagged": np.flatnonzero(ratio < their_ratio.min()).tolist(),
    }


def _markdown(summary, realism, c2st, diversity, conditioning, faithfulness, accuracy, memorisation) -> str:
    md = _io.markdown_table
    s = summary
    evaluator_rows = pd.DataFrame(
        [
            *(
                {"measure": f"{k} (Pearson r / MAE)", "on real B": f"{accuracy[k]['pearson_r']:.3f} / {accuracy[k]['mae']:.2f}"}
                for k in (*VOLUMES, "age")
            ),
            {"measure": "sex (accuracy / AUC)", "on real B": f"{accuracy['sex']['accuracy']:.3f} / {accuracy['sex']['auc']:.3f}"},
            *({"measure": f"segmenter Dice, {c}", "on real B": f"{d:.3f}"} for c, d in list(accuracy["median_dice"].items())[1:]),
        ]
    )
    c2st_rows = pd.DataFrame([{"comparison": k, **v} for k, v in c2st.items()])
    flagged = memorisation["flagged"]
    return (
        "\n\n".join(
            [
                f"# Evaluation of `{s['model']}`",
                f"{s['n_synthetic']} synthetic volumes ({s['sampling']['sampler']}, {s['sampling']['steps']} steps, guidance "
                f"{s['sampling']['guidance_scale']}; covariates drawn from the model's training distribution, seed {s['seed']}) against "
                f"`{s['real']}`: {s['real_subjects']['complete']} real subjects with complete covariates, split into A "
                f"({s['real_subjects']['A (evaluators, reference)']}: trains the evaluators, reference set) and B "
                f"({s['real_subjects']['B (baseline)']}: scores the evaluators, real-versus-real baseline). Every synthetic number "
                "stands beside the same number for real subjects.",
                "## Evaluators (trained on real A only), their accuracy on real B",
                md(evaluator_rows),
                f"## Realism on deep features ({s['feature_network']})",
                md(realism),
                f"Synthetic rows: mean over 5 random subsets of {realism['n'].iloc[1]} synthetic volumes (B's size), so the "
                "sample-size bias of the Fréchet distance is the same in both rows. MMD: RBF kernel, median bandwidth, permutation "
                "p-value (200 permutations; first subset).",
                "## Spot the fake: classifier two-sample test (small 3D CNN, accuracy on held-apart volumes; 0.5 = indistinguishable)",
                md(c2st_rows),
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


def _listing(indices: list[int]) -> str:
    if not indices:
        return "none"
    return f"{len(indices)} ({', '.join(map(str, indices[:20]))}{', ...' if len(indices) > 20 else ''})"


def _montage(path: Path, images, labels, covariates, num_classes: int, rows: int = 6) -> Path:
    titles = [
        f"synthetic {i}: {r.sex}, {r.age:.0f} y, ventricles {r.ventricular_volume:.0f} mL" for i, r in covariates.head(rows).iterrows()
    ]
    montage(path, [x[0].numpy() for x in images[:rows]], [lab.numpy() for lab in labels[:rows]], titles, num_classes=num_classes)
    return path


def _histograms(path: Path, synthetic, own_labels, real, real_fractions) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    bins = np.linspace(0, 1, 101)
    for name, x, brain in (("real (B)", real, real_fractions.argmax(1) > 0), ("synthetic", synthetic, own_labels > 0)):
        values = x[:, 0][brain].numpy()
        ax.hist(values, bins=bins, density=True, histtype="step", lw=1.5, label=f"{name} ({len(x)} volumes)")
    ax.set_xlabel("intensity inside the brain (own label map)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig)
    plt.close(fig)
    return path


def _scatter(path: Path, requested, measured, own, real_table, real_measured) -> Path:
    """Requested versus measured, as the paper's Figure 3: volumes, age, and p(male) by requested sex."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), dpi=100)
    for ax, name in zip(axes, (*VOLUMES, "age")):
        ax.scatter(requested[name], measured[name], s=10, alpha=0.6, label="synthetic, independent evaluator")
        if name in VOLUMES:
            ax.scatter(requested[name], own[name], s=10, alpha=0.6, marker="^", label="synthetic, own label map")
        ax.scatter(real_table[name], real_measured[name], s=14, alpha=0.8, marker="s", label="real (B), independent evaluator")
        low, high = np.nanmin([requested[name].min(), real_table[name].min()]), np.nanmax([requested[name].max(), real_table[name].max()])
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_xlabel(f"requested / true {name}")
        ax.set_ylabel("measured")
    axes[0].legend(fontsize=7)
    for offset, (name, want, p) in enumerate(
        (("synthetic", requested["sex"], measured["p_male"]), ("real (B)", real_table["sex"], real_measured["p_male"]))
    ):
        for k, sex in enumerate(("F", "M")):
            values = p[want.to_numpy() == sex].to_numpy()
            axes[3].scatter(np.full(len(values), 2 * k + offset) + np.linspace(-0.2, 0.2, len(values)), values, s=8, alpha=0.6)
    axes[3].set_xticks(range(4), ["F synth", "F real", "M synth", "M real"])
    axes[3].axhline(0.5, color="k", lw=0.8, ls="--")
    axes[3].set_ylabel("predicted p(male)")
    fig.tight_layout()
    _io.save_figure(path, fig)
    plt.close(fig)
    return path


def _nearest_pairs(path: Path, synthetic, training, table, memorisation, pairs: int = 4) -> Path:
    """The synthetic volumes closest to a training subject, each beside that subject (axial mid-slices)."""
    closest = np.argsort(memorisation["synthetic_distances"])[:pairs]
    fig, axes = plt.subplots(2, len(closest), figsize=(2.6 * len(closest), 5.6), dpi=100, squeeze=False)
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
    plt.close(fig)
    return path
