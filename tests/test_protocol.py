"""The evaluation protocol (vdsr_jax.protocol) with stand-in predictors: the composition of luminance,
degradation, clipping, shaving and means against the steps written out here; and what surrounds it: the
benchmark folders it reads (`data.load_folder`), the strict JSON and Markdown table its results are written
as. A grey image as its own Y is in test_evaluate; Set14's bicubic figures against the paper's table too."""
import json
import math

import numpy as np
import pytest

from vdsr_jax.data import load_folder
from vdsr_jax.errors import DataError
from vdsr_jax.evaluate import markdown_table
from vdsr_jax.media import write_image
from vdsr_jax.protocol import check_size, evaluate_image, evaluate_images, evaluate_sets
from vdsr_jax.strict_json import json_safe
from vdsr_jax.resize import imresize

identity = lambda y: y  # noqa: E731 - a VDSR that changes nothing scores exactly as bicubic


def colour_image(seed=0, shape=(37, 44, 3)):
    """Smooth RGB with detail, so that bicubic loses something at every scale."""
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 6, shape), 0), 1) * 0.2 + 128
    return np.clip(smooth + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)


def matlab_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y of a uint8 image taken as doubles in [0, 1], as the scripts use it, in [0, 1]."""
    return (16 + rgb.astype(np.float64) / 255 @ np.array([65.481, 128.553, 24.966])) / 255


def psnr_by_hand(truth, test, shave):
    error = (truth - test)[shave:-shave, shave:-shave] * 255
    return 10 * np.log10(255**2 / np.mean(error**2))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_identity_predictor_scores_the_bicubic_psnr_of_the_matlab_y(scale):
    pixels = colour_image()
    result = evaluate_image(identity, pixels, scale)
    h, w = (n - n % scale for n in pixels.shape[:2])
    y = matlab_y(pixels[:h, :w])
    bicubic = imresize(imresize(y, 1 / scale), scale)
    assert result["bicubic_psnr"] == pytest.approx(psnr_by_hand(y, bicubic, scale), abs=1e-9)
    assert result["vdsr_psnr"] == result["bicubic_psnr"] and result["vdsr_ssim"] == result["bicubic_ssim"]
    assert 0 < result["bicubic_ssim"] < 1
    alpha = np.concatenate([pixels, np.zeros_like(pixels[..., :1])], -1)  # fully transparent: ignored
    assert evaluate_image(identity, alpha, scale) == result


@pytest.mark.parametrize("scale", [2, 3])
def test_scale_pixels_are_shaved_from_each_border(scale):
    """A predictor that spoils the `scale`-pixel border scores as bicubic; one that spoils a pixel just
    inside it does not."""
    pixels = colour_image(1)
    bicubic = evaluate_image(identity, pixels, scale)

    def spoil(rows, cols):
        def predict(y):
            y = y.copy()
            y[rows, cols] = np.where(y[rows, cols] > 0.5, 0.0, 1.0)  # far from the truth (bicubic is near)
            return y
        return predict

    for rows, cols in [(slice(0, scale), slice(None)), (slice(-scale, None), slice(None)),
                       (slice(None), slice(0, scale)), (slice(None), slice(-scale, None))]:
        assert evaluate_image(spoil(rows, cols), pixels, scale)["vdsr_psnr"] == bicubic["vdsr_psnr"]
    assert evaluate_image(spoil(scale, scale), pixels, scale)["vdsr_psnr"] < bicubic["vdsr_psnr"]
    assert evaluate_image(spoil(-scale - 1, -scale - 1), pixels, scale)["vdsr_psnr"] < bicubic["vdsr_psnr"]


def test_predictions_are_clipped_to_the_unit_range():
    pixels = colour_image(2)
    h, w = (n - n % 2 for n in pixels.shape[:2])
    y = matlab_y(pixels[:h, :w])
    result = evaluate_image(lambda b: np.full_like(b, 7.0), pixels, 2)  # clipped to 1: a white image
    assert result["vdsr_psnr"] == pytest.approx(psnr_by_hand(y, np.ones_like(y), 2), abs=1e-9)
    assert evaluate_image(lambda b: b - 5, pixels, 2)["vdsr_psnr"] == pytest.approx(
        psnr_by_hand(y, np.zeros_like(y), 2), abs=1e-9)


def test_means_over_images_and_an_exact_reproduction_is_infinite():
    images = [colour_image(3), colour_image(4, (30, 33, 3))]
    each = [evaluate_image(identity, im, 2) for im in images]
    result = evaluate_images(identity, images, 2)
    assert result["scale"] == 2 and result["images"] == 2 and result["seconds"] >= 0
    for key in ("bicubic_psnr", "bicubic_ssim", "vdsr_psnr", "vdsr_ssim"):
        assert result[key] == pytest.approx((each[0][key] + each[1][key]) / 2, abs=1e-12)
    flat = np.zeros((24, 24, 1), np.uint8)  # a grey image is its own Y: bicubic keeps 0 exactly
    assert evaluate_image(identity, flat, 2)["bicubic_psnr"] == math.inf
    assert evaluate_images(identity, [flat, images[0]], 2)["bicubic_psnr"] == math.inf
    with pytest.raises(ValueError, match="no images"):
        evaluate_images(identity, [], 2)


def test_sets_give_one_row_per_set_and_scale_in_order():
    sets = {"a": [colour_image(5)], "b": [colour_image(6), colour_image(7)]}
    rows = evaluate_sets(identity, sets, [3, 2], show_progress=False)
    assert [(r["dataset"], r["scale"], r["images"]) for r in rows] == [("a", 3, 1), ("a", 2, 1), ("b", 3, 2),
                                                                       ("b", 2, 2)]
    assert rows[2]["bicubic_psnr"] == evaluate_images(identity, sets["b"], 3)["bicubic_psnr"]


@pytest.mark.parametrize("scale, smallest", [(2, 16), (3, 18), (4, 20)])
def test_the_smallest_side_keeps_an_11_pixel_ssim_window_after_modcrop_and_shaving(scale, smallest):
    # Wang et al.'s window is 11×11: side − side mod scale − 2·scale ≥ 11
    check_size((smallest, 100, 3), scale)
    check_size((100, smallest), scale)
    with pytest.raises(ValueError, match=f"too small to evaluate at scale {scale}"):
        check_size((100, smallest - 1, 3), scale)
    evaluate_image(identity, colour_image(8, (smallest, smallest, 3)), scale)


def test_load_folder_reads_the_listed_images_and_refuses_what_it_cannot_use(tmp_path):
    images = {"b.png": colour_image(9, (20, 24, 3)), "a.png": colour_image(10, (30, 30, 1))}
    for name, pixels in images.items():
        write_image(tmp_path / name, pixels)
    (tmp_path / ".hidden.png").write_bytes(b"not read")
    loaded = load_folder(tmp_path, [2, 3])
    assert len(loaded) == 2
    np.testing.assert_array_equal(loaded[0], images["a.png"])
    np.testing.assert_array_equal(loaded[1], images["b.png"])
    with pytest.raises(DataError, match=r"b\.png: image of 24×20 pixels is too small to evaluate at scale 5"):
        load_folder(tmp_path, [2, 5])
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "absent", [2])
    with pytest.raises(DataError, match="is a file, not a folder of images"):
        load_folder(tmp_path / "a.png", [2])


def test_results_are_strict_json_and_a_markdown_table():
    row = {"dataset": "Set5", "scale": 2, "images": 5, "bicubic_psnr": math.inf, "bicubic_ssim": 1.0,
           "vdsr_psnr": 37.53456, "vdsr_ssim": 0.958744, "seconds": 3.21}
    text = json.dumps(json_safe({"rows": [row], "nan": [math.nan, -math.inf]}), allow_nan=False)
    assert json.loads(text) == {"rows": [{**row, "bicubic_psnr": "inf"}], "nan": ["nan", "-inf"]}
    table = markdown_table([row]).splitlines()
    assert table[0].startswith("| dataset | scale | images | bicubic PSNR")
    assert table[2] == "| Set5 | ×2 | 5 | inf | 1.0000 | 37.53 | 0.9587 | 3.2 |"
