import pytest
import torch

from synthbrain.diffusion.model import NULL_CONDITION, ConditionalUNet, DiffusionConfig, drop_conditions

TINY = DiffusionConfig(
    latent_channels=3, condition_dim=4, channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8
)


def randomised(model):
    """MONAI zero-initialises the output layers (the model predicts 0 at first); give them random
    weights so a test can tell outputs apart."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.1)
    return model


def test_predicts_noise_of_the_latent_shape_and_uses_the_condition():
    torch.manual_seed(0)
    model = randomised(ConditionalUNet(TINY)).eval()
    x = torch.randn(2, 3, 8, 8, 8)
    t = torch.tensor([10, 500])
    a = model(x, t, torch.tensor([[0.0, 0.2, 0.4, 0.6]] * 2))
    b = model(x, t, torch.tensor([[1.0, 0.9, 0.1, 0.3]] * 2))
    assert a.shape == x.shape
    assert not torch.allclose(a, b)


def test_embedded_condition_reaches_the_timestep_embedding_and_round_trips():
    config = DiffusionConfig(**{**TINY.to_dict(), "channels": (16, 32), "attention_levels": (False, True), "embed_condition": True})
    torch.manual_seed(0)
    model = randomised(ConditionalUNet(config)).eval()
    assert isinstance(model.net.class_embedding, torch.nn.Sequential)
    x, t = torch.randn(2, 3, 8, 8, 8), torch.tensor([10, 500])
    c1, c2 = torch.tensor([[0.0, 0.2, 0.4, 0.6]] * 2), torch.tensor([[1.0, 0.9, 0.1, 0.3]] * 2)
    with torch.no_grad():
        before = model(x, t, c1) - model(x, t, c2)
        for p in model.net.class_embedding.parameters():
            p.zero_()  # with the embedding path silenced the outputs change: it was in use
        after = model(x, t, c1) - model(x, t, c2)
    assert not torch.allclose(before, after, atol=1e-4)
    assert DiffusionConfig.from_dict(config.to_dict()) == config
    assert not hasattr(ConditionalUNet(TINY).net, "class_embedding")  # the reference-style model has no such path


def test_guidance_scale_one_is_the_conditional_prediction_and_zero_the_unconditional():
    torch.manual_seed(0)
    model = randomised(ConditionalUNet(TINY)).eval()
    x, c = torch.randn(2, 3, 8, 8, 8), torch.rand(2, 4)
    t = torch.full((2,), 100)
    with torch.no_grad():
        cond, null = model(x, t, c), model(x, t, torch.full_like(c, NULL_CONDITION))
        assert (cond - null).abs().max() > 0.05  # the two branches differ, so the mixing is tested
        # One batched call of both branches differs from two calls by float rounding only.
        torch.testing.assert_close(model.guided(x, 100, c, 1.0), cond)
        torch.testing.assert_close(model.guided(x, 100, c, 0.0), null, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(model.guided(x, 100, c, 3.0), null + 3.0 * (cond - null), rtol=1e-3, atol=1e-4)


def test_condition_dropout_rate_and_reproducibility():
    c = torch.rand(10000, 4)
    dropped = drop_conditions(c, 0.2, torch.Generator().manual_seed(0))
    is_null = (dropped == NULL_CONDITION).all(dim=1)
    assert 0.18 < is_null.float().mean().item() < 0.22
    torch.testing.assert_close(dropped[~is_null], c[~is_null])
    assert torch.equal(dropped, drop_conditions(c, 0.2, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="probability=1.5"):
        drop_conditions(c, 1.5)


def test_bad_condition_shape_and_config_are_named():
    model = ConditionalUNet(TINY)
    with pytest.raises(ValueError, match=r"condition: shape \(2, 3\); expected \(2, 4\)"):
        model(torch.randn(2, 3, 8, 8, 8), torch.tensor([1, 2]), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"latent spatial shape \(5, 8, 8\) must be divisible by 2"):
        model(torch.randn(2, 3, 5, 8, 8), torch.tensor([1, 2]), torch.rand(2, 4))
    with pytest.raises(ValueError, match="attention_levels"):
        DiffusionConfig(channels=(16, 32), attention_levels=(True,), norm_num_groups=8)
    assert DiffusionConfig.from_dict(TINY.to_dict()) == TINY
