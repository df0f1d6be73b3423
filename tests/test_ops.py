import numpy as np
import pytest

from unioncam_rt.method.ops import gaussian_blur, is_constant, minmax, resize_bilinear, softmax

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("src,dst", [((7, 7), (224, 224)), ((14, 14), (224, 224)), ((5, 9), (17, 4)), ((1, 3), (6, 6))])
def test_resize_bilinear_matches_torch(src, dst):
    maps = np.random.default_rng(1).random((2, 3, *src))
    ours = resize_bilinear(maps, dst)
    ref = F.interpolate(torch.from_numpy(maps), size=dst, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_gaussian_blur_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    images = np.random.default_rng(2).random((2, 3, 64, 64)).astype(np.float32)
    ref = tvf.gaussian_blur(torch.from_numpy(images), [51, 51], [50.0, 50.0]).numpy()
    np.testing.assert_allclose(gaussian_blur(images), ref, atol=1e-5)


def test_minmax_constant_maps_become_zeros_not_nan():
    maps = np.stack([np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)])
    out = minmax(maps)
    assert not np.isnan(out).any()
    assert (out[0] == 0).all()
    assert out[1].min() == 0 and out[1].max() == 1
    assert is_constant(maps).tolist() == [True, False]


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1000.0, 0.0, -5.0], [1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 0] == pytest.approx(1.0)
