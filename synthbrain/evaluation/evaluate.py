"""``synthbrain evaluate``: one report on a generator, every number beside its real-versus-real
baseline.

Data flow: the real prepared cohort (the one the model was trained on) is brought to the model's
grid and its subjects with complete covariates are split in two seeded halves, A and B. A trains
the evaluators (:mod:`synthbrain.evaluation.evaluators`; saved and reused) and is the reference
set; B scores the evaluators and plays "real" in every real-versus-real baseline, at the same
sample size as the synthetic set it is compared with. Then ``n`` volumes are generated with
covariates drawn from the model's training distribution and measured:

- detail and variety (is it the average brain?): per volume, the share of spectral power above
  0.25 cycles/voxel and the mean gradient magnitude inside the brain, and the distribution of L2
  distances between the volumes of one set, for real A, real B, the reconstructions of B and the
  samples, each as a ratio to real B (:func:`detail_and_variety`);
- realism: Fréchet distance, k-NN precision/recall and MMD on deep features (deepbet by
  default), and a classifier two-sample test on the volumes (spot the fake), with a positive
  control in the same run (real B against B blurred by a Gaussian of :data:`CONTROL_SIGMA` voxel)
  that marks its results unreliable when it fails, and a baseline classifier on the two detail
  statistics beside it (:func:`spot_the_fake`);
- diversity: mean 3D MS-SSIM between random pairs;
- conditioning: requested versus measured ventricular and brain volume (independent segmenter
  and the model's own label map), age (regressor) and sex (classifier);
- label faithfulness: Dice between the generated label map and the independent segmentation;
- memorisation: each synthetic volume's distance to its nearest training subject against the
  distances real subjects keep from the training set (held-out subjects when given, otherwise
  each training subject's nearest other training subject);
- the autoencoder's reconstructions of B, scored like the samples (realism, spot the fake), so a
  shortfall is pinned on the stage that causes it: a gap the reconstructions already show comes
  from the autoencoder, the rest from the diffusion stage.

The covariates are the model's own (its schema): volumes the label scheme can measure, age and
sex where the schema has them. A conditioning or faithfulness row whose evaluator is not accurate
on real B (:data:`RELIABLE`) is marked unreliable, and the report says so at the top.

Writes ``report.md`` (:mod:`synthbrain.evaluation.report`), ``report.json``, ``synthetic.tsv`` and
PNG figures (among them ``raw-slices.png``: raw mid-slices of samples above real subjects) into the
output folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from synthbrain import _io  # noqa: E402
from synthbrain.evaluation import report  # noqa: E402
from synthbrain.evaluation.evaluators import Evaluators, EvaluatorSettings  # noqa: E402
from synthbrain.evaluation.features import FeatureExtractor  # noqa: E402
from synthbrain.evaluation.metrics import (  # noqa: E402
    HIGH_FREQUENCY_CUTOFF,
    blurred_copy,
    classifier_positive_control,
    classifier_two_sample_test,
    conditioning_accuracy,
    feature_two_sample_test,
    frechet_distance,
    high_frequency_share,
    knn_precision_recall,
    mean_gradient_magnitude,
    mmd_permutation_test,
    nearest_neighbour_distances,
    nearest_neighbour_ratio,
    pairwise_distances,
    pairwise_ms_ssim,
)
from synthbrain.overlap import dice_per_class  # noqa: E402
from synthbrain.preprocessing.prepared import PreparedCohort  # noqa: E402

# What an evaluator must reach on real B for the rows it measures to count (documented in docs/evaluation.md):
# Pearson r for volumes and age, AUC for sex, median Dice for a class's label faithfulness.
RELIABLE = {"volume r": 0.8, "age r": 0.6, "sex AUC": 0.75, "class Dice": 0.6}

# The spot-the-fake test's positive control: real B against B blurred by a Gaussian of this many voxels (docs/evaluation.md).
CONTROL_SIGMA = 1.0

# How the detail and variety measures are taken (also written into report.json).
DETAIL_DEFINITIONS = {
    "brain": "the voxels the set's own label map calls brain (class > 0): real subjects' label maps (argmax of the class "
    "fractions), the reconstructions' decoded label map (as generate uses it), the samples' generated label map; every "
    "voxel outside it is set to 0 before any measure, in every set",
    "high-frequency share": f"per volume, 3D FFT power of the masked volume at radial frequency > {HIGH_FREQUENCY_CUTOFF} "
    "cycles/voxel divided by the power at every non-zero frequency (numpy.fft.fftn, numpy.fft.fftfreq); mean over volumes",
    "mean gradient": "per volume, mean over brain voxels of the gradient magnitude of the masked volume (numpy.gradient, "
    "central differences, intensity units per voxel, intensities in [0, 1]); mean over volumes",
    "pairwise L2": "L2 distance (intensities in [0, 1]) between every pair of masked volumes of one set "
    "(scipy.spatial.distance.pdist); median and quartiles",
    "ratios": "to real (B): B is the set the reconstructions are made from and stands for real in every baseline; "
    "real (A) / real (B) shows the real-versus-real spread",
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


@_io.writes_folder("out")  # one evaluation per report folder
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
    ``sampling``: ``steps``, ``sampler``, ``guidance_scale``, ``timestep_spacing`` (default: the model's).
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
    names = list(generator.schema.names)
    volumes = [name for name in names if name in scheme.coarse_volumes]
    complete, part_a, part_b = _split(table, names, real, seed)
    extractor = FeatureExtractor(feature_network)

    evaluator_folder = Path(evaluators) if evaluators else out / "evaluators"
    judges = _load_or_fit_evaluators(
        evaluator_folder, cohort, images[part_a], fractions[part_a], table.loc[part_a], names, grid, extractor, settings, progress
    )
    table_b = table.loc[part_b].reset_index(drop=True)
    real_measured, real_segmentation = judges.measure(images[part_b])
    accuracy = judges.score(real_measured, real_segmentation, fractions[part_b], table_b)

    generated = generator.generate(n=n, seed=seed, progress=progress, **sampling)
    synthetic, own_labels, requested = generated.images.float(), generated.labels, generated.covariates.reset_index(drop=True)
    measured, segmentation = judges.measure(synthetic)
    own = pd.DataFrame([scheme.measure_coarse_volumes(lab.numpy(), grid.voxel_volume_mm3) for lab in own_labels])
    per_volume = pd.concat([requested, measured.add_prefix("measured_"), own[volumes].add_prefix("own_labels_")], axis=1)
    _io.write_table(out / "synthetic.tsv", per_volume)

    m = len(part_b)
    rng = np.random.default_rng(seed)
    subsets = [np.sort(rng.choice(n, size=min(m, n), replace=False)) for _ in range(5)]
    features = {"A": extractor(images[part_a], grid.spacing), "B": extractor(images[part_b], grid.spacing)}
    features["synthetic"] = extractor(synthetic, grid.spacing)
    reconstructed, reconstructed_brain = _reconstruct(generator, images[part_b], fractions[part_b])
    features["reconstructions"] = extractor(reconstructed, grid.spacing)
    realism = _realism(features, subsets, seed)
    sets = {
        "real (A)": (images[part_a], fractions[part_a].argmax(1, keepdim=True) > 0),
        "real (B)": (images[part_b], fractions[part_b].argmax(1, keepdim=True) > 0),
        "autoencoder reconstructions of B": (reconstructed, reconstructed_brain),
        "synthetic": (synthetic, own_labels[:, None] > 0),
    }
    brain_b = sets["real (B)"][1]
    sets["real (B) blurred (positive control)"] = (blurred_copy(images[part_b], CONTROL_SIGMA, brain_b), brain_b)
    detail, statistics = detail_and_variety(sets)
    c2st, control, baseline = spot_the_fake(sets, statistics, seed=seed, epochs=c2st_epochs, progress=progress)
    scales = int(min(3, 1 + np.floor(np.log2(min(grid.shape) / 7))))  # 3 scales of a 7-voxel window where the grid allows
    diversity = {
        "synthetic": pairwise_ms_ssim(synthetic[subsets[0]], pairs=200, seed=seed, scales=scales),
        "real (B)": pairwise_ms_ssim(images[part_b], pairs=200, seed=seed, scales=scales),
    }
    conditioning = _conditioning(requested, measured, own, table_b, real_measured, volumes, accuracy)
    faithfulness = _faithfulness(scheme, own_labels, segmentation, fractions[part_b].argmax(1), real_segmentation)
    memorisation = _memorisation(synthetic, images, held_out, grid)

    figures = {
        "montage": report.montage_figure(
            out / "montage.png", synthetic, own_labels, requested, scheme.class_names, grid.spacing, generator.units
        ),
        "histograms": report.histograms(out / "intensity-histograms.png", synthetic, own_labels, images[part_b], fractions[part_b]),
        "conditioning": report.scatter(out / "conditioning.png", requested, measured, own, table_b, real_measured, volumes),
        "nearest": report.nearest_pairs(out / "nearest-neighbours.png", synthetic, images, table, memorisation),
        "raw slices": report.raw_slices(out / "raw-slices.png", synthetic, images[part_b], table_b["subject_id"]),
    }
    unreliable = [] if control["passed"] else ["spot the fake (its positive control failed)"]
    unreliable += [f"{r['covariate']} ({r['requested vs measured by']})" for r in conditioning.to_dict("records") if not r["reliable"]]
    unreliable += [f"label faithfulness of {c}" for c, ok in zip(faithfulness["class"], faithfulness["reliable"]) if not ok]
    summary = {
        "model": _model_name(generated.provenance["model"]),
        "sampling": {k: generated.provenance[k] for k in ("sampler", "steps", "guidance_scale", "timestep_spacing")},
        "covariates": names,
        "reliability_thresholds": RELIABLE,
        "unreliable": unreliable,
        "n_synthetic": n,
        "seed": seed,
        "real": str(real),
        "real_subjects": {"complete": int(len(complete)), "A (evaluators, reference)": int(len(part_a)), "B (baseline)": int(m)},
        "feature_network": extractor.name,
        "evaluators": {"folder": str(evaluator_folder), "settings": asdict(settings), "accuracy_on_B": accuracy},
        "detail_variety": detail.to_dict("records"),
        "detail_variety_definitions": DETAIL_DEFINITIONS,
        "realism": realism.to_dict("records"),
        "c2st": c2st,
        "c2st_control": control,
        "c2st_baseline": baseline,
        "diversity_ms_ssim": diversity,
        "ms_ssim_scales": scales,
        "conditioning": conditioning.to_dict("records"),
        "label_faithfulness_median_dice": faithfulness.to_dict("records"),
        "memorisation": {k: v for k, v in memorisation.items() if k not in ("synthetic_distances", "real_distances", "nearest")},
        "paper": report.PAPER,
        "figures": {k: v.name for k, v in figures.items()},
    }
    _io.write_json(out / "report.json", summary)
    text = report.markdown(summary, realism, c2st, diversity, conditioning, faithfulness, accuracy, memorisation)
    _io.write_text(out / "report.md", text)
    return summary


def _model_name(model) -> str:
    from synthbrain.model_folder import embedded_name

    name = str(model.get("path") or model.get("repo_id") or "an unsaved model") if isinstance(model, dict) else str(model)
    return embedded_name(name) or _io.shown_path(name)


def _split(table: pd.DataFrame, names: list[str], real, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``table`` with every covariate of ``names`` (sorted), and their seeded halves A and
    B (each sorted; B takes the odd one out)."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise ValueError(f"real={str(real)!r}: no column for the model's covariates {missing}; allowed: a cohort with {names}")
    complete = np.flatnonzero(table[names].notna().all(axis=1).to_numpy())
    if len(complete) < 8:
        raise ValueError(f"real={str(real)!r}: {len(complete)} subjects with every covariate {names}; allowed: >= 8")
    order = np.random.default_rng(seed).permutation(complete)
    return complete, np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])


def _load_or_fit_evaluators(folder: Path, cohort, images, fractions, table, names, grid, extractor, settings, progress) -> Evaluators:
    """The evaluators saved in ``folder`` when their fingerprint (cohort, subjects of A, settings,
    features, covariates) matches; otherwise trained on A's ``images``, ``fractions`` and ``table`` and saved there."""
    fingerprint = _fingerprint(cohort, table["subject_id"], settings, extractor.name, names)
    saved = folder / "evaluators.json"
    if saved.is_file() and _io.read_json(saved, "the evaluators' record").get("fingerprint") == fingerprint:
        return Evaluators.load(folder, extractor)
    judges = Evaluators.fit(
        images,
        fractions,
        table,
        cohort.label_scheme,
        grid.voxel_volume_mm3,
        grid.spacing,
        extractor,
        settings,
        fingerprint=fingerprint,
        progress=progress,
        covariates=tuple(names),
    )
    judges.save(folder)
    return judges


def detail_and_variety(sets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Detail and variety of each named set of (volumes (N, 1, D, H, W) in [0, 1], brain (N, 1, D, H, W)
    bool), as :data:`DETAIL_DEFINITIONS` says: one row per set with its number of volumes, the mean
    high-frequency share and mean gradient magnitude over its volumes, the median and quartiles of its
    pairwise L2 distances, and each of the three as a ratio to the set named ``real (B)`` (which must
    be present). Also returns each set's per-volume statistics (N, 2): high-frequency share, mean
    gradient (for :func:`spot_the_fake`'s baseline classifier)."""
    rows, statistics = [], {}
    for name, (volumes, brain) in sets.items():
        statistics[name] = np.stack([high_frequency_share(volumes, brain), mean_gradient_magnitude(volumes, brain)], axis=1)
        q1, median, q3 = np.percentile(pairwise_distances(volumes, brain), [25, 50, 75])
        rows.append(
            {
                "set": name,
                "n": len(volumes),
                "high-frequency share": float(statistics[name][:, 0].mean()),
                "mean gradient": float(statistics[name][:, 1].mean()),
                "pairwise L2 median": float(median),
                "pairwise L2 q1": float(q1),
                "pairwise L2 q3": float(q3),
            }
        )
    table = pd.DataFrame(rows)
    real = table.set_index("set").loc["real (B)"]
    for measure in ("high-frequency share", "mean gradient", "pairwise L2 median"):
        table[f"{measure} / real (B)"] = table[measure] / real[measure]
    return table, statistics


def spot_the_fake(
    sets: dict, statistics: dict[str, np.ndarray], *, seed: int, epochs: int, progress: bool = False
) -> tuple[dict, dict, dict]:
    """The classifier two-sample test (small 3D CNN, ``epochs`` of training) on synthetic volumes
    against all real ones, the reconstructions of B against A, and B against A, each with ``reliable``:
    whether the same classifier, in the same run, told real B from B blurred by a Gaussian of
    :data:`CONTROL_SIGMA` voxel (:func:`~synthbrain.evaluation.metrics.classifier_positive_control`).
    ``sets`` as for :func:`detail_and_variety` (with ``real (B) blurred (positive control)``);
    ``statistics`` its per-volume statistics. Returns the test per comparison, the control (its test,
    ``passed``, ``reason``), and per comparison and for the control the baseline classifier:
    cross-validated logistic regression on the two detail statistics
    (:func:`~synthbrain.evaluation.metrics.feature_two_sample_test`) and the AUC of each statistic
    alone, scoring the volume with the lower value as the fake (1: every fake has less detail than
    every real volume; 0.5: no difference; below 0.5: the fakes have more). ``progress``: a bar over
    the four classifier trainings (the control and three comparisons)."""
    volumes = {name: x for name, (x, _) in sets.items()}
    both = ("real (A)", "real (B)")
    real_all = (torch.cat([volumes[k] for k in both]), np.concatenate([statistics[k] for k in both]))
    comparisons = {  # name: (real volumes, their statistics, other volumes, their statistics)
        "synthetic vs real": (*real_all, volumes["synthetic"], statistics["synthetic"]),
        "autoencoder reconstructions of B vs real A": (
            volumes["real (A)"],
            statistics["real (A)"],
            volumes["autoencoder reconstructions of B"],
            statistics["autoencoder reconstructions of B"],
        ),
        "real vs real (B vs A)": (volumes["real (A)"], statistics["real (A)"], volumes["real (B)"], statistics["real (B)"]),
    }
    blurred = "real (B) blurred (positive control)"
    bar = tqdm(total=1 + len(comparisons), desc="spot the fake", unit="test", disable=not progress, leave=False)
    test = classifier_positive_control(volumes["real (B)"], sets["real (B)"][1], seed=seed, sigma=CONTROL_SIGMA, epochs=epochs)
    bar.update()
    control = {"comparison": f"real (B) vs {blurred}", "sigma_voxels": CONTROL_SIGMA, **test.result._asdict()}
    control |= {"passed": test.passed, "reason": test.reason}
    c2st = {}
    for name, (real, _, other, _) in comparisons.items():
        c2st[name] = {**classifier_two_sample_test(real, other, seed=seed, epochs=epochs)._asdict(), "reliable": test.passed}
        bar.update()
    bar.close()
    baseline = {}
    for name, (real, other) in {
        **{name: (r, o) for name, (_, r, _, o) in comparisons.items()},
        control["comparison"]: (statistics["real (B)"], statistics[blurred]),
    }.items():
        labels = np.repeat([0, 1], [len(real), len(other)])
        alone = {
            f"AUC {measure} alone": float(roc_auc_score(labels, -np.concatenate([real[:, k], other[:, k]])))
            for k, measure in enumerate(("high-frequency share", "mean gradient"))
        }
        baseline[name] = {**feature_two_sample_test(real, other, seed=seed)._asdict(), **alone}
    return c2st, control, baseline


def _fingerprint(cohort: PreparedCohort, subjects, settings: EvaluatorSettings, feature_name: str, covariates: list[str]) -> str:
    params_hash = cohort.manifest().get("params_hash")
    key = json.dumps([params_hash, cohort.downsample, sorted(subjects), asdict(settings), feature_name, covariates])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def _reconstruct(generator, images: torch.Tensor, fractions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's autoencoder's reconstructions (posterior mean, decoded) of real images
    (N, 1, ...) with their class fractions (N, C, ...), background set to 0 as generate does, and
    their brain (N, 1, ...) bool: the decoded label map's non-background voxels (those of the
    input's label map for an autoencoder without a label head)."""
    autoencoder, out, brains = generator.autoencoder, [], []
    device = next(autoencoder.parameters()).device
    for start in range(0, len(images), 4):
        image = images[start : start + 4].to(device)
        labels = fractions[start : start + 4].to(device) if autoencoder.config.num_classes else None
        decoded, classes = autoencoder.reconstruct(image, labels)
        brain = (classes if classes is not None else fractions[start : start + 4].argmax(1).to(device))[:, None] > 0
        out.append(decoded.cpu())
        brains.append(brain.cpu())
    return torch.cat(out), torch.cat(brains)


def _realism(features: dict[str, np.ndarray], subsets: list[np.ndarray], seed: int) -> pd.DataFrame:
    """Synthetic (subsets of B's size, averaged), B's reconstructions and B itself, each against A,
    on the same features."""
    rows = []
    for name, sets in (
        ("real (B) vs A", [features["B"]]),
        ("autoencoder reconstructions of B vs A", [features["reconstructions"]]),
        ("synthetic vs A", [features["synthetic"][s] for s in subsets]),
    ):
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


def _conditioning(requested, measured, own, real_table, real_measured, volumes: list[str], accuracy: dict) -> pd.DataFrame:
    """Requested against measured covariates, synthetic and real (B), with ``reliable``: whether the
    evaluator reading them is accurate enough on real B (:data:`RELIABLE`)."""
    rows = []
    continuous = [*volumes, *(["age"] if "age" in measured else [])]
    for name in continuous:
        threshold = RELIABLE["age r"] if name == "age" else RELIABLE["volume r"]
        reliable = bool(accuracy[name]["pearson_r"] >= threshold)
        for source, want, got in (
            ("synthetic, independent evaluator", requested[name], measured[name]),
            *([("synthetic, own label map", requested[name], own[name])] if name in volumes else []),
            ("real (B), independent evaluator", real_table[name], real_measured[name]),
        ):
            want, got = want.to_numpy(float), got.to_numpy(float)
            if want.std() > 0 and got.std() > 0:
                acc = conditioning_accuracy(want, got)
                r, rho, mae, bias = acc.pearson_r, float(stats.spearmanr(want, got)[0]), acc.mae, acc.bias
            else:  # correlation is undefined for a constant; MAE and bias are not
                r, rho, mae, bias = np.nan, np.nan, float(np.abs(got - want).mean()), float((got - want).mean())
            own_labels = source == "synthetic, own label map"  # measured by the model's own label map, not an evaluator
            rows.append(
                {
                    "covariate": name,
                    "requested vs measured by": source,
                    "n": len(want),
                    "Pearson r": r,
                    "Spearman r": rho,
                    "MAE": mae,
                    "bias": bias,
                    "reliable": True if own_labels else reliable,
                }
            )
    if "p_male" in measured:
        reliable = bool(accuracy["sex"]["auc"] >= RELIABLE["sex AUC"])
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
                    "reliable": reliable,
                }
            )
    return pd.DataFrame(rows)


def _faithfulness(scheme, own_labels, segmentation, real_labels, real_segmentation) -> pd.DataFrame:
    """Median Dice per class (background left out) of the generated label maps (N, ...) against the
    independent segmentation of the generated images, and of real B's label maps against the
    segmentation of B's images, with ``reliable``: the real Dice reaches :data:`RELIABLE`."""
    faithfulness = pd.DataFrame(
        {
            "class": scheme.class_names[1:],
            "synthetic": np.nanmedian(
                [dice_per_class(a.numpy(), b.numpy(), scheme.num_classes) for a, b in zip(own_labels, segmentation)], 0
            )[1:],
            "real (B)": np.nanmedian(
                [dice_per_class(a.numpy(), b.numpy(), scheme.num_classes) for a, b in zip(real_labels, real_segmentation)], 0
            )[1:],
        }
    )
    faithfulness["reliable"] = faithfulness["real (B)"] >= RELIABLE["class Dice"]
    return faithfulness


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
