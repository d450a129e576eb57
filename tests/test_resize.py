"""vdsr_jax.resize against independently written expectations.

The reference resizer below is a direct per-output-pixel loop: Keys' cubic in
its general-``a`` form, pixel-centre coordinate mapping, and ``np.pad``'s
'symmetric' mode for MATLAB's edge rule.  It shares no code with the module.
"""

import math

import numpy as np
import pytest

from vdsr_jax.resize import BicubicWindows, bicubic_degradation, imresize, modcrop, phase_filters, resize_weights


def keys_cubic(x, a=-0.5):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def reference_resize_1d(signal, scale, out_len):
    """Loop over output pixels; antialiased (kernel stretched by 1/scale) when shrinking."""
    signal = np.asarray(signal, dtype=np.float64)
    stretch = min(scale, 1.0)
    half_width = 2.0 / stretch
    pad = int(math.ceil(half_width)) + 2
    padded = np.pad(signal, pad, mode="symmetric")
    out = np.empty(out_len)
    for i in range(out_len):
        centre = (i + 0.5) / scale - 0.5  # 0-based position in the input
        taps = range(math.floor(centre - half_width), math.ceil(centre + half_width) + 1)
        weights = np.array([stretch * keys_cubic(stretch * (centre - j)) for j in taps])
        values = np.array([padded[j + pad] for j in taps])
        out[i] = weights @ values / weights.sum()
    return out


def reference_resize_2d(img, scale_hw, out_hw):
    rows = np.stack([reference_resize_1d(col, scale_hw[0], out_hw[0]) for col in img.T], axis=1)
    return np.stack([reference_resize_1d(row, scale_hw[1], out_hw[1]) for row in rows], axis=0)


# ---------------------------------------------------------------- imresize


def test_upscale_by_2_matches_hand_derived_matlab_values():
    # imresize([1 2 3 4], 2): for scale 2 the taps sit at fractional offsets
    # .25/.75 giving weights (-3/128, 29/128, 111/128, -9/128) and mirror image;
    # edges mirror as [2 1 | 1 2 3 4 | 4 3].
    expected = np.array([0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375])
    out = imresize(np.array([[1.0, 2.0, 3.0, 4.0]]), 2)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(out, np.stack([expected, expected]), rtol=0, atol=1e-15)
    col = imresize(np.array([[1.0], [2.0], [3.0], [4.0]]), 2)
    np.testing.assert_allclose(col[:, 0], expected, rtol=0, atol=1e-15)


def test_downscale_by_2_matches_hand_derived_values():
    # Kernel 0.5*cubic(0.5 x): weights 111/256, 29/256, -9/256, -3/256 at
    # distances .5, 1.5, 2.5, 3.5; a ramp stays a ramp except where mirrored
    # taps (values 1,2,3 instead of 0,-1,-2) enter.
    expected = np.array([1.44921875, 3.48828125, 5.51171875, 7.55078125])
    out = imresize(np.arange(1.0, 9.0)[None, :], 0.5)
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [2, 3, 4, 0.5, 1 / 3, 0.7, 3.7, 1.5])
def test_matches_independent_loop(scale):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(9, 13))
    out_hw = (math.ceil(scale * 9), math.ceil(scale * 13))
    expected = reference_resize_2d(img, (scale, scale), out_hw)
    out = imresize(img, scale)
    assert out.shape == out_hw
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


def test_anisotropic_scale_and_output_shape_match_independent_loop():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, size=(12, 10))
    np.testing.assert_allclose(
        imresize(img, (0.5, 2.5)), reference_resize_2d(img, (0.5, 2.5), (6, 25)), atol=1e-12
    )
    # output_shape (7, 4): scales 7/12 and 4/10.
    np.testing.assert_allclose(
        imresize(img, output_shape=(7, 4)),
        reference_resize_2d(img, (7 / 12, 4 / 10), (7, 4)),
        atol=1e-12,
    )


def test_tiny_inputs_mirror_repeatedly():
    # 2 pixels with a 8-wide (antialiased) kernel: taps wrap the mirror several times.
    img = np.array([[3.0, 7.0], [1.0, 5.0]])
    np.testing.assert_allclose(imresize(img, 1 / 3), reference_resize_2d(img, (1 / 3, 1 / 3), (1, 1)), atol=1e-12)
    np.testing.assert_allclose(imresize(img, 3), reference_resize_2d(img, (3, 3), (6, 6)), atol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1 / 3, 0.5, 2, 3.7])
def test_constant_image_stays_constant(scale):
    out = imresize(np.full((11, 8), 42.5), scale)
    np.testing.assert_allclose(out, 42.5, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_ramp_stays_linear_in_interior_when_upscaling(scale):
    h, w = 10, 12
    img = 3.0 * np.arange(h)[:, None] + 5.0 * np.arange(w)[None, :]
    out = imresize(img, scale)
    # Output pixel i sits at input coordinate (i + 0.5)/scale - 0.5.
    y = (np.arange(h * scale) + 0.5) / scale - 0.5
    x = (np.arange(w * scale) + 0.5) / scale - 0.5
    expected = 3.0 * y[:, None] + 5.0 * x[None, :]
    m = 2 * scale  # away from the mirrored border
    np.testing.assert_allclose(out[m:-m, m:-m], expected[m:-m, m:-m], atol=1e-11)


def test_output_sizes():
    img = np.zeros((17, 23))
    assert imresize(img, 1 / 3).shape == (6, 8)
    assert imresize(img, 3.7).shape == (63, 86)  # ceil(62.9), ceil(85.1)
    assert imresize(img, (2, 0.5)).shape == (34, 12)
    assert imresize(img, output_shape=(5, 40)).shape == (5, 40)


def test_channels_resized_independently():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, size=(8, 9, 3))
    out = imresize(img, 0.7)
    assert out.shape == (6, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], imresize(img[..., c], 0.7))


def test_output_is_float64_and_input_untouched():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = imresize(img, 2)
    assert out.dtype == np.float64
    assert img.dtype == np.uint8 and img[3, 3] == 15


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"scale": 2, "output_shape": (4, 4)},
        {"scale": 0},
        {"scale": -1},
        {"scale": float("inf")},
        {"scale": float("nan")},
        {"scale": (2, 3, 4)},
        {"scale": "2"},
        {"output_shape": (0, 4)},
        {"output_shape": (4.5, 4)},
        {"output_shape": 4.0},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), **kwargs)


def test_one_dimensional_input_rejected():
    with pytest.raises(ValueError):
        imresize(np.zeros(4), 2)


# ---------------------------------------------------------------- banded weights and windows


@pytest.mark.parametrize("in_len, scale", [(1, 3.0), (2, 0.5), (7, 1 / 3), (40, 0.7), (13, 3.7), (9, 2.0)])
def test_banded_weights_equal_the_independent_loop(in_len, scale):
    out_len = math.ceil(in_len * scale)
    weights = resize_weights(in_len, out_len, scale)
    identity = np.eye(in_len)
    expected = np.stack([reference_resize_1d(column, scale, out_len) for column in identity.T], axis=1)
    np.testing.assert_allclose(weights.dense(), expected, rtol=0, atol=1e-12)
    assert weights.weights.shape[1] <= math.ceil(4 / min(scale, 1)) + 2  # banded, not dense


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.7])
def test_windows_assemble_the_whole_upscale(scale):
    rng = np.random.default_rng(8)
    img = rng.uniform(0, 1, size=(23, 17, 2))
    windows = BicubicWindows(23, 17, scale)
    whole = imresize(img, scale)
    assert windows.out_shape == whole.shape[:2]
    h, w = windows.out_shape
    for window in [(slice(0, h), slice(0, w)), (slice(3, h // 2), slice(w // 3, w)), (slice(h - 1, h), slice(0, 1))]:
        got = windows(lambda rows, cols: img[rows, cols], window)
        np.testing.assert_allclose(got, whole[window], rtol=0, atol=1e-12)


def test_bicubic_degradation_is_modcrop_then_down_then_up():
    rng = np.random.default_rng(9)
    hr = rng.uniform(0, 1, size=(26, 19))
    bicubic, target = bicubic_degradation(hr, 3)
    np.testing.assert_array_equal(target, hr[:24, :18])
    expected = reference_resize_2d(reference_resize_2d(hr[:24, :18], (1 / 3, 1 / 3), (8, 6)), (3, 3), (24, 18))
    np.testing.assert_allclose(bicubic, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- modcrop


def test_modcrop_shapes_and_keeps_top_left():
    img = np.arange(17 * 23 * 3).reshape(17, 23, 3)
    out = modcrop(img, 3)
    assert out.shape == (15, 21, 3)
    np.testing.assert_array_equal(out, img[:15, :21])
    assert modcrop(np.zeros((16, 24)), 4).shape == (16, 24)
    assert modcrop(np.zeros((17, 23)), 2).shape == (16, 22)


@pytest.mark.parametrize("scale", [0, -2, 2.5, True])
def test_modcrop_rejects_bad_scale(scale):
    with pytest.raises(ValueError):
        modcrop(np.zeros((4, 4)), scale)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("shape", [(2, 3), (5, 2), (9, 13)])
def test_phase_filters_on_symmetric_padding_are_imresize(scale, shape):
    """Integer-scale upscaling as numpy's symmetric padding plus one fixed filter per output phase equals
    `imresize`, down to 2-sample sides (the ONNX pipeline computes it this way)."""
    image = np.random.default_rng(scale).random(shape)
    filters = phase_filters(scale)
    padded = np.pad(image, 2, mode="symmetric")
    rows = np.stack([filters[o % scale] @ padded[o // scale:o // scale + 5] for o in range(scale * shape[0])])
    both = np.stack([rows[:, o // scale:o // scale + 5] @ filters[o % scale] for o in range(scale * shape[1])], 1)
    np.testing.assert_allclose(both, imresize(image, scale), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0, 2.5, True])
def test_phase_filters_need_an_integer_scale(scale):
    with pytest.raises(ValueError):
        phase_filters(scale)
