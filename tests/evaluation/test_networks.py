import pytest
import torch
import torch.nn.functional as F

from synthbrain.evaluation.evaluators import EvaluatorSettings
from synthbrain.evaluation.networks import Encoder3d, UNet3d, predict, train_network


def test_shapes_on_odd_grids():
    x = torch.rand(2, 1, 10, 14, 10)
    assert UNet3d(5, (4, 8, 8))(x).shape == (2, 5, 10, 14, 10)
    assert Encoder3d(3, (4, 8))(x).shape == (2, 3)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 3, "channels": (4,)}])
def test_unet_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="num_classes="):
        UNet3d(**kwargs)


def _task(n=16, seed=0):
    """Bright cubes (class 1) in dark noise: a segmentation that can be learned in a few steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, 8, generator=g) * 0.2
    y = torch.zeros(n, 8, 8, 8, dtype=torch.long)
    for i in range(n):
        a = int(torch.randint(0, 4, (1,), generator=g))
        x[i, 0, a : a + 4, a : a + 4, 2:6] += 0.8
        y[i, a : a + 4, a : a + 4, 2:6] = 1
    return x, y


def test_training_is_seeded_learns_and_leaves_the_global_state_alone():
    x, y = _task()
    first = UNet3d(2, (4, 8))
    state = torch.random.get_rng_state()
    losses_a = train_network(first, x, y, F.cross_entropy, steps=40, seed=1, lr=1e-2)
    assert torch.equal(torch.random.get_rng_state(), state)
    model = UNet3d(2, (4, 8))
    losses_b = train_network(model, x, y, F.cross_entropy, steps=40, seed=1, lr=1e-2)
    assert losses_a == losses_b
    assert losses_b[-1] < 0.5 * losses_b[0]
    accuracy = (predict(model, x).argmax(1) == y).float().mean()
    assert accuracy > 0.9
    other = train_network(UNet3d(2, (4, 8)), x, y, F.cross_entropy, steps=40, seed=2, lr=1e-2)
    assert other != losses_b


def test_augmentation_is_applied_and_seeded():
    x, y = _task(4)
    calls = []

    def augment(image, target):
        calls.append(1)
        return image + 0.01 * torch.randn_like(image), target  # draws from the seeded global generator

    a = train_network(Encoder3d(1, (4,)), x, y.float().mean((1, 2, 3))[:, None], F.mse_loss, steps=3, seed=0, batch_size=2, augment=augment)
    b = train_network(Encoder3d(1, (4,)), x, y.float().mean((1, 2, 3))[:, None], F.mse_loss, steps=3, seed=0, batch_size=2, augment=augment)
    assert len(calls) == 12 and a == b


def test_bf16_mixed_training_learns_is_seeded_and_is_not_float32():
    x, y = _task()
    runs = [train_network(UNet3d(2, (4, 8)), x, y, F.cross_entropy, steps=40, seed=1, lr=1e-2, precision="bf16-mixed") for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0][-1] < 0.5 * runs[0][0]
    assert runs[0] != train_network(UNet3d(2, (4, 8)), x, y, F.cross_entropy, steps=40, seed=1, lr=1e-2)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"precision": "16-mixed"}])
def test_train_network_rejects_bad_settings(kwargs):
    x, y = _task(2)
    with pytest.raises(ValueError, match="allowed"):
        train_network(UNet3d(2, (4, 8)), x, y, F.cross_entropy, **{"steps": 1, "seed": 0, **kwargs})
    with pytest.raises(ValueError, match="the same number"):
        train_network(UNet3d(2, (4, 8)), x, y[:1], F.cross_entropy, steps=1, seed=0)


def test_dice_cross_entropy_known_answers():
    from synthbrain.evaluation.networks import dice_cross_entropy

    labels = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    labels[:, :2] = 1
    perfect = 50.0 * F.one_hot(labels, 3).movedim(-1, 1).float()  # confident and right; class 2 absent
    assert float(dice_cross_entropy(perfect, labels)) == pytest.approx(0.0, abs=1e-4)
    assert float(dice_cross_entropy(perfect, labels.float())) == pytest.approx(0.0, abs=1e-4)  # indices as floats
    fractions = F.one_hot(labels, 3).movedim(-1, 1).float()
    assert float(dice_cross_entropy(perfect, fractions)) == pytest.approx(0.0, abs=1e-4)
    wrong = 50.0 * F.one_hot(1 - labels, 3).movedim(-1, 1).float()
    assert float(dice_cross_entropy(wrong, labels)) > 50  # cross-entropy of confident mistakes, plus Dice 0 -> loss + 1


def test_evaluator_settings_reject_an_unknown_precision():
    with pytest.raises(ValueError, match="segmenter_precision='fp16'; allowed"):
        EvaluatorSettings(segmenter_precision="fp16")
