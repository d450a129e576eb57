"""The evaluation protocol of Kim, Lee & Lee (CVPR 2016, §4.1) as their MATLAB scripts run it.

Per HR image and integer scale: the luminance (`vdsr_jax.color.luminance`: Y of MATLAB `rgb2ycbcr` on
doubles for colour, the image itself for grey; alpha ignored), cropped to a multiple of the scale; MATLAB
bicubic down- then up-scaling in float64 with no rounding (`vdsr_jax.resize.bicubic_degradation`); VDSR on
the upscaled Y (output clipped to [0, 1]); PSNR (peak 255) and SSIM of Wang et al. on Y·255 with `scale`
pixels shaved from each border (`vdsr_jax.metrics`); means over the images. Used alike by `train` (periodic
evaluation) and by the `evaluate` command.
"""
import time
from collections.abc import Callable, Mapping

import numpy as np
from tqdm import tqdm

from vdsr_jax.color import luminance
from vdsr_jax.metrics import SSIM_WINDOW, psnr, ssim
from vdsr_jax.resize import bicubic_degradation

METRICS = ("bicubic_psnr", "bicubic_ssim", "vdsr_psnr", "vdsr_ssim")

ApplyFn = Callable[[np.ndarray], np.ndarray]  # bicubic Y (H×W, [0, 1]) -> VDSR output, e.g. a TiledVDSR


def check_size(shape, scale: int) -> None:
    """ValueError unless an image of `shape` (H, W, …) keeps an SSIM window after modcrop and shaving."""
    side = min(n - n % scale for n in shape[:2]) - 2 * scale
    if side < SSIM_WINDOW:
        raise ValueError(f"image of {shape[1]}×{shape[0]} pixels is too small to evaluate at scale {scale}")


def evaluate_image(apply_fn: ApplyFn, pixels: np.ndarray, scale: int) -> dict:
    """Bicubic and VDSR PSNR (dB) and SSIM of one HR image (H×W×C uint8/uint16) at `scale`.

    PSNR is `inf` where the image is reproduced exactly (e.g. a flat image); see `mean_metric`.
    ValueError if the image is too small for the scale (`check_size`).
    """
    check_size(pixels.shape, scale)
    bicubic, truth = bicubic_degradation(luminance(pixels), scale)
    vdsr = np.clip(np.asarray(apply_fn(bicubic), np.float64), 0, 1) * 255
    truth, bicubic = truth * 255, bicubic * 255
    return {
        "bicubic_psnr": psnr(truth, bicubic, shave=scale),
        "bicubic_ssim": ssim(truth, bicubic, shave=scale),
        "vdsr_psnr": psnr(truth, vdsr, shave=scale),
        "vdsr_ssim": ssim(truth, vdsr, shave=scale),
    }


def mean_metric(values) -> float:
    """The mean over images; an infinite PSNR (an exact reproduction) makes the mean infinite, as in
    MATLAB's `mean`."""
    return float(np.mean(values))


def evaluate_images(apply_fn: ApplyFn, images, scale: int, progress=None) -> dict:
    """Means of `evaluate_image` over HR images, plus `scale`, `images` (the count) and `seconds` (wall
    time); `progress.update(1)` per image. ValueError for no images.

    For example `evaluate_images(TiledVDSR(model, params), images, 2)`.
    """
    if not images:
        raise ValueError("no images to evaluate")
    start = time.perf_counter()
    per_image = []
    for pixels in images:
        per_image.append(evaluate_image(apply_fn, pixels, scale))
        if progress is not None:
            progress.update(1)
    means = {key: mean_metric([m[key] for m in per_image]) for key in METRICS}
    return {"scale": scale, "images": len(images), **means, "seconds": time.perf_counter() - start}


def evaluate_sets(apply_fn: ApplyFn, sets: Mapping[str, list], scales, show_progress: bool = True) -> list[dict]:
    """One row (`evaluate_images` plus `dataset`: the set's name) per set and scale, under one progress bar."""
    total = sum(len(images) for images in sets.values()) * len(scales)
    with tqdm(total=total, desc="evaluate", unit="image", disable=None if show_progress else True) as bar:
        return [{"dataset": name, **evaluate_images(apply_fn, images, scale, bar)}
                for name, images in sets.items() for scale in scales]
