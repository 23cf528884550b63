import pytest
import torch

from synthbrain.autoencoder.losses import AutoencoderLossWeights, autoencoder_loss, kl_divergence, label_dice_loss
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder

TINY = AutoencoderConfig(num_classes=4, channels=(8, 16, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8)


def batch(n=2, shape=(16, 16, 16), classes=4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, *shape, generator=g), torch.randint(0, classes, (n, *shape), generator=g)


def test_shapes_of_a_joint_image_and_label_autoencoder():
    model = BrainAutoencoder(TINY)
    image, labels = batch()
    mu, sigma = model.encode(image, labels)
    assert mu.shape == sigma.shape == (2, 3, 4, 4, 4) and TINY.downsample == 4
    recon, logits = model.decode(mu)
    assert recon.shape == image.shape and logits.shape == (2, 4, 16, 16, 16)


def test_forward_is_reproducible_with_a_generator():
    model = BrainAutoencoder(TINY).eval()
    image, labels = batch()
    a = model(image, labels, generator=torch.Generator().manual_seed(1)).image
    b = model(image, labels, generator=torch.Generator().manual_seed(1)).image
    c = model(image, labels, generator=torch.Generator().manual_seed(2)).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = BrainAutoencoder(TINY)
    image, labels = batch(shape=(8, 8, 8))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        parts = autoencoder_loss(model(image, labels, generator=torch.Generator().manual_seed(step)), image, labels)
        optimiser.zero_grad()
        parts["total"].backward()
        optimiser.step()
        losses.append(parts["total"].item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_class_fractions_are_accepted_as_input_and_target():
    model = BrainAutoencoder(TINY)
    image, labels = batch()
    one_hot = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float()
    torch.testing.assert_close(model.encode(image, one_hot)[0], model.encode(image, labels)[0])
    out = model(image, labels, generator=torch.Generator().manual_seed(0))
    hard = autoencoder_loss(out, image, labels)["labels_ce"]
    soft = autoencoder_loss(out, image, one_hot)["labels_ce"]
    torch.testing.assert_close(hard, soft)


def test_label_dice_loss_counts_every_class_alike_and_is_off_by_default():
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6, 2:6] = 1
    labels[:, 3:5, 3:5, 3] = 2  # a small class: 4 of 512 voxels
    perfect = 50.0 * torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    assert label_dice_loss(perfect, labels).item() == pytest.approx(0.0, abs=1e-4)
    missed = perfect.clone()
    missed[:, 1][labels == 2] = 100.0  # the small class called class 1
    # cross-entropy barely notices the 4 voxels; Dice loses a third (one of three classes entirely)
    ce = torch.nn.functional.cross_entropy(missed, labels).item()
    dice = label_dice_loss(missed, labels).item()
    assert ce < 0.6 and dice > 0.33, (ce, dice)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    torch.testing.assert_close(label_dice_loss(missed, labels), label_dice_loss(missed, one_hot))
    model = BrainAutoencoder(TINY)
    image, target = batch()
    out = model(image, target, generator=torch.Generator().manual_seed(0))
    assert "labels_dice" not in autoencoder_loss(out, image, target)
    parts = autoencoder_loss(out, image, target, AutoencoderLossWeights(labels_dice=0.5))
    torch.testing.assert_close(parts["labels_dice"], label_dice_loss(out.label_logits, target))
    expected = parts["image_l1"] + parts["labels_ce"] + 0.5 * parts["labels_dice"] + 1e-6 * parts["kl"]
    torch.testing.assert_close(parts["total"], expected)
    with pytest.raises(ValueError, match="labels_dice=-1"):
        AutoencoderLossWeights(labels_dice=-1)


def test_windowed_reconstruction_runs_the_model_window_by_window():
    model = BrainAutoencoder(TINY).eval()
    image, labels = batch(n=1)
    whole, whole_classes = model.reconstruct(image, labels)
    single, single_classes = model.reconstruct(image, labels, window=(16, 16, 16))
    torch.testing.assert_close(single, whole)
    assert torch.equal(single_classes, whole_classes)
    # no overlap: each octant is exactly the model run on that crop alone
    tiled, tiled_classes = model.reconstruct(image, labels, window=(8, 8, 8), overlap=0)
    for corner in ((0, 0, 0), (8, 0, 8), (8, 8, 8)):
        region = tuple(slice(c, c + 8) for c in corner)
        alone, alone_classes = model.reconstruct(image[(..., *region)], labels[(..., *region)])
        torch.testing.assert_close(tiled[(..., *region)], alone)
        assert torch.equal(tiled_classes[(..., *region)], alone_classes)
    blended, classes = model.reconstruct(image, labels, window=(8, 8, 8), overlap=0.5)
    assert blended.shape == image.shape and classes.shape == labels.shape and torch.isfinite(blended).all()
    assert not torch.allclose(blended, whole) and not torch.allclose(blended, tiled)
    for window in ((6, 8, 8), (20, 8, 8), (8, 8)):
        with pytest.raises(ValueError, match="window="):
            model.reconstruct(image, labels, window=window)
    for overlap in (1.0, -0.1):
        with pytest.raises(ValueError, match="overlap="):
            model.reconstruct(image, labels, window=(8, 8, 8), overlap=overlap)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    assert kl_divergence(torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(0.0)
    assert kl_divergence(torch.ones(2, 3), torch.ones(2, 3)).item() == pytest.approx(1.5)


def test_image_only_autoencoder_and_bad_inputs():
    plain = BrainAutoencoder(AutoencoderConfig(num_classes=0, channels=(8, 8), norm_num_groups=8))
    image, labels = batch(shape=(8, 8, 8))
    assert plain(image).label_logits is None
    assert set(autoencoder_loss(plain(image), image, None, AutoencoderLossWeights())) == {"image_l1", "kl", "total"}
    model = BrainAutoencoder(TINY)
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.rand(1, 1, 10, 16, 16), torch.zeros(1, 10, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels: values in \[7, 7\]; allowed: \[0, 3\]"):
        model.encode(image, labels * 0 + 7)
    with pytest.raises(ValueError, match="labels: expected integer class indices"):
        model.encode(image)
    with pytest.raises(ValueError, match="num_classes=1"):
        AutoencoderConfig(num_classes=1)
    assert AutoencoderConfig.from_dict(TINY.to_dict()) == TINY
