"""Evaluate VDSR on benchmark folders under the MATLAB protocol of Kim et al. (CVPR 2016).

    python -m vdsr_jax.evaluate --checkpoint DIR --data-dir DIR [--data-dir DIR ...] --scales 2,3,4 [--json OUT]

Prints a Markdown table (dataset, scale, images, bicubic and VDSR PSNR/SSIM, seconds) and writes the same
rows as JSON. Protocol, per image: RGB in [0, 1] (grey as three equal channels, alpha ignored), cropped to a
multiple of the scale; MATLAB `rgb2ycbcr`; MATLAB bicubic down- then up-scaling of the whole YCbCr image in
float64 with no rounding; VDSR on the upscaled Y (not clipped); PSNR and SSIM on Y·255 (VDSR output clipped
to [0, 255]) with `scale` pixels shaved from each border; means over the images.
"""
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vdsr_jax.checkpoint import load_model
from vdsr_jax.cli import ArgumentParser, CliError, atomic_output, image_files, read_image, run, split_alpha
from vdsr_jax.image import imresize, modcrop, rgb2ycbcr
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.metrics import psnr, ssim

MAX_SCALE = 16
SSIM_WINDOW = 11
METRICS = ("bicubic_psnr", "bicubic_ssim", "vdsr_psnr", "vdsr_ssim")

ApplyFn = Callable[[np.ndarray], np.ndarray]  # upscaled Y (H×W, [0, 1]) -> VDSR output, e.g. a TiledVDSR


def check_size(shape, scale: int) -> None:
    """ValueError unless an image of `shape` still has an SSIM window left after modcrop and shaving."""
    side = min(n - n % scale for n in shape[:2]) - 2 * scale
    if side < SSIM_WINDOW:
        raise ValueError(f"image of {shape[1]}×{shape[0]} pixels is too small to evaluate at scale {scale}")


def evaluate_image(apply_fn: ApplyFn, pixels: np.ndarray, scale: int) -> dict:
    """Bicubic and VDSR PSNR/SSIM of one HR image (uint8/uint16, H×W or H×W×C); see the module docstring."""
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    check_size(pixels.shape, scale)
    colour, _ = split_alpha(pixels)
    ycbcr = rgb2ycbcr(modcrop(colour, scale))
    upscaled = imresize(imresize(ycbcr, 1 / scale), scale)
    truth = ycbcr[..., 0] * 255
    vdsr = np.clip(np.asarray(apply_fn(upscaled[..., 0]), np.float64) * 255, 0, 255)
    bicubic = upscaled[..., 0] * 255
    return {
        "bicubic_psnr": psnr(truth, bicubic, shave=scale),
        "bicubic_ssim": ssim(truth, bicubic, shave=scale),
        "vdsr_psnr": psnr(truth, vdsr, shave=scale),
        "vdsr_ssim": ssim(truth, vdsr, shave=scale),
    }


def evaluate_images(apply_fn: ApplyFn, images: list[np.ndarray], scale: int, progress=None) -> dict:
    """Mean metrics over in-memory HR images, plus `images` and `seconds`; `progress.update(1)` per image.

    For periodic evaluation during training: `evaluate_images(TiledVDSR(model, params), images, 2)`.
    """
    if not images:
        raise ValueError("no images to evaluate")
    start = time.perf_counter()
    per_image = []
    for pixels in images:
        per_image.append(evaluate_image(apply_fn, pixels, scale))
        if progress is not None:
            progress.update(1)
    means = {key: float(np.mean([m[key] for m in per_image])) for key in METRICS}
    return {"scale": scale, "images": len(images), **means, "seconds": time.perf_counter() - start}


def load_dataset(directory, scales) -> list[np.ndarray]:
    """The images of a benchmark folder; CliError if it is missing, empty, or an image is unusable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CliError(f"data directory {directory} does not exist")
    images = []
    for path in image_files([directory]):
        pixels = read_image(path)
        for scale in scales:
            try:
                check_size(pixels.shape, scale)
            except ValueError as e:
                raise CliError(f"{path}: {e}") from None
        images.append(pixels)
    return images


def evaluate_scales(apply_fn: ApplyFn, name: str, images: list[np.ndarray], scales, show_progress=True) -> list[dict]:
    """One row (see `evaluate_images`, plus `dataset`: `name`) per scale, under one progress bar."""
    with tqdm(total=len(images) * len(scales), desc=name, unit="image", disable=None if show_progress else True,
              file=sys.stderr) as bar:
        return [{"dataset": name, **evaluate_images(apply_fn, images, scale, bar)} for scale in scales]


def evaluate_dataset(apply_fn: ApplyFn, directory, scales, show_progress=True) -> list[dict]:
    """`evaluate_scales` for the images of a benchmark folder, named after the folder."""
    return evaluate_scales(apply_fn, Path(directory).name, load_dataset(directory, scales), scales, show_progress)


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| dataset | scale | images | bicubic PSNR | bicubic SSIM | VDSR PSNR | VDSR SSIM | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | ×{r['scale']} | {r['images']} | {r['bicubic_psnr']:.2f} | {r['bicubic_ssim']:.4f}"
            f" | {r['vdsr_psnr']:.2f} | {r['vdsr_ssim']:.4f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def parse_scales(text: str) -> list[int]:
    """'2,3,4' -> [2, 3, 4]; CliError for anything but distinct integers from 2 to MAX_SCALE."""
    try:
        scales = [int(part) for part in text.split(",")]
    except ValueError:
        raise CliError(f"--scales must be comma-separated integers such as 2,3,4, got {text!r}") from None
    bad = [s for s in scales if not 2 <= s <= MAX_SCALE]
    if bad:
        raise CliError(f"--scales must lie from 2 to {MAX_SCALE}, got {bad[0]}")
    return list(dict.fromkeys(scales))


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m vdsr_jax.evaluate", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (from convert or train)")
    parser.add_argument("--data-dir", required=True, action="append", help="folder of HR images; repeatable")
    parser.add_argument("--scales", default="2,3,4", help="comma-separated integer scales (2,3,4)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    scales = parse_scales(args.scales)
    if args.json is not None and not args.json.parent.is_dir():
        raise CliError(f"cannot write {args.json}: folder {args.json.parent} does not exist")
    datasets = [(Path(d).name, load_dataset(d, scales)) for d in args.data_dir]  # all fail before any work
    model, params = load_model(args.checkpoint)
    net = TiledVDSR(model, params)
    rows = [row for name, images in datasets for row in evaluate_scales(net, name, images, scales)]
    if args.json is not None:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"checkpoint": str(args.checkpoint), "results": rows}, indent=2) + "\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
