"""Evaluator networks trained on real data only, which read generated volumes independently of
the generator (and of its own label maps):

- a segmenter (:class:`~synthbrain.evaluation.networks.UNet3d`) trained on real images against
  their label maps (as class fractions per voxel, so that summed probabilities give volumes
  without the partial-volume loss of an argmax at coarse resolution);
- an age regressor: ridge regression on the segmenter's tissue fractions of the brain and its
  brain volume (tissue proportions change with age);
- a sex classifier: logistic regression on the image averaged over 4x4x4-voxel blocks (16 mm at 4 mm) and on deepbet
  features (:class:`~synthbrain.evaluation.features.FeatureExtractor`).

:meth:`Evaluators.fit` also scores every one on held-out real subjects (their own accuracy,
reported beside every measurement they make); :meth:`save` / :meth:`load` keep them in a folder
(safetensors + JSON) with a fingerprint of the data and settings they were trained with, so a
later evaluation reuses them only when that matches.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy import stats
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import roc_auc_score

from synthbrain import _io
from synthbrain.cohort.labels import LabelScheme
from synthbrain.evaluation.networks import UNet3d, dice_cross_entropy, predict, train_network
from synthbrain.overlap import dice_per_class
from synthbrain.training import PRECISIONS

SEX_CODES = ("F", "M")


@dataclass(frozen=True)
class EvaluatorSettings:
    """How the evaluators are trained (recorded with them). ``segmenter_channels``: :class:`UNet3d`
    channels per level; ``segmenter_steps``, ``segmenter_batch_size``, ``segmenter_lr``: its
    :func:`~synthbrain.evaluation.networks.train_network` run; ``segmenter_loss``: a label of the loss
    used (:func:`~synthbrain.evaluation.networks.dice_cross_entropy`), recorded, not a choice;
    ``segmenter_precision``: one of :data:`synthbrain.training.PRECISIONS` ("bf16-mixed": bfloat16
    autocast, half the time of float32 at 2 mm on CPUs with bfloat16 instructions); ``seed``: initialisation and batch order."""

    segmenter_channels: tuple[int, ...] = (8, 16, 32)
    segmenter_steps: int = 800
    segmenter_loss: str = "cross-entropy + soft Dice"
    segmenter_batch_size: int = 4
    segmenter_lr: float = 2e-3
    segmenter_precision: str = "32-true"
    seed: int = 0

    def __post_init__(self):
        if self.segmenter_precision not in PRECISIONS:
            raise ValueError(f"segmenter_precision={self.segmenter_precision!r}; allowed: {list(PRECISIONS)}")


class _Linear:
    """Standardise, then a linear map (numpy), fitted with a cross-validated sklearn model."""

    def __init__(self, mean, scale, coef, intercept):
        self.mean, self.scale, self.coef, self.intercept = (np.asarray(v, np.float64) for v in (mean, scale, coef, intercept))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, classify: bool) -> _Linear:
        mean, scale = x.mean(0), x.std(0) + 1e-8
        z = (x - mean) / scale
        if classify:
            folds = min(5, int(np.bincount(y).min())) if len(np.unique(y)) == 2 else 0
            if folds < 2:
                raise ValueError(f"sex: counts {np.bincount(y, minlength=2).tolist()} (F, M); allowed: >= 2 subjects of each sex")
            with warnings.catch_warnings():  # sklearn 1.8 announces changes of defaults that do not affect this use
                warnings.simplefilter("ignore", FutureWarning)
                model = LogisticRegressionCV(Cs=np.logspace(-3, 2, 11), cv=folds, max_iter=5000).fit(z, y)
        else:
            model = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(z, y)
        return cls(mean, scale, np.ravel(model.coef_), np.ravel(model.intercept_))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept[0]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": torch.from_numpy(np.atleast_1d(getattr(self, k)).copy()) for k in ("mean", "scale", "coef", "intercept")}


def _age_features(probabilities: torch.Tensor, voxel_mm3: float) -> np.ndarray:
    """Each class's share of the brain (class 0, background, left out) and the brain volume in L."""
    volumes = probabilities[:, 1:].sum((2, 3, 4)).double().numpy()
    brain = volumes.sum(1, keepdims=True)
    return np.concatenate([volumes / brain, brain * voxel_mm3 / 1e6], 1)


def _sex_features(images: torch.Tensor, extractor, spacing_mm: float) -> np.ndarray:
    """The image averaged over 4x4x4 blocks (16 mm at 4 mm voxels) and the deep features."""
    blocks = F.avg_pool3d(images, 4, ceil_mode=True).flatten(1).double().numpy()
    return np.concatenate([blocks, extractor(images, spacing_mm)], 1)


class Evaluators:
    """The evaluators of the module docstring, for volumes on one grid: the segmenter and, when the
    model's covariates include them, the age regressor and the sex classifier (else None). Build with
    :meth:`fit` or :meth:`load`. ``voxel_mm3``: the volume of a voxel of that grid in mm3;
    ``extractor``: a :class:`~synthbrain.evaluation.features.FeatureExtractor` (for the sex
    classifier); ``info``: settings, data fingerprint, grid spacing (``spacing_mm``), final training
    loss, feature network name and ``volumes``, the volume covariates the segmenter measures."""

    def __init__(
        self, segmenter: UNet3d, age: _Linear | None, sex: _Linear | None, scheme: LabelScheme, voxel_mm3: float, extractor, info: dict
    ):
        self.segmenter, self.age, self.sex, self.scheme, self.voxel_mm3 = segmenter, age, sex, scheme, voxel_mm3
        self.extractor, self.info = extractor, info
        self.volumes = list(info.get("volumes", []))

    # -- reading volumes ---------------------------------------------------------------------

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C, D, H, W), float32 on the CPU, of images (N, 1, D, H, W) in [0, 1]."""
        return torch.softmax(predict(self.segmenter, images), 1)

    def volume_of(self, probabilities: torch.Tensor, covariate: str) -> np.ndarray:
        """(N,) mL of a coarse volume (e.g. ``ventricular_volume``): summed probabilities of its classes times
        the voxel volume. Raises ``KeyError`` for a name not in the scheme's ``coarse_volumes``."""
        members = [self.scheme.class_names.index(m) for m in self.scheme.coarse_volumes[covariate]]
        return probabilities[:, members].sum((1, 2, 3, 4)).double().numpy() * self.voxel_mm3 / 1000.0

    def measure(self, images: torch.Tensor) -> tuple[pd.DataFrame, torch.Tensor]:
        """Per volume of ``images`` (N, 1, D, H, W) in [0, 1], a table of N rows: each volume covariate
        (mL), the predicted age (years) and probability of male sex (``p_male``) where those
        evaluators exist; and the segmenter's class map (N, D, H, W), uint8."""
        probabilities = self.segment(images)
        table = pd.DataFrame({name: self.volume_of(probabilities, name) for name in self.volumes}, index=range(len(images)))
        if self.age is not None:
            table["age"] = self.age(_age_features(probabilities, self.voxel_mm3))
        if self.sex is not None:
            table["p_male"] = 1.0 / (1.0 + np.exp(-self.sex(_sex_features(images, self.extractor, self.info["spacing_mm"]))))
        return table, probabilities.argmax(1).to(torch.uint8)

    # -- training and scoring on real data ---------------------------------------------------

    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        fractions: torch.Tensor,
        table: pd.DataFrame,
        scheme: LabelScheme,
        voxel_mm3: float,
        spacing_mm: float,
        extractor,
        settings: EvaluatorSettings = EvaluatorSettings(),
        *,
        fingerprint: str = "",
        progress: bool = True,
        covariates: tuple[str, ...] = ("sex", "age", "ventricular_volume", "brain_volume"),
    ) -> Evaluators:
        """Train on real images (N, 1, D, H, W) in [0, 1], their label fractions (N, C, D, H, W) and a
        table of N rows; ``voxel_mm3`` and ``spacing_mm`` describe the grid. The segmenter always; the
        age regressor (scikit-learn's ``RidgeCV``, on ``age`` in years) if ``covariates`` (the
        model's) include ``age``; the sex classifier (``LogisticRegressionCV``, up to 5 folds, on
        ``sex`` "F"/"M") if they include ``sex``; volume covariates are those of ``covariates`` the
        label scheme can measure (its ``coarse_volumes``). Raises ``ValueError`` for different row
        counts or fewer than 2 subjects of each sex."""
        if not len(images) == len(fractions) == len(table):
            raise ValueError(f"images, fractions, table: {len(images)}, {len(fractions)}, {len(table)} rows; allowed: the same number")
        segmenter = UNet3d(scheme.num_classes, settings.segmenter_channels)
        losses = train_network(
            segmenter,
            images,
            fractions,
            dice_cross_entropy,  # soft targets: class fractions
            steps=settings.segmenter_steps,
            batch_size=settings.segmenter_batch_size,
            lr=settings.segmenter_lr,
            precision=settings.segmenter_precision,
            seed=settings.seed,
            progress=progress,
            desc="evaluator segmenter",
        )
        info = {
            "settings": asdict(settings),
            "fingerprint": fingerprint,
            "spacing_mm": spacing_mm,
            "final_loss": float(np.mean(losses[-20:])),
            "volumes": [name for name in covariates if name in scheme.coarse_volumes],
        }
        info["feature_network"] = extractor.name
        probabilities = torch.softmax(predict(segmenter, images), 1)
        age = sex = None
        if "age" in covariates:
            age = _Linear.fit(_age_features(probabilities, voxel_mm3), table["age"].to_numpy(float), classify=False)
        if "sex" in covariates:
            male = (table["sex"].to_numpy() == "M").astype(int)
            sex = _Linear.fit(_sex_features(images, extractor, spacing_mm), male, classify=True)
        return cls(segmenter, age, sex, scheme, voxel_mm3, extractor, info)

    def score(self, measured: pd.DataFrame, classes: torch.Tensor, fractions: torch.Tensor, table: pd.DataFrame) -> dict:
        """Accuracy on held-out real subjects, from :meth:`measure`'s reading of their images: Dice
        per class against their label maps, and Pearson r and MAE of volumes (against the table,
        measured at full resolution) and of age; sex accuracy and AUC (scikit-learn's ``roc_auc_score``,
        which raises ``ValueError`` when the subjects are all of one sex). ``fractions`` (N, C, D, H, W)
        and ``table`` (``sex``, ``age``, volumes in mL) describe the same N subjects as ``measured`` and
        ``classes``."""
        truth = fractions.argmax(1).numpy()
        dice = np.nanmedian([dice_per_class(t, c.numpy(), self.scheme.num_classes) for t, c in zip(truth, classes)], axis=0)
        out = {"n": len(table), "median_dice": dict(zip(self.scheme.class_names, dice.tolist()))}
        for name in [*self.volumes, *(["age"] if self.age is not None else [])]:
            true, got = table[name].to_numpy(float), measured[name].to_numpy()
            out[name] = {"pearson_r": float(stats.pearsonr(true, got).statistic), "mae": float(np.abs(true - got).mean())}
        if self.sex is not None:
            male = table["sex"].to_numpy() == "M"
            p = measured["p_male"].to_numpy()
            auc = float(roc_auc_score(male, p)) if 0 < male.sum() < len(male) else float("nan")  # undefined with one sex
            out["sex"] = {"accuracy": float(((p > 0.5) == male).mean()), "auc": auc}
        return out

    # -- storage -------------------------------------------------------------------------------

    @_io.writes_folder("folder")  # evaluators shared by several evaluations are written by one at a time
    def save(self, folder: str | Path) -> Path:
        """Write ``evaluators.safetensors`` (segmenter weights, the linear models) and ``evaluators.json``
        (``info``, label scheme, voxel volume) into ``folder``; returns ``folder``."""
        folder = Path(folder)
        tensors = {f"segmenter.{k}": v.contiguous() for k, v in self.segmenter.state_dict().items()}
        for name, model in (("age", self.age), ("sex", self.sex)):
            if model is not None:
                tensors |= model.tensors(name)
        with _io.atomic_path(folder / "evaluators.safetensors") as tmp:
            save_file(tensors, str(tmp))
        _io.write_json(folder / "evaluators.json", {**self.info, "scheme": self.scheme.to_dict(), "voxel_mm3": self.voxel_mm3})
        return folder

    @classmethod
    def load(cls, folder: str | Path, extractor) -> Evaluators:
        """The evaluators :meth:`save` wrote in ``folder``, with ``extractor`` for the sex features (it must be
        the feature network they were trained with; ``info["feature_network"]`` names it). Raises
        ``FileNotFoundError`` for missing files and ``RuntimeError`` for segmenter weights that do not fit."""
        folder = Path(folder)
        info = _io.read_json(folder / "evaluators.json", "a folder of evaluators written by Evaluators.save")
        tensors = load_file(str(folder / "evaluators.safetensors"))
        scheme = LabelScheme.from_dict(info.pop("scheme"))
        settings = _io.dataclass_from_dict(EvaluatorSettings, info["settings"], "evaluator settings", segmenter_channels=tuple)
        segmenter = UNet3d(scheme.num_classes, settings.segmenter_channels)
        segmenter.load_state_dict({k.removeprefix("segmenter."): v for k, v in tensors.items() if k.startswith("segmenter.")})
        linear = {
            name: _Linear(*(tensors[f"{name}.{k}"].numpy() for k in ("mean", "scale", "coef", "intercept")))
            if f"{name}.coef" in tensors
            else None
            for name in ("age", "sex")
        }
        info.setdefault("volumes", ["ventricular_volume", "brain_volume"])  # evaluators saved before the volumes were recorded
        return cls(segmenter.eval(), linear["age"], linear["sex"], scheme, info.pop("voxel_mm3"), extractor, info)
