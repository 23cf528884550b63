import numpy as np
import pytest

from synthbrain.preprocessing.intensity import robust_normalize


def test_maps_percentiles_to_unit_interval_and_zeroes_outside():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    out, low, high = robust_normalize(image, mask, (1.0, 99.0))
    assert low == pytest.approx(np.percentile(image[mask], 1.0)) and high == pytest.approx(np.percentile(image[mask], 99.0))
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    assert (out[~mask] == 0).all()
    inside = (image > low) & (image < high) & mask
    np.testing.assert_allclose(out[inside], (image[inside] - low) / (high - low), rtol=1e-5)
    kept, _, _ = robust_normalize(image, mask, (1.0, 99.0), zero_outside=False)
    assert (kept[~mask] > 0).any()


@pytest.mark.parametrize("percentiles", [(50, 50), (-1, 99), (1, 101)])
def test_bad_percentiles_are_named(percentiles):
    with pytest.raises(ValueError, match="percentiles="):
        robust_normalize(np.ones((4, 4, 4)), np.ones((4, 4, 4)), percentiles)


def test_empty_mask_and_constant_image_raise():
    with pytest.raises(ValueError, match="mask is empty"):
        robust_normalize(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="constant"):
        robust_normalize(np.ones((4, 4, 4)), np.ones((4, 4, 4)))
