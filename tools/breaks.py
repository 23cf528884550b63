"""Deliberate breaks of core behaviours (issues 22 and 35), each applied to a throwaway copy of the checkout
and checked against the narrow test selection that should catch it. See docs/testing.md.

    python tools/breaks.py            # every break, one after the other
    python tools/breaks.py guidance   # breaks whose name contains "guidance"

Each break is a literal replacement in one file (it must match exactly once, so a break that no
longer applies is reported rather than silently skipped). The copy holds the files git tracks or
does not ignore (``tools/_checkout.py``); the tests run with ``python -m pytest`` from the copy's
root (so the copy's ``synthbrain`` is the one imported) under ``OMP_NUM_THREADS=1 nice -n 19``, and
the copy is deleted afterwards. A break is caught when pytest exits with failures (exit status 1);
the failing tests are printed.
Not part of the test suite and never run in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _checkout import copy_checkout

# name: (file, old text, new text, test selection)
BREAKS = {
    "generate ignores guidance_scale (always 1)": (
        "synthbrain/generator/model.py",
        'guidance = settings["guidance_scale"]',
        "guidance = 1.0",
        ["tests/generator/test_generate.py"],
    ),
    "generate ignores sampler (always DDIM)": (
        "synthbrain/generator/model.py",
        '                    settings["sampler"],\n',
        '                    "ddim",\n',
        ["tests/generator/test_generate.py"],
    ),
    "dataset's per-volume seed ignores the index": (
        "synthbrain/datasets/synthetic.py",
        "seeds = [draws.volume_seed(self.seed, i) for i in indices]",
        "seeds = [draws.volume_seed(self.seed, 0) for i in indices]",
        ["tests/generator/test_generate.py", "tests/datasets/test_synthetic.py"],
    ),
    "training checkpoint written straight to its file": (
        "synthbrain/training.py",
        "    with _io.atomic_path(path) as tmp:\n        torch.save(state, tmp)\n",
        "    torch.save(state, path)\n",
        ["tests/autoencoder/test_losses.py", "-k", "checkpoint_write"],
    ),
    "statistics: normal interval (ddof 0) over seed means instead of the bootstrap": (
        "synthbrain/evaluation/statistics.py",
        "    rows, columns = _indices(array.shape, resamples, seed)\n    resampled",
        "    means = np.nanmean(array, axis=1)\n"
        "    half = 1.96 * means.std(ddof=0) / np.sqrt(len(means))\n"
        "    return Estimate(float(np.nanmean(array)), float(np.nanmean(array) - half), float(np.nanmean(array) + half))\n"
        "    rows, columns = _indices(array.shape, resamples, seed)\n    resampled",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: bootstrap over seeds only (subjects fixed)": (
        "synthbrain/evaluation/statistics.py",
        "    columns = rng.integers(0, shape[1], size=(resamples, shape[1]))",
        "    columns = np.broadcast_to(np.arange(shape[1]), (resamples, shape[1]))",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: unpaired difference (a and b resampled independently)": (
        "synthbrain/evaluation/statistics.py",
        "    return bootstrap_mean(a - b, difference=True, **kwargs)",
        "    resamples, level, seed = kwargs.get('resamples', RESAMPLES), kwargs.get('level', 0.95), kwargs.get('seed', 0)\n"
        "    def draws(x, s):\n"
        "        r, c = _indices(x.shape, resamples, s)\n"
        "        return np.nanmean(x[r[:, :, None], c[:, None, :]], axis=(1, 2))\n"
        "    return _interval(float(np.nanmean(a) - np.nanmean(b)), draws(a, seed) - draws(b, seed + 1), level, True)",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: AUC without average ranks for ties": (
        "synthbrain/evaluation/statistics.py",
        "ranks = rankdata(scores, axis=-1)",
        'ranks = rankdata(scores, axis=-1, method="ordinal")',
        ["tests/evaluation/test_statistics.py"],
    ),
    "evaluate: synthetic realism row compares real A with itself": (
        "synthbrain/evaluation/evaluate.py",
        '("synthetic vs A", [features["synthetic"][s] for s in subsets])',
        '("synthetic vs A", [features["A"] for s in subsets])',
        ["tests/evaluation/test_evaluate.py"],
    ),
    "evaluate: synthetic conditioning compares requested with requested": (
        "synthbrain/evaluation/evaluate.py",
        '("synthetic, independent evaluator", requested[name], measured[name]),',
        '("synthetic, independent evaluator", requested[name], requested[name]),',
        ["tests/evaluation/test_evaluate.py"],
    ),
    "mixing rounds per batch": (
        "synthbrain/datasets/mixing.py",
        "        counts.append(_round(due + share * batch_size) - _round(due))",
        "        counts.append(_round(share * batch_size))",
        ["tests/datasets/test_mixing.py"],
    ),
    "DDIM off-by-one alpha": (
        "synthbrain/samplers/ddim.py",
        "schedule.alpha_bar(t), schedule.alpha_bar(t_prev)",
        "schedule.alpha_bar(t), schedule.alpha_bar(t_prev + 1)",
        ["tests/samplers", "tests/generator/test_generate.py"],
    ),
    "Fréchet distance without the covariance term": (
        "synthbrain/evaluation/metrics.py",
        "    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)",
        "    value = diff @ diff",
        ["tests/evaluation/test_metrics.py"],
    ),
    # issue 35: the code that connects the parts (each the question "is this computed from the right input?")
    "dataset: qc not passed on to generation": (
        "synthbrain/datasets/synthetic.py",
        '"qc": generator.defaults["qc"] if settings.qc is None else settings.qc}',
        '"qc": generator.defaults["qc"]}',
        ["tests/datasets/test_synthetic.py", "-k", "qc_reject"],
    ),
    "dataset: guidance_scale not passed on to generation": (
        "synthbrain/datasets/synthetic.py",
        "generator.sampling_settings(settings.steps, settings.sampler, settings.guidance_scale, settings.timestep_spacing)",
        "generator.sampling_settings(settings.steps, settings.sampler, None, settings.timestep_spacing)",
        ["tests/datasets/test_synthetic.py", "-k", "sampling_settings"],
    ),
    "dataset: timestep_spacing not passed on to generation": (
        "synthbrain/datasets/synthetic.py",
        "generator.sampling_settings(settings.steps, settings.sampler, settings.guidance_scale, settings.timestep_spacing)",
        "generator.sampling_settings(settings.steps, settings.sampler, settings.guidance_scale, None)",
        ["tests/datasets/test_synthetic.py", "-k", "sampling_settings"],
    ),
    "dataset: steps not passed on to generation": (
        "synthbrain/datasets/synthetic.py",
        "generator.sampling_settings(settings.steps, settings.sampler, settings.guidance_scale, settings.timestep_spacing)",
        "generator.sampling_settings(None, settings.sampler, settings.guidance_scale, settings.timestep_spacing)",
        ["tests/datasets/test_synthetic.py", "-k", "sampling_settings"],
    ),
    "dataset: extrapolate not passed on to generation": (
        "synthbrain/datasets/synthetic.py",
        '{"extrapolate": bool(extrapolate), "qc":',
        '{"extrapolate": False, "qc":',
        ["tests/datasets/test_synthetic.py", "-k", "sampling_settings"],
    ),
    "generate: a redraw drops the given covariates": (
        "synthbrain/generator/model.py",
        "again = given.iloc[failing].reset_index(drop=True) if given is not None else None",
        "again = None",
        ["tests/generator/test_generate.py", "-k", "redraw"],
    ),
    "generate: a redraw ignores the condition sampler": (
        "synthbrain/generator/model.py",
        "given=again, cond_sampler=cond_sampler,",
        "given=again, cond_sampler=None,",
        ["tests/generator/test_generate.py", "tests/datasets/test_synthetic.py", "-k", "redraw or qc_reject"],
    ),
    "generate: a redraw samples with the model's default settings": (
        "synthbrain/generator/model.py",
        "self._sample(part, redraw, settings, batch_size, extrapolate, raw, False)",
        "self._sample(part, redraw, self.sampling_settings(), batch_size, extrapolate, raw, False)",
        ["tests/generator/test_generate.py", "-k", "redraw"],
    ),
    "generate: a redraw masks the background despite raw": (
        "synthbrain/generator/model.py",
        "self._sample(part, redraw, settings, batch_size, extrapolate, raw, False)",
        "self._sample(part, redraw, settings, batch_size, extrapolate, False, False)",
        ["tests/generator/test_generate.py", "-k", "redraw"],
    ),
    "generate: a redraw keeps the failing volume's label map": (
        "synthbrain/generator/model.py",
        "images[i], labels[i] = new_images[k], new_labels[k]",
        "images[i], labels[i] = new_images[k], labels[i]",
        ["tests/generator/test_generate.py", "-k", "redraw"],
    ),
    "prepare: resume counts a subject done though its image or label file is missing": (
        "synthbrain/preprocessing/prepare.py",
        "if record.get(\"params_hash\") != params_hash or not all((folder / f).is_file() for f in files if f):",
        "if record.get(\"params_hash\") != params_hash:",
        ["tests/preprocessing/test_prepare.py", "-k", "resume_redoes"],
    ),
    "prepare: resume keeps a subject made from another source file": (
        "synthbrain/preprocessing/prepare.py",
        "if not same_sources or record.get(\"trust_header\") != subject.trust_header:",
        "if record.get(\"trust_header\") != subject.trust_header:",
        ["tests/preprocessing/test_prepare.py", "-k", "resume_redoes"],
    ),
    "prepare: resume keeps a subject read with another header trust": (
        "synthbrain/preprocessing/prepare.py",
        "if not same_sources or record.get(\"trust_header\") != subject.trust_header:",
        "if not same_sources:",
        ["tests/preprocessing/test_prepare.py", "-k", "resume_redoes"],
    ),
    "prepare: resume redoes a subject whose dataset moved (same content)": (
        "synthbrain/preprocessing/prepare.py",
        "    return digest is not None and Path(path).is_file() and _io.sha256_file(path) == digest",
        "    return False",
        ["tests/preprocessing/test_prepare.py", "-k", "resume_redoes"],
    ),
    "downstream: augmented arms draw their real subjects with another seed": (
        "benchmarks/downstream.py",
        'chosen = _subset(parts["pool"]["table"], max(n, sizes[0]), seed)',
        'chosen = _subset(parts["pool"]["table"], max(n, sizes[0]), seed + (arm != REAL))',
        ["tests/benchmarks/test_downstream.py", "-k", "quick_mode"],
    ),
    "downstream: scored on the validation part instead of the test part": (
        "benchmarks/downstream.py",
        "cohorts = {SPLIT_TEST: parts[\"test\"]}",
        "cohorts = {SPLIT_TEST: parts[\"val\"]}",
        ["tests/benchmarks/test_downstream.py", "-k", "quick_mode"],
    ),
    "downstream: model selection on the test part": (
        "benchmarks/downstream.py",
        "    val = parts[\"val\"]\n",
        "    val = parts[\"test\"]\n",
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: the upper reference draws from the pool part": (
        "benchmarks/downstream.py",
        "        extra = parts[\"generator\"]\n",
        "        extra = parts[\"pool\"]\n",
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: the real-anatomy control renders every pool subject": (
        "benchmarks/downstream.py",
        "extra = _real_randomized(real, ",
        "extra = _real_randomized(pool, ",
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: a quarter of every batch synthetic instead of half": (
        "benchmarks/downstream.py",
        "FRACTION = 0.5  # the share",
        "FRACTION = 0.25  # the share",
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: the spread pool without its uniform sampler": (
        "benchmarks/downstream.py",
        "generator.generate(cond_sampler=sampler, n=count, seed=30_000,",
        "generator.generate(n=count, seed=30_000,",
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: the generated & randomized pool all generated": (
        "benchmarks/downstream.py",
        'torch.where(odd, pools["randomized"]["images"], pools["generated"]["images"])',
        'torch.where(odd, pools["generated"]["images"], pools["generated"]["images"])',
        ["tests/benchmarks/test_downstream.py", "-k", "each_arm"],
    ),
    "downstream: shifted-domain Dice scored on the unshifted images": (
        "benchmarks/downstream.py",
        "out = predict(model, shifted[(name, shift)], device=device)",
        "out = predict(model, cohort[\"images\"], device=device)",
        ["tests/benchmarks/test_downstream.py", "-k", "scores_are"],
    ),
    "downstream: ventricular volume error against the first subject's volume": (
        "benchmarks/downstream.py",
        "np.abs(found - cohort[\"ventricles_ml\"].numpy())",
        "np.abs(found - cohort[\"ventricles_ml\"].numpy()[0])",
        ["tests/benchmarks/test_downstream.py", "-k", "scores_are"],
    ),
    "evaluate: memorisation baseline among the training subjects though a held-out cohort is given": (
        "synthbrain/evaluation/evaluate.py",
        "            nearest_neighbour_distances(flat_held, flat_training).distances,\n"
        "            nearest_neighbour_ratio(flat_held, flat_training),\n",
        "            nearest_neighbour_distances(flat_training, flat_training, exclude_self=True).distances,\n"
        "            nearest_neighbour_ratio(flat_training, flat_training, exclude_self=True),\n",
        ["tests/evaluation/test_evaluate.py", "-k", "held_out"],
    ),
    "evaluate: reconstructions of A instead of B": (
        "synthbrain/evaluation/evaluate.py",
        "_reconstruct(generator, images[part_b], fractions[part_b])",
        "_reconstruct(generator, images[part_a], fractions[part_a])",
        ["tests/evaluation/test_evaluate.py", "-k", "reconstructions"],
    ),
    "evaluate: the reconstructions row scores B itself": (
        "synthbrain/evaluation/evaluate.py",
        "(\"autoencoder reconstructions of B vs A\", [features[\"reconstructions\"]]),",
        "(\"autoencoder reconstructions of B vs A\", [features[\"B\"]]),",
        ["tests/evaluation/test_evaluate.py", "-k", "real_b"],
    ),
    "evaluate: evaluators trained on B's images": (
        "synthbrain/evaluation/evaluate.py",
        "evaluator_folder, cohort, images[part_a], fractions[part_a],",
        "evaluator_folder, cohort, images[part_b], fractions[part_a],",
        ["tests/evaluation/test_evaluate.py", "-k", "writes_the_report"],
    ),
    "evaluate: evaluators' accuracy scored against A's truths": (
        "synthbrain/evaluation/evaluate.py",
        "judges.score(real_measured, real_segmentation, fractions[part_b], table_b)",
        "judges.score(real_measured, real_segmentation, fractions[part_a], table.loc[part_a].reset_index(drop=True))",
        ["tests/evaluation/test_evaluate.py", "-k", "reconstructions"],
    ),
    "evaluate: spot-the-fake real vs real compares A with A": (
        "synthbrain/evaluation/evaluate.py",
        '"real vs real (B vs A)": (volumes["real (A)"], statistics["real (A)"], volumes["real (B)"], statistics["real (B)"]),',
        '"real vs real (B vs A)": (volumes["real (A)"], statistics["real (A)"], volumes["real (A)"], statistics["real (B)"]),',
        ["tests/evaluation/test_evaluate.py", "-k", "reconstructions"],
    ),
    "evaluate: spot-the-fake synthetic vs real against A only": (
        "synthbrain/evaluation/evaluate.py",
        '"synthetic vs real": (*real_all, volumes["synthetic"], statistics["synthetic"]),',
        '"synthetic vs real": (volumes["real (A)"], real_all[1], volumes["synthetic"], statistics["synthetic"]),',
        ["tests/evaluation/test_evaluate.py", "-k", "reconstructions"],
    ),
    "evaluate: sampling settings not passed on to generation": (
        "synthbrain/evaluation/evaluate.py",
        "generator.generate(n=n, seed=seed, progress=progress, **sampling)",
        "generator.generate(n=n, seed=seed, progress=progress)",
        ["tests/evaluation/test_evaluate.py", "-k", "reconstructions or cli"],
    ),
    "evaluate CLI drops --timestep-spacing": (
        "synthbrain/cli.py",
        "sampling=SamplingSettings.from_args(args).given(),",
        "sampling={k: v for k, v in SamplingSettings.from_args(args).given().items() if k != 'timestep_spacing'},",
        ["tests/evaluation/test_evaluate.py", "-k", "cli"],
    ),
    "generate CLI drops --timestep-spacing": (
        "synthbrain/cli.py",
        "            **SamplingSettings.from_args(args).given(),\n",
        "            **{k: v for k, v in SamplingSettings.from_args(args).given().items() if k != 'timestep_spacing'},\n",
        ["tests/test_cli.py", "-k", "passes_every"],
    ),
    "generate CLI drops --raw": (
        "synthbrain/cli.py",
        "        raw=args.raw,\n",
        "",
        ["tests/test_cli.py", "-k", "passes_every"],
    ),
    "generate --shards drops --guidance-scale": (
        "synthbrain/cli.py",
        "\n        **SamplingSettings.from_args(args).given(),\n",
        "\n        **{k: v for k, v in SamplingSettings.from_args(args).given().items() if k != 'guidance_scale'},\n",
        ["tests/test_cli.py", "-k", "passes_every"],
    ),
    "reader study: every real case shows the first drawn subject": (
        "synthbrain/reader_study/create.py",
        '_blind(item["image"].numpy()[0], mask,',
        '_blind(cohort[chosen[0]]["image"].numpy()[0], mask,',
        ["tests/reader_study/test_create.py", "-k", "key_names"],
    ),
    "reader study: a synthetic file masked by its own haze, not its label map": (
        "synthbrain/reader_study/create.py",
        "_blind(image, dseg > 0, source,",
        "_blind(image, image > 0, source,",
        ["tests/reader_study/test_create.py", "-k", "key_names"],
    ),
    "reader study: generated cases paired with another volume's seed": (
        "synthbrain/reader_study/create.py",
        "covariates = {k: _plain(v) for k, v in generated.covariates.iloc[i].items()}",
        "covariates = {k: _plain(v) for k, v in generated.covariates.iloc[(i + 1) % n_synthetic].items()}",
        ["tests/reader_study/test_create.py", "-k", "from_a_model"],
    ),
}


def run(name: str) -> tuple[str, list[str]]:
    path, old, new, tests = BREAKS[name]
    scratch = Path(tempfile.mkdtemp(prefix="synthbrain-break-"))
    copy = scratch / "repo"
    try:
        copy_checkout(copy)
        text = (copy / path).read_text()
        if text.count(old) != 1:
            return "NOT APPLIED (the text to replace is not there exactly once)", []
        (copy / path).write_text(text.replace(old, new))
        command = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests]
        result = subprocess.run(command, cwd=copy, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        failed = sorted({m.group(1) for m in re.finditer(r"^FAILED (\S+)", result.stdout, re.M)})
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        verdict = {0: "NOT CAUGHT", 1: "caught"}.get(result.returncode, f"pytest exit {result.returncode}")
        return f"{verdict}: {summary}", failed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> int:
    names = [n for n in BREAKS if not argv or any(a.lower() in n.lower() for a in argv)]
    missed = 0
    for name in names:
        path, _, _, tests = BREAKS[name]
        verdict, failed = run(name)
        missed += not verdict.startswith("caught")
        print(f"## {name}\n   {path}; pytest {' '.join(tests)}\n   {verdict}")
        for test in failed:
            print(f"   - {test}")
        sys.stdout.flush()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
