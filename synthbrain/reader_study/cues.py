"""The cue check: does anything other than the image content tell real cases from synthetic ones?

Two kinds of test, on the case files of a study and its key:

- **Properties that must be identical** across all cases: file size, the header bytes (which hold
  grid, affine, dtype, scaling, description), the lowest and the highest value. A difference is a
  *cue* (a file artefact a reader or a browser could use), and ``create`` refuses the study.
- **Per-case statistics** compared between the real and the synthetic cases by the area under the
  ROC curve (AUC: the probability that a synthetic case has the larger value, ties counting half)
  and the two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``). Artefact statistics (faint
  background haze, isolated specks, number of grey levels, saturation, non-zero border) should
  carry no information: p < 0.01 flags a *possible cue*. Sharpness statistics (mean gradient
  magnitude inside the brain, share of high-frequency power) are flagged the same way: a generator
  that blurs lets a reader tell its cases by sharpness alone, without judging anatomy, and a model
  trained at a coarser resolution than the real cases does exactly that. Content statistics (brain
  size, mean and spread of brain intensity) are what readers are meant to judge; a difference there
  is reported as a content difference, not a cue.

With few cases the test has little power: a clean check at n = 40 does not prove there is no cue.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from synthbrain import _io
from synthbrain.evaluation.metrics import high_pass_share, mean_gradient_magnitude
from synthbrain.reader_study.study import KEY_DIR, load_study, read_case, truth_table

HEADER_BYTES = 352  # NIfTI-1: 348-byte header + 4-byte extension flag
ALPHA = 0.01
ARTEFACT = {
    "faint_share": "share of non-zero voxels at the faintest levels 1-5 of 255 (haze, or a dark tail the eye cannot tell from black)",
    "specks": "connected groups of non-zero voxels apart from the largest (isolated specks)",
    "grey_levels": "number of distinct grey levels",
    "saturated_share": "share of non-zero voxels at 255",
    "border_share": "share of non-zero voxels on the outer faces of the grid",
}
SHARPNESS = {
    "gradient_mean": "mean gradient magnitude inside the brain (grey levels per voxel, central differences)",
    "highfreq_share": "share of the brain's intensity variance above the scale of a Gaussian of sigma 1 voxel (high-pass residual)",
}
INTERIOR_VOXELS = 2  # sharpness is measured this many voxels in from the brain's edge (the edge itself is a shape, not a texture)
HIGHPASS_SIGMA = 1.0  # voxels
CONTENT = {
    "brain_share": "share of the grid inside the brain (non-zero)",
    "brain_mean": "mean brain intensity (0-255)",
    "brain_std": "standard deviation of brain intensity (0-255)",
}


def sharpness(volume: np.ndarray) -> dict[str, float]:
    """The sharpness statistics (:data:`SHARPNESS`) of a uint8 (X, Y, Z) case, over the brain
    (non-zero voxels) eroded by :data:`INTERIOR_VOXELS` (6-connected), so the brain's outline does
    not count; measured by the evaluation's functions with ``over`` that interior:

    - ``gradient_mean``: :func:`synthbrain.evaluation.metrics.mean_gradient_magnitude`, the mean of
      ``|grad v|`` (``numpy.gradient``, central differences; grey levels per voxel);
    - ``highfreq_share``: :func:`synthbrain.evaluation.metrics.high_pass_share`, ``sum(r^2) / sum((v - mean v)^2)``
      with the high-pass residual ``r = v - G(v)`` (``scipy.ndimage.gaussian_filter``, sigma
      :data:`HIGHPASS_SIGMA` voxel): near 1 for voxel-scale noise or detail, 0 for smooth intensity
      ramps; 0 for a constant brain. Not the evaluation's ``high_frequency_share``, whose Fourier
      transform over the whole grid counts the brain's outline as detail.

    Both are NaN (not measured; the cue check says on how many cases it measured) when no voxel lies
    that far inside the brain."""
    volume = np.asarray(volume, dtype=np.float64)
    interior = ndimage.binary_erosion(volume > 0, structure=ndimage.generate_binary_structure(3, 1), iterations=INTERIOR_VOXELS)
    if not interior.any():
        return {"gradient_mean": math.nan, "highfreq_share": math.nan}
    batch, over = volume[None, None], interior[None, None]  # the case is 0 outside the brain already: no further mask
    return {
        "gradient_mean": float(mean_gradient_magnitude(batch, over=over)[0]),
        "highfreq_share": float(high_pass_share(batch, over=over, sigma=HIGHPASS_SIGMA)[0]),
    }


def case_statistics(volume: np.ndarray) -> dict[str, float]:
    """The per-case statistics (see :data:`ARTEFACT`, :data:`SHARPNESS` and :data:`CONTENT`) of a
    uint8 (X, Y, Z) case."""
    nonzero = volume > 0
    values = volume[nonzero].astype(np.float64)
    count = max(int(nonzero.sum()), 1)
    components, n_components = ndimage.label(nonzero, structure=np.ones((3, 3, 3)))
    border = np.zeros_like(nonzero)
    border[[0, -1]], border[:, [0, -1]], border[:, :, [0, -1]] = True, True, True
    return {
        "faint_share": float(((volume >= 1) & (volume <= 5)).sum() / count),
        "specks": float(max(n_components - 1, 0)),
        "grey_levels": float(len(np.unique(volume))),
        "saturated_share": float((volume == 255).sum() / count),
        "border_share": float((nonzero & border).sum() / count),
        **sharpness(volume),
        "brain_share": float(nonzero.mean()),
        "brain_mean": float(values.mean()) if values.size else 0.0,
        "brain_std": float(values.std()) if values.size else 0.0,
    }


def auc_and_p(synthetic: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """AUC of ``synthetic`` against ``real`` (Mann-Whitney U / (n1 n2)) and the two-sided p-value;
    (0.5, 1.0) when all values are equal."""
    synthetic, real = np.asarray(synthetic, float), np.asarray(real, float)
    if np.ptp(np.concatenate([synthetic, real])) == 0:
        return 0.5, 1.0
    result = stats.mannwhitneyu(synthetic, real, alternative="two-sided")
    return float(result.statistic / (len(synthetic) * len(real))), float(result.pvalue)


def check_cues(folder: str | Path) -> dict[str, Any]:
    """Run the cue check on a study folder (its key is needed) and return the result: ``identical``
    (property -> whether all cases agree, and the distinct values), ``features`` (one row per
    statistic with AUC, p-value and medians per class), ``cues`` (file artefacts and possible cues,
    as sentences; empty when none is found) and ``content_differences``.

    Raises ValueError when the folder is not a complete study with a matching key.
    """
    folder = Path(folder)
    study = load_study(folder, key="required")
    truths = truth_table(folder)
    ids = study.case_ids
    is_synthetic = np.array([truths[c]["truth"] == "synthetic" for c in ids])
    raw = {c: study.case_file(c).read_bytes() for c in ids}
    volumes = {c: read_case(study.case_file(c)) for c in ids}
    properties = {
        "file size (bytes)": [len(raw[c]) for c in ids],
        "header (sha256 of the first 352 bytes)": [hashlib.sha256(raw[c][:HEADER_BYTES]).hexdigest()[:16] for c in ids],
        "grid shape": ["x".join(map(str, volumes[c].shape)) for c in ids],
        "lowest value": [int(volumes[c].min()) for c in ids],
        "highest value": [int(volumes[c].max()) for c in ids],
    }
    identical, cues = {}, []
    for name, values in properties.items():
        distinct = sorted(set(values), key=str)
        identical[name] = {"identical": len(distinct) == 1, "values": distinct[:6]}
        if len(distinct) > 1:
            by_class = {
                t: sorted({v for v, s in zip(values, is_synthetic) if s == (t == "synthetic")}, key=str)[:3] for t in ("real", "synthetic")
            }
            cues.append(f"{name} differs between cases (real: {by_class['real']}, synthetic: {by_class['synthetic']})")
    table = {c: case_statistics(volumes[c]) for c in ids}
    features, content = [], []
    for name, meaning in {**ARTEFACT, **SHARPNESS, **CONTENT}.items():
        values = np.array([table[c][name] for c in ids])
        measured = np.isfinite(values)  # sharpness is not measured on a brain too small to have an interior
        synthetic, real = values[is_synthetic & measured], values[~is_synthetic & measured]
        auc, p = auc_and_p(synthetic, real) if len(synthetic) and len(real) else (None, None)
        kind = "artefact" if name in ARTEFACT else "sharpness" if name in SHARPNESS else "content"
        flagged = p is not None and p < ALPHA
        features.append(
            {
                "feature": name,
                "meaning": meaning,
                "kind": kind,
                "cases_measured": int(measured.sum()),
                "real_median": float(np.median(real)) if len(real) else None,
                "synthetic_median": float(np.median(synthetic)) if len(synthetic) else None,
                "auc": auc,
                "p_value": p,
                "flag": flagged,
            }
        )
        if flagged:
            sentence = f"{name} ({meaning}) separates the classes: AUC {auc:.2f}, Mann-Whitney p = {p:.2g}"
            if kind == "sharpness":
                sentence += "; the cases differ in sharpness, which readers can see without judging anatomy"
            (content if kind == "content" else cues).append(sentence)
    return {
        "n_cases": len(ids),
        "n_real": int((~is_synthetic).sum()),
        "n_synthetic": int(is_synthetic.sum()),
        "alpha": ALPHA,
        "identical": identical,
        "features": features,
        "cues": cues,
        "content_differences": content,
        "file_cues": [c for c in cues if "differs between cases" in c],
    }


def write_cue_report(folder: str | Path, result: dict[str, Any]) -> Path:
    """Write ``key/cue_check.json`` and ``key/cue_check.md`` (beside the key: it names classes)."""
    folder = Path(folder)
    _io.write_json(folder / KEY_DIR / "cue_check.json", result)
    lines = [
        "# Cue check",
        "",
        f"{result['n_cases']} cases: {result['n_real']} real, {result['n_synthetic']} synthetic.",
        "",
        "## Properties that must be identical",
        "",
        "| property | identical | values |",
        "| --- | --- | --- |",
    ]
    for name, row in result["identical"].items():
        lines.append(f"| {name} | {'yes' if row['identical'] else '**no**'} | {', '.join(map(str, row['values']))} |")
    lines += [
        "",
        f"## Per-case statistics (AUC of synthetic vs real; flagged when Mann-Whitney p < {result['alpha']})",
        "",
        "| statistic | kind | cases measured | real median | synthetic median | AUC | p | flagged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["features"]:
        lines.append(
            f"| {row['feature']}: {row['meaning']} | {row['kind']} | {row['cases_measured']} | {_g(row['real_median'], '.4g')} | "
            f"{_g(row['synthetic_median'], '.4g')} | {_g(row['auc'], '.2f')} | {_g(row['p_value'], '.2g')} | "
            f"{'**yes**' if row['flag'] else 'no'} |"
        )
    lines += ["", "## Result", ""]
    lines += [f"- cue: {c}" for c in result["cues"]] or ["- no cue found (a clean check with few cases does not prove there is none)"]
    lines += [f"- content difference (for readers to judge, not a cue): {c}" for c in result["content_differences"]]
    path = folder / KEY_DIR / "cue_check.md"
    _io.write_text(path, "\n".join(lines) + "\n")
    return path


def _g(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
