"""Metrics of generated volumes against real ones: pure functions on numpy arrays or torch tensors.

They know nothing of the feature extractor: "features" are any (N, F) array with one row per
sample, and functions that compare samples as vectors flatten whatever follows the first axis, so
raw volumes (N, 1, D, H, W) and network features are taken alike. Every number here is meant to
be read beside the same number for real versus real data (two disjoint real sets), never alone.

- Realism: ``frechet_distance``, ``knn_precision_recall``, ``classifier_two_sample_test``.
- Diversity: ``ms_ssim_3d`` / ``pairwise_ms_ssim`` (mean over pairs within one set), ``mmd``,
  ``pairwise_distances`` (L2 between every pair of volumes of one set).
- Detail: ``high_frequency_share`` (share of spectral power above 0.25 cycles/voxel),
  ``high_pass_share`` (share of variance a Gaussian blur removes, local) and
  ``mean_gradient_magnitude``, per volume inside the brain; ``blurred_copy`` makes the positive
  control that ``classifier_positive_control`` checks the classifier two-sample test against, and
  ``feature_two_sample_test`` is the simple baseline classifier on such per-volume statistics.
- Anatomy of label maps: ``buried_share`` (the share of a tissue far from given classes, e.g.
  cortical grey matter buried in white matter instead of lining the brain's surface).
- Conditioning: ``conditioning_accuracy`` (requested versus measured covariates).
- Memorisation: ``nearest_neighbour_distances``, ``memorisation_report``.

Label faithfulness (Dice between a generated label map and the independent segmentation of the
generated image) is ``synthbrain.evaluation.dice_per_class`` with ``VoxelSegmenter``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg, ndimage, stats
from scipy.spatial.distance import pdist
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. (2003), finest scale first


class PrecisionRecall(NamedTuple):
    """What :func:`knn_precision_recall` returns: two fractions in [0, 1]."""

    precision: float
    recall: float


class MMDTest(NamedTuple):
    """What :func:`mmd_permutation_test` returns: the observed unbiased MMD^2 (squared kernel units,
    may be slightly negative), its permutation p-value in (0, 1], and the number of permutations."""

    mmd2: float
    p_value: float
    permutations: int


class TwoSampleTest(NamedTuple):
    """What :func:`classifier_two_sample_test` and :func:`feature_two_sample_test` return: test accuracy
    in [0, 1] (chance 0.5), its Wilson 95 % interval ``[ci_low, ci_high]``, the number of test and
    training samples (both classes), and the AUC of the classifier's scores on the test samples (0.5 for
    a classifier that gives every sample the same score; 1 when it ranks every fake above every real)."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    n_train: int
    auc: float


class PositiveControl(NamedTuple):
    """What :func:`classifier_positive_control` returns: the two-sample test of real volumes against
    their blurred copy, whether it told them apart (``passed``: the accuracy's Wilson 95 % interval
    lies above 0.5), and ``reason``, one sentence saying why (for the report)."""

    result: TwoSampleTest
    passed: bool
    reason: str


class Neighbours(NamedTuple):
    """What :func:`nearest_neighbour_distances` returns: ``distances`` (Q,) float64, the L2 distance of each
    query sample to its nearest reference sample (in the units of the values compared), and ``indices``
    (Q,) int, that reference sample's row."""

    distances: np.ndarray
    indices: np.ndarray


class MemorisationReport(NamedTuple):
    """What :func:`memorisation_report` returns (distances in the units of the values compared)."""

    synthetic_distances: np.ndarray  # (S,) L2 distance of each synthetic sample to its nearest training sample
    synthetic_nearest: np.ndarray  # (S,) index of that training sample
    held_out_distances: np.ndarray  # (H,) the same for each held-out real sample
    held_out_min: float  # the closest any held-out real sample comes to the training set
    flagged: np.ndarray  # indices of synthetic samples closer to a training sample than held_out_min


class ConditioningAccuracy(NamedTuple):
    """What :func:`conditioning_accuracy` returns: Pearson r in [-1, 1]; MAE and bias (mean of measured -
    requested) in the covariate's units; ``n`` the number of samples."""

    pearson_r: float
    mae: float
    bias: float  # mean of measured - requested
    n: int


# ---------------------------------------------------------------------------------------------
# Input checks and distances


def _matrix(x, name: str, min_rows: int = 1) -> np.ndarray:
    """(N, F) float64 copy of an array or tensor of N samples, each flattened to one row."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"{name}: shape {x.shape}; allowed: (N, features...) with one row per sample")
    x = x.reshape(len(x), -1)
    if len(x) < min_rows:
        raise ValueError(f"{name}: {len(x)} samples; allowed: >= {min_rows}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values; allowed: finite values only")
    return x


def _pair(a, b, names: tuple[str, str], min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = _matrix(a, names[0], min_rows), _matrix(b, names[1], min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[1]}: {b.shape[1]} values per sample; allowed: the same as {names[0]} ({a.shape[1]})")
    return a, b


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances, through one matrix product (centred first, so that
    round-off stays small relative to the spread of the data rather than to its offset)."""
    centre = np.concatenate([a, b]).mean(0)
    a, b = a - centre, b - centre
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


# ---------------------------------------------------------------------------------------------
# Realism on features


def frechet_distance(features_a, features_b, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F): ``|mu_a - mu_b|^2 +
    tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, in squared feature units (FID when the features are
    Inception's; here any 3D network's). Lower is closer.

    Known answers: 0 for identical sets; for one feature ``(mean_a - mean_b)^2 + (sd_a - sd_b)^2``
    (sample sd, ddof 1), and for diagonal covariances the sum of that over features.
    Needs >= 2 samples per set. With fewer samples than features the covariances are singular and
    the value is biased upwards, falling as N grows: compare only values from equal N (synthetic
    versus real beside real versus real). Safeguards as in pytorch-fid: if the matrix square root
    is not finite, ``eps`` is added to both diagonals; an imaginary part from round-off is dropped
    if small and is an error otherwise; a value below 0 by round-off is returned as 0.
    """
    a, b = _pair(features_a, features_b, ("features_a", "features_b"), min_rows=2)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = eps * np.eye(len(cov_a))
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        imaginary = float(np.abs(np.diagonal(root).imag).max())
        if imaginary > 1e-3 * max(1.0, abs(float(np.trace(root.real)))):
            raise ValueError(
                f"features_a, features_b: covariance product has a square root with imaginary part {imaginary:.3g}; "
                "allowed: well-conditioned covariances (use more samples or fewer features)"
            )
        root = root.real
    diff = a.mean(0) - b.mean(0)
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)
    return max(float(value), 0.0)


def knn_precision_recall(real, fake, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) on features (N, F).

    Each sample of a set stands for a ball reaching its k-th nearest neighbour in that set.
    Precision: the fraction of fake samples inside at least one real ball (fakes look real).
    Recall: the fraction of real samples inside at least one fake ball (the fakes cover the real
    variety). Known answers: identical sets give 1 and 1; sets farther apart than any ball give
    0 and 0. Needs 1 <= k < the size of each set.
    """
    real, fake = _pair(real, fake, ("real", "fake"))
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k={k}; allowed: 1 <= k < min(len(real), len(fake)) = {min(len(real), len(fake))}")
    radius_real = np.partition(_distances(real, real), k, axis=1)[:, k]  # column 0 is the sample itself
    radius_fake = np.partition(_distances(fake, fake), k, axis=1)[:, k]
    between = _distances(real, fake)
    precision = (between <= radius_real[:, None]).any(axis=0).mean()
    recall = (between <= radius_fake[None, :]).any(axis=1).mean()
    return PrecisionRecall(float(precision), float(recall))


# ---------------------------------------------------------------------------------------------
# Maximum mean discrepancy


def _kernel_matrix(z: np.ndarray, kernel: str, bandwidth: float | None) -> np.ndarray:
    if kernel == "linear":
        z = z - z.mean(0)  # MMD is unchanged by a shift; centring keeps round-off small
        return z @ z.T
    if kernel != "rbf":
        raise ValueError(f"kernel={kernel!r}; allowed: 'rbf', 'linear'")
    distances = _distances(z, z)
    if bandwidth is None:
        bandwidth = float(np.median(distances[np.triu_indices(len(z), 1)]))
        if bandwidth <= 0:
            raise ValueError("x, y: median distance between samples is 0 (most are duplicates); pass bandwidth > 0")
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth={bandwidth}; allowed: > 0, or None for the median heuristic")
    return np.exp(-(distances**2) / (2.0 * bandwidth**2))


def _mmd2(kernel_matrix: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 from the kernel matrix of x (first n rows) stacked on y."""
    kxx, kyy, kxy = kernel_matrix[:n, :n], kernel_matrix[n:, n:], kernel_matrix[:n, n:]
    m = len(kernel_matrix) - n
    within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def mmd(x, y, kernel: str = "rbf", bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy, MMD^2 (Gretton et al. 2012),
    between samples x (N, F) and y (M, F); each needs >= 2 samples.

    ``rbf``: Gaussian kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``; bandwidth None takes the median
    distance between all pooled samples (median heuristic). ``linear``: ``a . b``, whose MMD^2 is
    ``|mean_x - mean_y|^2 - tr(cov_x) / N - tr(cov_y) / M`` exactly (a known answer).
    Known answers: about 0 for samples of one distribution, larger the more they differ. Being
    unbiased, it is slightly negative about half the time when the distributions are equal; for two
    identical sets it is exactly ``-2 (1 - mean(K)) / (N - 1)``, K the kernel matrix of the set (and
    ``-2 tr(cov) / N`` under ``linear``). It is not clipped at 0, so that averages stay unbiased.
    """
    x, y = _pair(x, y, ("x", "y"), min_rows=2)
    return _mmd2(_kernel_matrix(np.concatenate([x, y]), kernel, bandwidth), len(x))


def mmd_permutation_test(x, y, *, seed: int, permutations: int = 200, kernel: str = "rbf", bandwidth: float | None = None) -> MMDTest:
    """MMD^2 of x and y with a permutation p-value: the share of random relabellings of the pooled
    samples (seeded) whose MMD^2 is at least the observed one, as ``(1 + count) / (1 + permutations)``.
    The bandwidth is fixed once from the pooled samples, which a relabelling does not change.
    Small p: the two sets differ; p is about uniform on (0, 1] when they come from one distribution.
    """
    if permutations < 1:
        raise ValueError(f"permutations={permutations}; allowed: >= 1")
    x, y = _pair(x, y, ("x", "y"), min_rows=2)
    matrix = _kernel_matrix(np.concatenate([x, y]), kernel, bandwidth)
    observed = _mmd2(matrix, len(x))
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(permutations):
        order = rng.permutation(len(matrix))
        count += _mmd2(matrix[np.ix_(order, order)], len(x)) >= observed
    return MMDTest(observed, (1 + count) / (1 + permutations), permutations)


# ---------------------------------------------------------------------------------------------
# Multi-scale structural similarity of 3D volumes


def _volumes(x, name: str, data_range: float | None = None) -> torch.Tensor:
    """(N, 1, D, H, W) float tensor; values checked to lie in [0, data_range] when given."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"{name}: shape {tuple(x.shape)}; allowed: (N, 1, D, H, W)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values; allowed: finite values only")
    if data_range is not None and (x.min() < 0 or x.max() > data_range):
        raise ValueError(f"{name}: values {float(x.min()):.3g}..{float(x.max()):.3g}; allowed: 0..{data_range} (data_range)")
    return x


def _gaussian_blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over the three spatial axes, without padding ('valid')."""
    k = len(window)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k
        x = F.conv3d(x, window.view(shape))
    return x


def ms_ssim_3d(a, b, *, kernel_size: int = 7, sigma: float = 1.5, scales: int = 3, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM (Wang et al. 2003) of each pair ``a[i], b[i]`` of volumes (B, 1, D, H, W) in
    [0, data_range]; returns (B,). 1 for identical volumes, lower the less alike: structure is
    compared at ``scales`` resolutions, each halving the previous by 2x2x2 averaging.

    The computation is MONAI's ``MultiScaleSSIMMetric`` (Gaussian window without padding;
    contrast-structure terms at the finer scales and full SSIM at the coarsest, each clipped at 0;
    Wang's weights), in float64. For small volumes the defaults differ from MONAI's 5 scales and
    11-voxel window, which need 161 voxels per side: 3 scales with a 7-voxel window (sigma 1.5),
    using Wang's first three weights renormalised to sum to 1. Each side must be at least
    ``kernel_size * 2**(scales - 1)`` voxels (28 for the defaults), so 40x56x40 at 4 mm works, its
    coarsest scale 10x14x10 voxels of 16 mm. Values compare only at equal settings and resolution.
    """
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"scales={scales}; allowed: 1..{len(MS_SSIM_WEIGHTS)}")
    if kernel_size < 1 or kernel_size % 2 == 0 or not sigma > 0:
        raise ValueError(f"kernel_size={kernel_size}, sigma={sigma}; allowed: an odd kernel_size >= 1 and sigma > 0")
    a, b = _volumes(a, "a", data_range).double(), _volumes(b, "b", data_range).double()
    if a.shape != b.shape:
        raise ValueError(f"b: shape {tuple(b.shape)}; allowed: the shape of a, {tuple(a.shape)}")
    smallest = kernel_size * 2 ** (scales - 1)
    if min(a.shape[2:]) < smallest:
        raise ValueError(f"a, b: spatial shape {tuple(a.shape[2:])}; allowed: every side >= kernel_size * 2**(scales - 1) = {smallest}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    window = torch.exp(-((offsets / sigma) ** 2) / 2)
    window = window / window.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for scale in range(scales):
        mu_a, mu_b = _gaussian_blur(a, window), _gaussian_blur(b, window)
        var_a = _gaussian_blur(a * a, window) - mu_a**2
        var_b = _gaussian_blur(b * b, window) - mu_b**2
        cov = _gaussian_blur(a * b, window) - mu_a * mu_b
        contrast = (2 * cov + c2) / (var_a + var_b + c2)
        if scale < scales - 1:
            terms.append(contrast.flatten(1).mean(1).clamp(min=0))
            a, b = F.avg_pool3d(a, 2), F.avg_pool3d(b, 2)
        else:
            luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
            terms.append((luminance * contrast).flatten(1).mean(1).clamp(min=0))
    return torch.prod(torch.stack(terms) ** weights[:, None], dim=0)


def pairwise_ms_ssim(volumes, *, pairs: int = 100, seed: int, batch_size: int = 8, **settings) -> float:
    """Mean MS-SSIM (``ms_ssim_3d``, with its keyword ``settings``) over ``pairs`` distinct pairs of
    different volumes of one set (N, 1, D, H, W), drawn without replacement (seeded); all pairs
    when there are fewer. Diversity: lower means more varied. A generator that collapses to one
    volume scores 1; compare a synthetic set's value with a real set's of the same size.
    """
    volumes = _volumes(volumes, "volumes")
    if len(volumes) < 2:
        raise ValueError(f"volumes: {len(volumes)} volumes; allowed: >= 2")
    if pairs < 1 or batch_size < 1:
        raise ValueError(f"pairs={pairs}, batch_size={batch_size}; allowed: both >= 1")
    first, second = np.triu_indices(len(volumes), 1)
    chosen = np.random.default_rng(seed).choice(len(first), size=min(pairs, len(first)), replace=False)
    values = []
    for start in range(0, len(chosen), batch_size):
        part = chosen[start : start + batch_size]
        values.append(ms_ssim_3d(volumes[first[part]], volumes[second[part]], **settings))
    return float(torch.cat(values).mean())


# ---------------------------------------------------------------------------------------------
# Classifier two-sample test ("spot the fake")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) ``(low, high)`` in [0, 1] of a binomial proportion ``successes / n``
    at confidence ``level``: ``scipy.stats.binomtest(successes, n).proportion_ci(level, method="wilson")``,
    exactly 0 or 1 at the ends. Raises ``ValueError`` unless ``n >= 1``, ``0 <= successes <= n`` and
    ``0 < level < 1``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"successes={successes}, n={n}; allowed: n >= 1 and 0 <= successes <= n")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; allowed: a confidence level strictly between 0 and 1")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def _small_cnn(channels: tuple[int, ...]) -> nn.Module:
    """A few 3x3x3 convolutions, each followed by ReLU and 2x2x2 max pooling; global average
    pooling; one logit (synthetic)."""
    layers, previous = [], 1
    for width in channels:
        layers += [nn.Conv3d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2, ceil_mode=True)]
        previous = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(previous, 1))


def classifier_two_sample_test(
    real,
    fake,
    *,
    seed: int,
    test_fraction: float = 0.5,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 1e-3,
    channels: tuple[int, ...] = (8, 16, 32),
    device: str | torch.device = "cpu",
) -> TwoSampleTest:
    """Spot the fake: a small 3D CNN (``_small_cnn``) learns to tell real from synthetic volumes
    (N, 1, D, H, W) on one part of them and is scored on the rest (Lopez-Paz and Oquab 2017).

    Both sets are cut to the smaller one's size (seeded), so that chance is exactly 0.5, and each is
    split by ``test_fraction`` (seeded), so the test set is balanced. Returns the test accuracy, its
    Wilson 95 % interval, n_test, n_train and the AUC of the network's logits on the test volumes.
    Accuracy near 0.5 (interval including 0.5): the classifier found no difference, which is evidence
    of realism only as strong as n_test and the network allow, and none at all when the network
    cannot see: an untrained or collapsed network answers one class for every volume, exactly 0.5.
    Check it with :func:`classifier_positive_control` at the same settings. Near 1: the synthetic
    volumes are easy to tell apart. Use real volumes that the
    generator was not trained on where possible. Weight initialisation and batch order come from
    ``seed``; the global random state is left as it was.
    """
    real, fake = _volumes(real, "real").float(), _volumes(fake, "fake").float()
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"fake: volume shape {tuple(fake.shape[1:])}; allowed: the shape of real's, {tuple(real.shape[1:])}")
    if not 0 < test_fraction < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(
            f"test_fraction={test_fraction}, epochs={epochs}, batch_size={batch_size}; "
            "allowed: 0 < test_fraction < 1, epochs >= 1, batch_size >= 1"
        )
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    n_test = int(round(n * test_fraction))
    if not 1 <= n_test < n:
        raise ValueError(
            f"real, fake: {len(real)} and {len(fake)} volumes with test_fraction={test_fraction} leave {n_test} "
            f"of {n} per class for testing; allowed: at least one per class for training and for testing"
        )
    train, test = [], []
    for label, volumes in enumerate((real, fake)):
        order = torch.as_tensor(rng.permutation(len(volumes))[:n])
        test.append((volumes[order[:n_test]], torch.full((n_test,), float(label))))
        train.append((volumes[order[n_test:]], torch.full((n - n_test,), float(label))))
    x_train, y_train = (torch.cat(part).to(device) for part in zip(*train))
    x_test, y_test = (torch.cat(part).to(device) for part in zip(*test))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _small_cnn(tuple(channels)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(x_train)), device=device)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x_train[batch])[:, 0], y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        scores = model(x_test)[:, 0]
    correct = int(((scores > 0).float() == y_test).sum())
    low, high = wilson_interval(correct, len(y_test))
    auc = float(roc_auc_score(y_test.cpu().numpy(), scores.cpu().numpy()))
    return TwoSampleTest(correct / len(y_test), low, high, len(y_test), len(y_train), auc)


def blurred_copy(volumes, sigma: float = 1.0, brain=None) -> torch.Tensor:
    """The volumes (N, 1, D, H, W) blurred by a Gaussian of ``sigma`` voxels along the three spatial
    axes (``scipy.ndimage.gaussian_filter``, truncated at 4 sigma, zero beyond the array's edges), with
    every voxel outside ``brain`` (bool, same shape; None: nowhere) set back to 0, so the copy keeps
    the original's outline and differs only in detail inside it. Returns a float32 tensor."""
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma={sigma}; allowed: a finite number of voxels > 0")
    x, mask = _masked(volumes, brain)
    smooth = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, sigma), mode="constant")
    return torch.from_numpy(np.where(mask, smooth, 0.0)[:, None].astype(np.float32))


def classifier_positive_control(real, brain=None, *, seed: int, sigma: float = 1.0, **settings) -> PositiveControl:
    """Can the classifier two-sample test see at all? It is run, with the same ``settings`` (keywords of
    :func:`classifier_two_sample_test`) and ``seed``, on real volumes (N, 1, D, H, W) against their
    :func:`blurred_copy` (Gaussian of ``sigma`` voxels, re-masked to ``brain``), which differ in fine
    detail only. It passes when the accuracy's Wilson 95 % interval lies above 0.5. A classifier that
    fails it cannot tell a blurred brain from a real one, so its verdict on other sets (a result near
    0.5 in particular) says nothing about them. Same-subject pairs may fall into training and test
    (one as real, one blurred); that makes the control easier, never harder, so a failure is telling.
    """
    result = classifier_two_sample_test(real, blurred_copy(real, sigma, brain), seed=seed, **settings)
    passed = bool(result.ci_low > 0.5)
    told = (
        f"accuracy {result.accuracy:.3f} (95 % interval {result.ci_low:.3f}-{result.ci_high:.3f}, AUC {result.auc:.3f}) "
        f"on {result.n_test} test volumes telling real volumes from their copy blurred with a Gaussian of sigma {sigma:g} voxel"
    )
    if passed:
        return PositiveControl(result, True, f"positive control passed: {told}, interval above 0.5")
    return PositiveControl(result, False, f"positive control failed: {told}; the interval includes or lies below 0.5")


def feature_two_sample_test(real, fake, *, seed: int, folds: int = 5) -> TwoSampleTest:
    """The baseline classifier beside :func:`classifier_two_sample_test`: logistic regression
    (scikit-learn, standardised features, L2 penalty C=1) on a few per-volume statistics (N, F) and
    (M, F), e.g. :func:`high_frequency_share` and :func:`mean_gradient_magnitude` as columns.

    Both sets are cut to the smaller one's size (seeded), so chance is exactly 0.5; every sample is
    scored once by a model fitted on the other folds (stratified ``folds``-fold cross-validation,
    seeded; fewer folds when a class has fewer samples). Returns the cross-validated accuracy, its
    Wilson 95 % interval, ``n_test`` (every sample), ``n_train`` (the training samples of the largest
    fold) and the AUC of the out-of-fold probabilities. Needs >= 2 samples per set and ``folds >= 2``.
    """
    real, fake = _pair(real, fake, ("real", "fake"), min_rows=2)
    if folds < 2:
        raise ValueError(f"folds={folds}; allowed: >= 2")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    x = np.concatenate([real[rng.permutation(len(real))[:n]], fake[rng.permutation(len(fake))[:n]]])
    y = np.repeat([0, 1], n)
    splits = StratifiedKFold(min(folds, n), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    p = cross_val_predict(model, x, y, cv=splits, method="predict_proba")[:, 1]
    correct = int(((p > 0.5) == y).sum())
    low, high = wilson_interval(correct, len(y))
    n_train = max(len(train) for train, _ in splits.split(x, y))
    return TwoSampleTest(correct / len(y), low, high, len(y), n_train, float(roc_auc_score(y, p)))


# ---------------------------------------------------------------------------------------------
# Detail and variety of volumes, inside the brain

HIGH_FREQUENCY_CUTOFF = 0.25  # cycles/voxel: half the Nyquist frequency


def _mask_of(mask, x: np.ndarray, name: str, voxel: str) -> np.ndarray:
    """``mask`` as a (N, D, H, W) bool array for the (N, D, H, W) volumes ``x``: bool (N, 1, D, H, W)
    with at least one True voxel per volume, or ValueError naming ``name`` (and saying what a ``voxel`` of it is)."""
    mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if mask.shape != (len(x), 1, *x.shape[1:]) or mask.dtype != bool:
        raise ValueError(f"{name}: shape {mask.shape}, dtype {mask.dtype}; allowed: bool of the volumes' shape {(len(x), 1, *x.shape[1:])}")
    empty = np.flatnonzero(~mask.reshape(len(x), -1).any(1))
    if len(empty):
        raise ValueError(f"{name}: no {voxel} in volumes {empty.tolist()}; allowed: at least one per volume")
    return mask[:, 0]


def _masked(volumes, brain, name: str = "volumes") -> tuple[np.ndarray, np.ndarray]:
    """(N, D, H, W) float64 volumes with every voxel outside ``brain`` set to 0, and the (N, D, H, W)
    bool brain (all True where ``brain`` is None)."""
    x = _volumes(volumes, name)[:, 0].detach().cpu().numpy().astype(np.float64)  # a copy, masked in place below
    if brain is None:
        return x, np.ones(x.shape, dtype=bool)
    mask = _mask_of(brain, x, "brain", "brain voxel")
    x[~mask] = 0.0
    return x, mask


def high_frequency_share(volumes, brain=None, *, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> np.ndarray:
    """Per volume (N, 1, D, H, W): the share of its spectral power above ``cutoff`` cycles/voxel; (N,)
    float64 in [0, 1]. Lower means smoother: a blurred copy scores lower, the "average brain" too.

    The volume is masked first: every voxel outside ``brain`` (bool, same shape; None: the whole
    volume) set to 0. Power is ``|X(f)|^2`` of its 3D discrete Fourier transform (``numpy.fft.fftn``
    over the volume's own grid, periodic). A coefficient's frequency is radial,
    ``|f| = sqrt(f_d^2 + f_h^2 + f_w^2)``, each ``f`` from ``numpy.fft.fftfreq`` in cycles/voxel (at
    most 0.5 per axis, 0.87 in a corner). Share = power at ``|f| > cutoff`` / power at ``|f| > 0``: the
    zero-frequency term (the mean brightness) is left out of both, so a brighter copy scores the same.
    Known answers: a sinusoid with a whole number of cycles across the grid gives 1 when its frequency
    is above ``cutoff`` and 0 below, whatever the axis (radially, so (3/16, 3/16) cycles/voxel, 0.265,
    counts as above 0.25). Values compare only at one voxel size: 0.25 cycles/voxel is 1/16 mm at
    4 mm and 1/8 mm at 2 mm. Raises ``ValueError`` for bad shapes, an empty brain or a volume with no
    power at any non-zero frequency (constant inside the whole grid).
    """
    if not 0 < cutoff < np.sqrt(3) / 2:
        raise ValueError(f"cutoff={cutoff}; allowed: 0 < cutoff < 0.866 cycles/voxel (the highest radial frequency)")
    x, _ = _masked(volumes, brain)
    axes = np.meshgrid(*(np.fft.fftfreq(n) for n in x.shape[1:]), indexing="ij")
    radial = np.sqrt(sum(f * f for f in axes))
    high, nonzero = radial > cutoff, radial > 0
    shares = np.empty(len(x))
    for i, volume in enumerate(x):
        power = np.abs(np.fft.fftn(volume)) ** 2
        total = power[nonzero].sum()
        if not total > 0:
            raise ValueError(f"volumes: volume {i} has no power at a non-zero frequency (constant); allowed: volumes that vary")
        shares[i] = power[high].sum() / total
    return shares


def mean_gradient_magnitude(volumes, brain=None, *, over=None) -> np.ndarray:
    """Per volume (N, 1, D, H, W): the mean over brain voxels of the intensity gradient's magnitude,
    ``sqrt(g_d^2 + g_h^2 + g_w^2)`` in intensity units per voxel; (N,) float64 >= 0. Lower means
    smoother (a blurred copy scores lower).

    The volume is masked first (every voxel outside ``brain``, bool of the same shape, set to 0; None:
    the whole volume is brain), so a brain voxel next to the background sees the step down to 0, as
    it does in every set compared. ``over`` (bool of the same shape; None: the brain) takes the mean
    over other voxels instead, e.g. the brain eroded by a few voxels to leave that step out (the
    reader study's cue check does). Gradients are ``numpy.gradient``'s: central differences inside the
    grid, one-sided at its edges. Known answer: a linear ramp ``a i + b j`` gives ``sqrt(a^2 + b^2)``
    at every voxel. Raises ``ValueError`` for bad shapes or an empty brain or ``over``.
    """
    x, mask = _masked(volumes, brain)
    if over is not None:
        mask = _mask_of(over, x, "over", "voxel to measure over")
    values = np.empty(len(x))
    for i, (volume, inside) in enumerate(zip(x, mask)):
        magnitude = np.sqrt(sum(g * g for g in np.gradient(volume)))
        values[i] = magnitude[inside].mean()
    return values


def high_pass_share(volumes, brain=None, *, over=None, sigma: float = 1.0) -> np.ndarray:
    """Per volume (N, 1, D, H, W): the share of its intensity variance over the voxels ``over`` that a
    Gaussian blur of ``sigma`` voxels removes, ``sum(r^2) / sum((v - mean v)^2)`` over those voxels with
    the high-pass residual ``r = v - G(v)`` (``scipy.ndimage.gaussian_filter``, its default 'reflect'
    edges); (N,) float64 >= 0: near 1 for voxel-scale noise or detail, 0 for smooth intensity ramps
    and for a constant region. Lower means smoother.

    Masked first like :func:`mean_gradient_magnitude` (``brain``; None: unmasked); ``over`` (bool of the
    same shape; None: the brain) is where the sums run. Unlike :func:`high_frequency_share`, whose
    Fourier transform spans the whole grid and so counts the brain's outline (the step to the
    background) as detail, this measure is local: over a brain eroded by a few voxels it sees texture
    only, not the outline's shape (the reader study's cue check uses it so). Raises ``ValueError`` for
    bad shapes, an empty brain or ``over``, or ``sigma <= 0``.
    """
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r}; allowed: > 0 voxels")
    x, mask = _masked(volumes, brain)
    if over is not None:
        mask = _mask_of(over, x, "over", "voxel to measure over")
    shares = np.empty(len(x))
    for i, (volume, inside) in enumerate(zip(x, mask)):
        residual = (volume - ndimage.gaussian_filter(volume, sigma))[inside]
        values = volume[inside]
        if values.max() == values.min():  # constant: 0 exactly (round-off in the mean would make the share anything)
            shares[i] = 0.0
            continue
        shares[i] = float(np.square(residual).sum() / np.square(values - values.mean()).sum())
    return shares


def pairwise_distances(volumes, brain=None) -> np.ndarray:
    """L2 distance between every pair of different volumes of one set (N, 1, D, H, W), each masked
    first (voxels outside ``brain``, bool of the same shape, set to 0; None: unmasked), in intensity
    units; (N (N - 1) / 2,) float64 in the order of ``scipy.spatial.distance.pdist`` (which computes
    them exactly: identical volumes are at 0). Variety: a set of near-copies of one volume has small
    distances; compare its median with a real set's at the same grid. Needs >= 2 volumes."""
    x, _ = _masked(volumes, brain)
    if len(x) < 2:
        raise ValueError(f"volumes: {len(x)} volumes; allowed: >= 2")
    return pdist(x.reshape(len(x), -1))


def buried_share(labels, tissue: int, surface, *, margin: int = 2) -> np.ndarray:
    """Per label map of ``labels`` (N, D, H, W) integer classes: the share of the ``tissue`` class's
    voxels that lie more than ``margin`` voxels (chessboard distance: ``margin`` dilations by a
    3x3x3 cube, ``scipy.ndimage.binary_dilation``) from every voxel of the ``surface`` classes.
    With ``tissue`` the cortical grey matter and ``surface`` CSF and background it measures grey
    matter buried inside white matter, where a real cortex is a ribbon along the brain's surface and
    folds; compare with real label maps at the same grid. (N,) float64 in [0, 1]; NaN for a map
    without the tissue. Raises ``ValueError`` for labels that are not (N, D, H, W) integers, for
    ``margin`` < 1, or for a ``tissue`` that is also in ``surface``."""
    x = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"labels: shape {x.shape}, dtype {x.dtype}; allowed: (N, D, H, W) integer classes")
    surface = [int(c) for c in np.atleast_1d(surface)]
    if not (isinstance(margin, int | np.integer) and margin >= 1):
        raise ValueError(f"margin={margin!r}; allowed: an integer number of voxels >= 1")
    if tissue in surface:
        raise ValueError(f"tissue={tissue}, surface={surface}; allowed: a tissue class that is not a surface class")
    cube = np.ones((3, 3, 3), bool)
    shares = np.full(len(x), np.nan)
    for i, volume in enumerate(x):
        voxels = volume == tissue
        if voxels.any():
            near = ndimage.binary_dilation(np.isin(volume, surface), cube, iterations=margin)
            shares[i] = float((voxels & ~near).sum() / voxels.sum())
    return shares


# ---------------------------------------------------------------------------------------------
# Memorisation


def nearest_neighbour_distances(query, reference, *, exclude_self: bool = False) -> Neighbours:
    """For each query sample, the L2 distance to its nearest reference sample and that sample's
    index (samples flattened: raw volumes or features). ``exclude_self``: query and reference are
    one set in one order, and each sample's match with itself is skipped. The nearest index is
    found through one matrix product; its distance is then recomputed exactly, so a copy of a
    reference sample is at distance 0.
    """
    query, reference = _pair(query, reference, ("query", "reference"))
    distances = _distances(query, reference)
    if exclude_self:
        if len(query) != len(reference) or len(query) < 2:
            raise ValueError(
                f"query, reference: {len(query)} and {len(reference)} samples with exclude_self=True; "
                "allowed: one set of >= 2 samples passed as both"
            )
        np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)
    exact = np.sqrt(((query - reference[nearest]) ** 2).sum(axis=1))
    return Neighbours(exact, nearest)


def nearest_neighbour_ratio(query, reference, *, exclude_self: bool = False) -> np.ndarray:
    """For each query sample, the distance to its nearest reference sample divided by the distance
    to its second nearest (the data-copying test of Meehan et al. 2020 in its simplest form). A
    copy of one reference sample gives 0; a sample no nearer to one reference than to the next
    gives values near 1. Unlike raw distances it does not reward smooth, average-looking samples,
    which are close to everything. ``exclude_self`` as in :func:`nearest_neighbour_distances`."""
    query, reference = _pair(query, reference, ("query", "reference"))
    if len(reference) < 2 + exclude_self:
        raise ValueError(f"reference: {len(reference)} samples; allowed: >= {2 + exclude_self}")
    distances = _distances(query, reference)
    if exclude_self:
        if len(query) != len(reference):
            raise ValueError(f"query, reference: {len(query)} and {len(reference)} samples with exclude_self=True; allowed: one set")
        np.fill_diagonal(distances, np.inf)
    two = np.sort(distances, axis=1)[:, :2]
    return two[:, 0] / np.maximum(two[:, 1], 1e-12)


def memorisation_report(synthetic, training, held_out_real) -> MemorisationReport:
    """Distance of each synthetic sample to its nearest training sample, against the same for
    held-out real samples, which the generator never saw. Flagged: synthetic samples closer to a
    training sample than any held-out real sample is, i.e. nearer than real subjects ever are.

    A copy of a training sample is at distance 0 and flagged. A generator whose samples are as
    novel as new real subjects still has each one flagged with probability 1 / (H + 1) for H
    held-out subjects (it is the closest of H + 1 exchangeable samples), so expect a few flags
    with small H and look at the flagged volumes beside their nearest training subject.
    """
    synthetic, training = _pair(synthetic, training, ("synthetic", "training"))
    held_out_real = _matrix(held_out_real, "held_out_real")
    if held_out_real.shape[1] != training.shape[1]:
        raise ValueError(f"held_out_real: {held_out_real.shape[1]} values per sample; allowed: the same as training ({training.shape[1]})")
    ours = nearest_neighbour_distances(synthetic, training)
    theirs = nearest_neighbour_distances(held_out_real, training).distances
    floor = float(theirs.min())
    return MemorisationReport(ours.distances, ours.indices, theirs, floor, np.flatnonzero(ours.distances < floor))


# ---------------------------------------------------------------------------------------------
# Conditioning accuracy


def _covariate(values, name: str) -> np.ndarray:
    values = (values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)).astype(np.float64)
    if values.ndim != 1 or len(values) < 3:
        raise ValueError(f"{name}: shape {values.shape}; allowed: one value per sample, >= 3 samples")
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: contains NaN or infinite values; allowed: finite values only")
    if values.std() == 0:
        raise ValueError(f"{name}: every value is {values[0]:g}; allowed: values that vary (Pearson r is undefined otherwise)")
    return values


def conditioning_accuracy(requested, measured) -> ConditioningAccuracy:
    """How well a generated covariate follows the one asked for: Pearson r between requested and
    measured values (one per sample), their mean absolute error and mean signed error (bias,
    measured minus requested), in the covariate's units.

    Known answers: measured == requested gives r = 1, MAE = 0; measured = requested + c gives
    r = 1, MAE = |c|, bias = c; measured unrelated to requested (e.g. shuffled) gives r near 0,
    within about 2 / sqrt(n). Needs >= 3 samples, and values that vary in both.
    """
    requested, measured = _covariate(requested, "requested"), _covariate(measured, "measured")
    if len(requested) != len(measured):
        raise ValueError(f"measured: {len(measured)} values; allowed: one per requested value ({len(requested)})")
    r = float(stats.pearsonr(requested, measured).statistic)
    error = measured - requested
    return ConditioningAccuracy(r, float(np.abs(error).mean()), float(error.mean()), len(requested))
