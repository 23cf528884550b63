"""Dice (synthbrain.overlap) against MONAI's compute_dice, the library it must agree with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from synthbrain.overlap import dice, dice_per_class


def test_dice_per_class_is_monais_dice_with_nan_for_a_class_in_neither_map():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (12, 10, 8)), rng.integers(0, 4, (12, 10, 8))
    a[a == 3] = 1  # class 3 only in b; class 4 in neither; class 5 only in a
    a[:2] = 5
    ours = dice_per_class(a, b, 6)
    monai = compute_dice(torch.as_tensor(a)[None, None], torch.as_tensor(b)[None, None], num_classes=6, ignore_empty=False)
    monai = monai[0].double().numpy()
    assert ours.dtype == np.float64 and ours.shape == (6,)
    np.testing.assert_allclose(ours[[0, 1, 2, 3, 5]], monai[[0, 1, 2, 3, 5]], rtol=1e-6)
    assert ours[3] == 0.0 and ours[5] == 0.0 and np.isnan(ours[4]) and monai[4] == 1.0


def test_dice_of_masks_is_monais():
    rng = np.random.default_rng(1)
    a, b = rng.random((9, 9, 9)) > 0.5, rng.random((9, 9, 9)) > 0.3
    monai = compute_dice(torch.as_tensor(a)[None, None], torch.as_tensor(b)[None, None], ignore_empty=False)
    assert dice(a, b) == pytest.approx(float(monai), rel=1e-6)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    empty = np.zeros((3, 3, 3), bool)
    assert dice(empty, empty) == 1.0 and dice(empty, ~empty) == 0.0
    assert dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)


def test_dice_cross_entropy_is_cross_entropy_plus_one_minus_the_mean_soft_dice_of_present_classes():
    from synthbrain.evaluation.networks import dice_cross_entropy

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 5, 5, 5, dtype=torch.float64), torch.randint(0, 3, (2, 5, 5, 5))  # class 3 absent
    target = F.one_hot(labels, 4).movedim(-1, 1).double()
    probabilities = torch.softmax(logits, 1)
    dims = (0, 2, 3, 4)
    soft_dice = (2 * (probabilities * target).sum(dims) + 1e-5) / ((probabilities + target).sum(dims) + 1e-5)
    expected = F.cross_entropy(logits, target) + 1 - soft_dice[:3].mean()
    assert float(dice_cross_entropy(logits, labels)) == pytest.approx(float(expected), rel=1e-12)
