"""Tests for vdsr_jax.metrics against direct implementations written here."""

import numpy as np
import pytest
from scipy.signal import convolve2d

from vdsr_jax.metrics import psnr, shave_border, ssim


def wang_ssim_index(img1, img2, L=255.0):
    """Wang et al.'s MATLAB ssim_index: fspecial('gaussian', 11, 1.5), filter2 'valid'."""
    r = np.arange(-5, 6)
    window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def filt(x):
        return convolve2d(x, window[::-1, ::-1], mode="valid")  # filter2 = correlation

    mu1, mu2 = filt(img1), filt(img2)
    s11 = filt(img1 * img1) - mu1**2
    s22 = filt(img2 * img2) - mu2**2
    s12 = filt(img1 * img2) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + C1) * (2 * s12 + C2)) / ((mu1**2 + mu2**2 + C1) * (s11 + s22 + C2))
    return ssim_map.mean()


def _pair(seed, shape=(40, 33)):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 255, size=shape)
    test = np.clip(ref + rng.normal(0, 12, size=shape), 0, 255)
    return ref, test


def test_psnr_matches_direct_formula():
    ref, test = _pair(0)
    mse = np.mean((ref[3:-3, 3:-3] - test[3:-3, 3:-3]) ** 2)
    assert psnr(ref, test, shave=3) == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-10)
    mse_full = np.mean((ref / 255 - test / 255) ** 2)
    assert psnr(ref / 255, test / 255, peak=1.0) == pytest.approx(-10 * np.log10(mse_full), abs=1e-10)


def test_psnr_identical_is_inf():
    ref, _ = _pair(1)
    assert psnr(ref, ref.copy()) == float("inf")


def test_psnr_ignores_shaved_border():
    ref, test = _pair(2)
    corrupted = test.copy()
    corrupted[:2, :] = 0
    corrupted[:, -2:] = 255
    assert psnr(ref, corrupted, shave=2) == psnr(ref, test, shave=2)


@pytest.mark.parametrize("shave", [0, 4])
def test_ssim_matches_wang_ssim_index(shave):
    ref, test = _pair(3)
    s = slice(shave, -shave if shave else None)
    expected = wang_ssim_index(ref[s, s], test[s, s])
    assert ssim(ref, test, shave=shave) == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 1


def test_ssim_matches_wang_on_structured_image_and_peak():
    y, x = np.mgrid[0:30, 0:25]
    ref = 0.5 + 0.4 * np.sin(x / 3.0) * np.cos(y / 5.0)
    test = ref + 0.05 * np.cos(x * y / 7.0)
    assert ssim(ref, test, peak=1.0) == pytest.approx(wang_ssim_index(ref, test, L=1.0), abs=1e-9)


def test_ssim_identical_is_one():
    ref, _ = _pair(4)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)


def test_shave_border():
    img = np.arange(6 * 7).reshape(6, 7)
    np.testing.assert_array_equal(shave_border(img, 2), img[2:4, 2:5])
    np.testing.assert_array_equal(shave_border(img, 0), img)
    with pytest.raises(ValueError):
        shave_border(img, 3)
    with pytest.raises(ValueError):
        shave_border(img, -1)


def test_shape_mismatch_and_non_2d_raise():
    with pytest.raises(ValueError):
        psnr(np.zeros((5, 5)), np.zeros((5, 6)))
    with pytest.raises(ValueError):
        ssim(np.zeros((20, 20, 3)), np.zeros((20, 20, 3)))
