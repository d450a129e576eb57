"""vdsr_jax.color against MATLAB's documented matrices and the grey-as-Y rule of VDSR's scripts."""
import numpy as np
import pytest

from vdsr_jax.color import luminance, quantize, rgb2y, rgb2ycbcr, to_unit, ycbcr2rgb

# ---------------------------------------------------------------- colour

# MATLAB rgb2ycbcr documentation: for double input in [0, 1],
# Y  = (16  +  65.481 R + 128.553 G +  24.966 B) / 255
# Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255
# Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255
MATLAB_T = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
MATLAB_OFFSET = np.array([16.0, 128.0, 128.0])


def test_rgb2ycbcr_matches_matlab_matrix():
    rng = np.random.default_rng(5)
    rgb = rng.uniform(0, 1, size=(5, 6, 3))
    expected = np.einsum("pq,hwq->hwp", MATLAB_T, rgb) / 255 + MATLAB_OFFSET / 255
    np.testing.assert_allclose(rgb2ycbcr(rgb), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(rgb2y(rgb), expected[..., 0], rtol=0, atol=1e-14)


def test_ycbcr_ranges_at_black_and_white():
    black_white = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    ycc = rgb2ycbcr(black_white)
    np.testing.assert_allclose(ycc[0, :, 0], [16 / 255, 235 / 255], atol=1e-12)
    np.testing.assert_allclose(ycc[0, :, 1:], 128 / 255, atol=1e-12)


def test_ycbcr2rgb_inverts_rgb2ycbcr():
    rng = np.random.default_rng(6)
    rgb = rng.uniform(0, 1, size=(7, 4, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, rtol=0, atol=1e-12)
    ycc = rng.uniform(16 / 255, 235 / 255, size=(3, 3, 3))
    expected = np.einsum("pq,hwq->hwp", np.linalg.inv(MATLAB_T), ycc * 255 - MATLAB_OFFSET)
    np.testing.assert_allclose(ycbcr2rgb(ycc), expected, rtol=0, atol=1e-12)


def test_colour_rejects_wrong_channel_count():
    with pytest.raises(ValueError):
        rgb2ycbcr(np.zeros((4, 4)))




# ---------------------------------------------------------------- luminance


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("alpha", [False, True])
def test_a_grey_image_is_its_own_luminance(dtype, alpha):
    top = np.iinfo(dtype).max
    grey = np.random.default_rng(10).integers(0, top + 1, size=(6, 5, 1), dtype=dtype)
    pixels = np.concatenate([grey, np.full_like(grey, top // 3)], -1) if alpha else grey
    for integer in (False, True):
        np.testing.assert_array_equal(luminance(pixels, integer=integer), grey[..., 0] / top)


def test_colour_luminance_is_matlab_y_and_its_integer_form_rounds_like_rgb2ycbcr_on_uint8():
    rgb = np.random.default_rng(11).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    y = (16 + MATLAB_T[0] @ np.moveaxis(rgb / 255.0, -1, 0).reshape(3, -1)).reshape(7, 9) / 255
    np.testing.assert_allclose(luminance(rgb), y, rtol=0, atol=1e-14)
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1)
    np.testing.assert_allclose(luminance(rgba), y, rtol=0, atol=1e-14)  # alpha ignored
    np.testing.assert_array_equal(luminance(rgb, integer=True) * 255, np.round(y * 255))


def test_to_unit_and_quantize():
    pixels = np.array([[[0, 128, 255, 255]]], np.uint8)
    colour, alpha = to_unit(pixels)
    np.testing.assert_array_equal(colour, [[[0, 128 / 255, 1]]])
    np.testing.assert_array_equal(alpha, [[1.0]])
    np.testing.assert_array_equal(quantize(np.array([-0.1, 0.5 / 255, 1.5 / 255, 1.2]), np.uint8), [0, 1, 2, 255])
