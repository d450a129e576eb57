"""Comparison panels (vdsr_jax.panels): each image appears unchanged below its label strip, in order, with
white gaps between; grey shown as grey, alpha dropped, 16-bit rounded to 8-bit as v/257."""
import numpy as np

from vdsr_jax.panels import side_by_side


def test_each_image_sits_unchanged_under_its_label_strip_in_order():
    rng = np.random.default_rng(0)
    height, width = 40, 300  # font 12 (max(12, 300 // 25)): strip 18 px, gap 3 px
    rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
    grey = rng.integers(0, 256, (height, width, 1), np.uint8)
    rgba = np.concatenate([rgb[::-1], np.zeros((height, width, 1), np.uint8)], axis=-1)  # fully transparent
    deep = (rng.integers(0, 256, (height, width, 3)) * 257).astype(np.uint16)  # exact 8-bit values × 257
    out = side_by_side([rgb, grey, rgba, deep], ["a", "b", "c", "d"])
    strip, gap = 18, 3
    assert out.dtype == np.uint8 and out.shape == (height + strip, 4 * width + 3 * gap, 3)
    expected = [rgb, np.repeat(grey, 3, axis=-1), rgb[::-1], (deep // 257).astype(np.uint8)]
    for i, pixels in enumerate(expected):
        left = i * (width + gap)
        np.testing.assert_array_equal(out[strip:, left:left + width], pixels)
        label = out[:strip, left:left + width]
        assert (label == 255).mean() > 0.9 and (label < 128).any()  # a white strip with dark text in it
        if i:
            assert (out[:, left - gap:left] == 255).all()  # the gap before it is white
