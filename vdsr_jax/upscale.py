"""Upscale image files with VDSR.

    python -m vdsr_jax.upscale INPUT... --checkpoint DIR --scale S -o OUT [--compare] [--tile N]

INPUT: image files (PNG, JPEG, BMP, TIFF, WebP) or folders of them (not recursive). With one input file, OUT
may be a file name with an image suffix (its format is used); otherwise OUT is a folder, created if needed,
that receives `<name>_x<S><suffix>` in the input's format. `--compare` writes `<output name>_compare.png`
beside each output: bicubic | VDSR, labelled.

Colour images go through VDSR on their Y channel (MATLAB YCbCr) with bicubic Cb and Cr; grey images as
their own Y; alpha is resized bicubic. S may be any number from 1 to 16: the network input is MATLAB's
bicubic upscale of Y to ceil(S·size). 16-bit images stay 16-bit in PNG and TIFF (JPEG, BMP and WebP hold
8 bits); JPEG and BMP outputs cannot hold alpha. EXIF orientation is applied; metadata is not copied. Large
images run in tiles (see `vdsr_jax.inference`), so memory follows the tile size. Files are written under a
temporary name and renamed when complete. A file that fails is reported at the end, the others are still
written, and the exit status is then 1.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vdsr_jax.checkpoint import load_model
from vdsr_jax.cli import (
    IMAGE_SUFFIXES,
    ArgumentParser,
    CliError,
    image_files,
    output_format,
    quantize,
    read_image,
    run,
    side_by_side,
    split_alpha,
    write_image,
)
from vdsr_jax.image import resize_matrix, rgb2ycbcr, ycbcr2rgb
from vdsr_jax.inference import DEFAULT_TILE, TiledVDSR, core_in_window

MAX_SCALE = 16
MIN_SIDE = 2


def parse_scale(text: str) -> float:
    """argparse type: a finite number in [1, MAX_SCALE]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a number, got {text!r}") from None
    if not 1 <= value <= MAX_SCALE:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"scale must be from 1 to {MAX_SCALE}, got {text}")
    return value


class BicubicWindows:
    """MATLAB bicubic upscaling of an image by `scale`, computed for one output window at a time.

    Each row of `imresize`'s weight matrix has its few non-zero weights in a narrow band of columns; only
    those bands are kept, so memory and time per window follow the window's size, not the image's.
    """

    def __init__(self, height: int, width: int, scale: float):
        self.out_shape = tuple(math.ceil(scale * n) for n in (height, width))  # imresize's output size
        # uncached (__wrapped__): the dense matrices are dropped once banded, not kept for the whole batch
        banded = {n: _banded(resize_matrix.__wrapped__(n, math.ceil(scale * n), scale)) for n in {height, width}}
        self.axes = [banded[height], banded[width]]

    def __call__(self, channels_of, window: tuple[slice, slice]) -> np.ndarray:
        """Upscaled `channels_of(input rows, input columns)` over `window` of the output; rows first, as
        imresize does for equal scales."""
        (rows, row_weights), (cols, col_weights) = (
            _window_weights(*axis, span) for axis, span in zip(self.axes, window)
        )
        upscaled = np.tensordot(row_weights, channels_of(rows, cols), axes=([1], [0]))
        return np.moveaxis(np.tensordot(col_weights, upscaled, axes=([1], [1])), 0, 1)


def _banded(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, weights): row i of `matrix` is zero outside columns first[i] : first[i] + weights.shape[1]."""
    nonzero = matrix != 0
    last = matrix.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
    width = int((last - nonzero.argmax(axis=1)).max()) + 1
    first = np.minimum(nonzero.argmax(axis=1), matrix.shape[1] - width)
    columns = first[:, None] + np.arange(width)
    return first, np.take_along_axis(matrix, columns, axis=1)


def _window_weights(first: np.ndarray, weights: np.ndarray, span: slice) -> tuple[slice, np.ndarray]:
    """(input span, dense weights) of the output rows `span` of a banded matrix."""
    first, weights = first[span], weights[span]
    lo, hi = int(first.min()), int(first.max()) + weights.shape[1]
    dense = np.zeros((len(first), hi - lo))
    dense[np.arange(len(first))[:, None], first[:, None] - lo + np.arange(weights.shape[1])] = weights
    return slice(lo, hi), dense


def ycbcr_alpha(pixels: np.ndarray):
    """channels_of for BicubicWindows: a region of `pixels` as float64 Y, Cb, Cr (and alpha)."""

    def channels_of(rows: slice, cols: slice) -> np.ndarray:
        colour, alpha = split_alpha(pixels[rows, cols])
        ycbcr = rgb2ycbcr(colour)
        return ycbcr if alpha is None else np.concatenate([ycbcr, alpha[..., None]], axis=-1)

    return channels_of


def to_pixels(ycbcr_alpha: np.ndarray, channels: int, dtype) -> np.ndarray:
    """Back from float Y, Cb, Cr (and alpha) to `channels` integer samples (grey takes R: R = G = B)."""
    rgb = ycbcr2rgb(ycbcr_alpha[..., :3])
    colour = rgb[..., :1] if channels in (1, 2) else rgb
    values = colour if channels in (1, 3) else np.concatenate([colour, ycbcr_alpha[..., 3:]], axis=-1)
    return quantize(values, dtype)


def upscale_pixels(pixels: np.ndarray, scale: float, net: TiledVDSR, bicubic: bool = False, progress=None):
    """(VDSR output, bicubic output or None) for H×W×C uint8/uint16 pixels, same dtype and channels."""
    height, width, channels = pixels.shape
    if min(height, width) < MIN_SIDE:
        raise CliError(f"image is {width}×{height} pixels; at least {MIN_SIDE}×{MIN_SIDE} needed")
    windows = BicubicWindows(height, width, scale)
    channels_of = ycbcr_alpha(pixels)
    out = np.empty((*windows.out_shape, channels), pixels.dtype)
    plain = np.empty_like(out) if bicubic else None
    padded = net.padded_shape(*windows.out_shape)
    tiles = net.grid(*windows.out_shape)
    if progress is not None:
        progress.reset(total=len(tiles))
    for tile in tiles:
        upscaled = windows(channels_of, tile.window)
        refined = upscaled.copy()
        refined[..., 0] = net.window(upscaled[..., 0], padded)
        core = core_in_window(tile)
        out[tile.core] = to_pixels(refined[core], channels, pixels.dtype)
        if plain is not None:
            plain[tile.core] = to_pixels(upscaled[core], channels, pixels.dtype)
        if progress is not None:
            progress.update(1)
    return out, plain


def scale_label(scale: float) -> str:
    return f"x{scale:g}"


def output_paths(inputs: list[str], files: list[Path], output: Path, scale: float) -> list[tuple[Path, Path]]:
    """(input, output) pairs; see the module docstring for the naming. Creates the output folder."""
    single_file = len(inputs) == 1 and len(files) == 1 and not Path(inputs[0]).is_dir()
    if output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir():
        if not single_file:
            raise CliError(f"-o {output} names a file, but there are {len(files)} inputs; give a folder")
        output_format(output)
        if not output.parent.is_dir():
            raise CliError(f"cannot write {output}: folder {output.parent} does not exist")
        pairs = [(files[0], output)]
    else:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create output folder {output}: {e.strerror or e}") from None
        pairs = [(f, output / f"{f.stem}_{scale_label(scale)}{f.suffix}") for f in files]
    seen = {}
    for source, target in pairs:
        if target.resolve() == source.resolve():
            raise CliError(f"{target} would overwrite its input")
        if target in seen:
            raise CliError(f"{seen[target]} and {source} would both be written to {target}")
        seen[target] = source
    return pairs


def compare_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_compare.png")


def upscale_file(source: Path, target: Path, scale: float, net: TiledVDSR, compare: bool, tiles_bar) -> None:
    """Read, upscale and write one image (and its comparison); CliError naming the file on failure."""
    pixels = read_image(source)
    output_format(target)
    try:
        out, plain = upscale_pixels(pixels, scale, net, bicubic=compare, progress=tiles_bar)
    except CliError as e:
        raise CliError(f"{source}: {e}") from None
    write_image(target, out)
    if compare:
        write_image(compare_path(target), side_by_side(plain, out, ("bicubic", f"VDSR {scale_label(scale)}")))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m vdsr_jax.upscale", description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (from convert or train)")
    parser.add_argument("--scale", required=True, type=parse_scale, help=f"upscaling factor, 1 to {MAX_SCALE}")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder, or output file when there is one input file")
    parser.add_argument("--compare", action="store_true", help="also write a bicubic | VDSR comparison PNG")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size in pixels ({DEFAULT_TILE})")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    files = image_files(args.inputs)
    model, params = load_model(args.checkpoint)
    try:
        net = TiledVDSR(model, params, tile=args.tile)
    except ValueError as e:
        raise CliError(str(e)) from None
    pairs = output_paths(args.inputs, files, args.output, args.scale)
    failures = []
    with tqdm(pairs, desc="files", unit="file", disable=None) as files_bar:
        for source, target in files_bar:
            with tqdm(desc=source.name, unit="tile", leave=False, disable=None) as tiles_bar:
                try:
                    upscale_file(source, target, args.scale, net, args.compare, tiles_bar)
                except CliError as e:
                    failures.append(str(e))
                except Exception as e:  # noqa: BLE001 - one broken file must not stop the batch
                    failures.append(f"{source}: {type(e).__name__}: {e}")
                else:
                    tqdm.write(str(target), file=sys.stdout)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    if failures and len(pairs) > 1:
        print(f"error: {len(failures)} of {len(pairs)} images failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(main))
